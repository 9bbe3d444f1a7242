"""JRT's training objective (next-token + MLM on the prefix) and Based's next-token loss, pure and jittable.

batch = {"input_ids": [B, L] int32, "labels": [B, L] int32, optional "mask": [B, L] bool}; labels[:, i]
is the target of position i (already shifted), -100 = ignore. With M = cfg.prefix_len (encoder_len for
JRT, 0 for Based):

  loss = mean CE over labelled positions i >= M  +  mlm_weight * mean CE over MLM-masked positions i < M

The two means are taken separately, as in the reference (`SequenceLMModel.step`). MLM: each real prefix
token is replaced by [MASK] with probability mlm_prob (drawn from rng inside the loss) and its target is
the original token at the same position. The reference also drops labels equal to 0 (`label > 0`); we
keep them: token 0 is a real token in synthetic tasks (decision: report it).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jrt.config import JRTConfig
from jrt.model import LM

IGNORE = -100


def _check_batch(cfg: JRTConfig, batch) -> None:
    for key in ("input_ids", "labels"):
        if key not in batch:
            raise ValueError(f"The batch needs '{key}' [B, L]; it has keys {sorted(batch)}.")
    ids, labels = batch["input_ids"], batch["labels"]
    if ids.ndim != 2 or tuple(labels.shape) != tuple(ids.shape):
        raise ValueError(
            f"input_ids and labels must both be [B, L] with the same shape, but got {tuple(ids.shape)} "
            f"and {tuple(labels.shape)}."
        )


def cross_entropy(logits, targets, weights):
    """(sum of weighted CE, sum of weights): logits [..., V] float32, targets [...] int, weights [...]."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    safe = jnp.where(targets < 0, 0, targets)
    nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    weights = weights.astype(jnp.float32)
    return jnp.sum(nll * weights), jnp.sum(weights)


def mlm_mask(rng, cfg: JRTConfig, shape, mask=None):
    """[B, L] bool: real positions < M, each chosen i.i.d. with probability cfg.mlm_prob."""
    pos = jnp.arange(shape[1])[None, :]
    chosen = jax.random.bernoulli(rng, cfg.mlm_prob, shape) & (pos < cfg.prefix_len)
    return chosen if mask is None else chosen & mask.astype(bool)


def _uses_mlm(cfg: JRTConfig) -> bool:
    return cfg.prefix_len > 0 and cfg.mlm_prob > 0 and cfg.mlm_weight != 0


def loss_fn(params, batch, rng, cfg: JRTConfig):
    """JRT: NTP on positions >= M + mlm_weight * MLM on the masked prefix; Based: NTP. Returns (loss, metrics).

    metrics: ntp_loss, mlm_loss, accuracy (NTP, over labelled positions), ntp_tokens, mlm_tokens.
    """
    _check_batch(cfg, batch)
    ids, labels = batch["input_ids"], batch["labels"]
    mask = batch.get("mask")
    m = cfg.prefix_len
    pos = jnp.arange(ids.shape[1])[None, :]
    if _uses_mlm(cfg):
        masked = mlm_mask(rng, cfg, ids.shape, mask)
        inputs = jnp.where(masked, cfg.mask_id, ids)
    else:
        masked = jnp.zeros(ids.shape, bool)
        inputs = ids
    logits = LM(config=cfg).apply({"params": params}, inputs, mask)  # [B, L, V] float32

    ntp_w = (labels != IGNORE) & (pos >= m)
    if mask is not None:
        ntp_w = ntp_w & mask.astype(bool)
    ntp_sum, ntp_n = cross_entropy(logits, labels, ntp_w)
    ntp = ntp_sum / jnp.maximum(ntp_n, 1.0)
    mlm_sum, mlm_n = cross_entropy(logits, ids, masked)
    mlm = mlm_sum / jnp.maximum(mlm_n, 1.0)
    loss = ntp + cfg.mlm_weight * mlm if _uses_mlm(cfg) else ntp

    correct = (jnp.argmax(logits, -1) == labels) & ntp_w
    metrics = {
        "ntp_loss": ntp,
        "mlm_loss": mlm,
        "accuracy": jnp.sum(correct) / jnp.maximum(ntp_n, 1.0),
        "ntp_tokens": ntp_n,
        "mlm_tokens": mlm_n,
    }
    return loss, metrics


def make_loss_fn(cfg: JRTConfig):
    """`loss_fn(params, batch, rng) -> (loss, metrics)` for `jaxzoo.train.make_train_step`."""
    return functools.partial(loss_fn, cfg=cfg)


def eval_metrics(params, batch, cfg: JRTConfig):
    """Deterministic evaluation (no MLM masking): NTP loss and accuracy on labelled positions >= M.

    `example_accuracy` is zoology's metric: mean accuracy over each example's labelled positions, then
    the mean over examples (examples without labels are skipped).
    """
    _check_batch(cfg, batch)
    ids, labels = batch["input_ids"], batch["labels"]
    mask = batch.get("mask")
    logits = LM(config=cfg).apply({"params": params}, ids, mask)
    w = (labels != IGNORE) & (jnp.arange(ids.shape[1])[None, :] >= cfg.prefix_len)
    if mask is not None:
        w = w & mask.astype(bool)
    s, n = cross_entropy(logits, labels, w)
    correct = ((jnp.argmax(logits, -1) == labels) & w).sum(-1)
    per_n = w.sum(-1)
    has = per_n > 0
    per_example = jnp.where(has, correct / jnp.maximum(per_n, 1), 0.0)
    return {
        "loss": s / jnp.maximum(n, 1.0),
        "accuracy": correct.sum() / jnp.maximum(n, 1.0),
        "example_accuracy": per_example.sum() / jnp.maximum(has.sum(), 1),
    }
