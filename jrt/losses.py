"""JRT's training objective (next-token + MLM on the prefix) and Based's next-token loss, pure and jittable.

batch = {"input_ids": [B, L] int32, "labels": [B, L] int32, optional "mask": [B, L] bool}; labels[:, i]
is the target of position i (already shifted), -100 = ignore. With M = cfg.prefix_len (encoder_len for
JRT, 0 for Based):

  loss = mean CE over labelled positions i >= M  +  mlm_weight * mean CE over MLM-masked positions i < M

where i counts a row's real tokens (a left-padded row's first real token is i = 0), so a row scores the
same in a ragged batch as alone.

The two means are taken separately, as in the reference (`SequenceLMModel.step`). MLM: each real prefix
token is replaced by [MASK] with probability mlm_prob (drawn from rng inside the loss) and its target is
the original token at the same position. The reference also drops labels equal to 0 (`label > 0`); we
keep them: token 0 is a real token in synthetic tasks (decision: report it).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jrt.config import JRTConfig
from jrt.model import LM, check_mask, check_token_ids

IGNORE = -100


def check_batch(cfg: JRTConfig, batch, *, training: bool = True) -> None:
    """ValueError for a batch the loss cannot score: missing keys, shapes, float labels, and (on concrete
    arrays; `jrt.train` checks every batch on the host) labels outside {-100} U [0, vocab), a mask that is
    not left padding or has an all-padding row, and (training) the [MASK] id in the inputs while MLM is on."""
    for key in ("input_ids", "labels"):
        if key not in batch:
            raise ValueError(f"The batch needs '{key}' [B, L]; it has keys {sorted(batch)}.")
    ids, labels = batch["input_ids"], batch["labels"]
    if ids.ndim != 2 or tuple(labels.shape) != tuple(ids.shape):
        raise ValueError(
            f"input_ids and labels must both be [B, L] with the same shape, but got {tuple(ids.shape)} "
            f"and {tuple(labels.shape)}."
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be integer token ids (or {IGNORE}), but got dtype {labels.dtype}.")
    if batch.get("mask") is not None:
        check_mask(batch["mask"], ids.shape, "batch['mask']")
    if isinstance(labels, jax.core.Tracer) or isinstance(ids, jax.core.Tracer):
        return
    lab = np.asarray(labels)
    bad = (lab != IGNORE) & ((lab < 0) | (lab >= cfg.vocab_size))
    if bad.any():
        raise ValueError(
            f"labels must be token ids in [0, {cfg.vocab_size}) or the ignore index {IGNORE}, but got "
            f"{int(lab[bad][0])}."
        )
    check_token_ids(ids, cfg.vocab_size)
    if training and _uses_mlm(cfg) and (np.asarray(ids) == cfg.mask_id).any():
        raise ValueError(
            f"input_ids contain the [MASK] id {cfg.mask_id} (mask_token_id) while the MLM loss is on, so "
            "masked and real tokens would be indistinguishable; reserve an id the data never uses (e.g. "
            "JRTConfig.synthetic adds one to the task vocabulary) or set mlm_prob=0."
        )


def token_ranks(mask, shape):
    """[B, L] int: each token's index among its row's real tokens (the position itself without a mask)."""
    if mask is None:
        return jnp.broadcast_to(jnp.arange(shape[1])[None, :], shape)
    return jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1


def cross_entropy(logits, targets, weights, *, lse=None):
    """(sum of weighted CE, sum of weights): logits [..., V] float32, targets [...] int, weights [...].

    CE = logsumexp(logits) - logits[target]; pass `lse` (logsumexp over V) to score a second set of
    targets without another pass over the vocabulary (JRT's NTP and MLM share it)."""
    logits = logits.astype(jnp.float32)
    if lse is None:
        lse = jax.nn.logsumexp(logits, axis=-1)
    safe = jnp.where(targets < 0, 0, targets)
    nll = lse - jnp.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
    weights = weights.astype(jnp.float32)
    return jnp.sum(nll * weights), jnp.sum(weights)


def mlm_mask(rng, cfg: JRTConfig, shape, mask=None):
    """[B, L] bool: each row's first M real tokens, each chosen i.i.d. with probability cfg.mlm_prob."""
    chosen = jax.random.bernoulli(rng, cfg.mlm_prob, shape) & (token_ranks(mask, shape) < cfg.prefix_len)
    return chosen if mask is None else chosen & mask.astype(bool)


def _uses_mlm(cfg: JRTConfig) -> bool:
    return cfg.prefix_len > 0 and cfg.mlm_prob > 0 and cfg.mlm_weight != 0


def loss_fn(params, batch, rng, cfg: JRTConfig):
    """JRT: NTP on positions >= M (counted per row from its first real token) + mlm_weight * MLM on the masked prefix; Based: NTP. Returns (loss, metrics).

    metrics: ntp_loss, mlm_loss, accuracy (NTP, over labelled positions), ntp_tokens, mlm_tokens.
    """
    check_batch(cfg, batch)
    ids, labels = batch["input_ids"], batch["labels"]
    mask = batch.get("mask")
    m = cfg.prefix_len
    pos = token_ranks(mask, ids.shape)  # a ragged row's positions count from its first real token
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
    lse = jax.nn.logsumexp(logits, axis=-1)  # [B, L], one pass over the vocabulary for both losses
    ntp_sum, ntp_n = cross_entropy(logits, labels, ntp_w, lse=lse)
    ntp = ntp_sum / jnp.maximum(ntp_n, 1.0)
    mlm_sum, mlm_n = cross_entropy(logits, ids, masked, lse=lse)
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
    check_batch(cfg, batch, training=False)
    ids, labels = batch["input_ids"], batch["labels"]
    mask = batch.get("mask")
    logits = LM(config=cfg).apply({"params": params}, ids, mask)
    w = (labels != IGNORE) & (token_ranks(mask, ids.shape) >= cfg.prefix_len)
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
