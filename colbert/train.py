"""Training the ColBERT encoder: batches of (query, nway candidates), a sharded jitted step, orbax checkpoints.

    enc = Encoder.from_pretrained(path)
    batch = make_batch(enc.tokenizer, queries, candidates, teacher_scores)   # numpy dict
    mesh = jaxzoo.make_mesh({"data": -1, "model": 2})
    state, step = make_trainer(enc.config, enc.colbert_params, optax.adamw(1e-5), mesh=mesh, nway=2)
    state, history = jaxzoo.fit(state, step, batch_fn, num_steps=..., rng=key, workdir="runs/colbert")
    enc = enc.with_colbert_params(state.params)

ColBERTv2's recipe (README): bsize 32, lr 1e-5, warmup 20k, nway 64, in-batch negatives, distillation.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from colbert.bert import ColBERT, ColBERTConfig
from colbert.losses import colbert_loss
from colbert.tokenize import ColBERTTokenizer
from jaxzoo.sharding import DEFAULT_RULES, Rules, logical_shardings
from jaxzoo.train import TrainState, make_train_step


def make_batch(
    tokenizer: ColBERTTokenizer,
    queries: Sequence[str],
    candidates: Sequence[Sequence[str]],
    teacher_scores=None,
    *,
    doc_len: int | None = None,
) -> dict[str, np.ndarray]:
    """Tokenise a training batch.

    queries: B strings. candidates: B lists of nway documents, positive first. teacher_scores: [B, nway]
    or None. doc_len pads every document to this many tokens (default doc_maxlen, so every batch has one
    shape and the step compiles once).

    Returns numpy arrays: q_ids, q_attn [B, Lq]; d_ids, d_attn, d_mask [B * nway, doc_len] (query-major);
    and teacher [B, nway] when given.
    """
    if len(queries) != len(candidates):
        raise ValueError(
            f"Got {len(queries)} queries but {len(candidates)} candidate lists; one list per query."
        )
    nways = {len(c) for c in candidates}
    if len(nways) != 1:
        raise ValueError(f"Every query needs the same number of candidates (nway); got {sorted(nways)}.")
    q_ids, q_attn = tokenizer.queries(queries)
    flat = [d for c in candidates for d in c]
    doc_len = tokenizer.config.doc_maxlen if doc_len is None else doc_len
    d_ids, d_attn, d_mask = tokenizer.documents(flat, pad_to=doc_len)
    batch = {"q_ids": q_ids, "q_attn": q_attn, "d_ids": d_ids, "d_attn": d_attn, "d_mask": d_mask}
    if teacher_scores is not None:
        teacher = np.asarray(teacher_scores, np.float32)
        if teacher.shape != (len(queries), nways.pop()):
            raise ValueError(f"teacher_scores must be [B, nway], got shape {teacher.shape}.")
        batch["teacher"] = teacher
    return batch


def make_loss_fn(
    config: ColBERTConfig,
    *,
    nway: int,
    alpha: float = 1.0,
    use_ib_negatives: bool = False,
    dropout: bool = True,
    rules: Rules = DEFAULT_RULES,
):
    """`loss_fn(params, batch, rng) -> (loss, metrics)` for `jaxzoo.train.make_train_step`.

    params is the `ColBERT` tree {"bert": ..., "linear": ...}; dropout (the config's rates) is on when
    `dropout`, as in PyTorch's train mode. The batch is the dict of `make_batch`; query positions are all
    scored (ColBERT's query augmentation).
    """
    module = ColBERT(config)

    def loss_fn(params, batch, rng):
        with nn.logical_axis_rules(rules):
            apply = lambda ids, attn, key: module.apply(
                {"params": params}, ids, attn, deterministic=not dropout, rngs={"dropout": key}
            )
            kq, kd = jax.random.split(rng)
            Q = apply(batch["q_ids"], batch["q_attn"], kq)  # [B, Lq, dim]
            D = apply(batch["d_ids"], batch["d_attn"], kd)  # [B * nway, Ld, dim]
        return colbert_loss(
            Q,
            D,
            None,
            batch["d_mask"].astype(bool),
            nway=nway,
            teacher_scores=batch.get("teacher"),
            alpha=alpha,
            use_ib_negatives=use_ib_negatives,
        )

    return loss_fn


def param_shardings(config: ColBERTConfig, mesh: Mesh, rules: Rules = DEFAULT_RULES):
    """NamedShardings of the `ColBERT` params on `mesh`, from their logical axis names."""
    ids = jnp.zeros((1, 8), jnp.int32)

    def init(key):
        with nn.logical_axis_rules(rules):
            return ColBERT(config).init(key, ids, jnp.ones_like(ids))["params"]

    with jax.set_mesh(mesh):
        abstract = jax.eval_shape(init, jax.random.key(0))
        return logical_shardings(abstract, mesh, rules)


def make_trainer(
    config: ColBERTConfig,
    params: dict,
    tx: optax.GradientTransformation,
    *,
    nway: int,
    mesh: Mesh | None = None,
    rules: Rules = DEFAULT_RULES,
    alpha: float = 1.0,
    use_ib_negatives: bool = False,
    dropout: bool = True,
    donate: bool = True,
):
    """(state, step): a `TrainState` (sharded on `mesh` when given) and the jitted step for `jaxzoo.fit`.

    params: the `ColBERT` tree, e.g. `Encoder.colbert_params`. The batch's leading axes are split over the
    mesh's "data" axis, so B and B * nway must be divisible by its size.
    """
    if nway < 1:
        raise ValueError(f"nway must be at least 1, got {nway}.")
    loss_fn = make_loss_fn(
        config, nway=nway, alpha=alpha, use_ib_negatives=use_ib_negatives, dropout=dropout, rules=rules
    )
    if mesh is None:
        state = TrainState.create(params, tx)
        return state, make_train_step(loss_fn, tx, donate=donate)
    shardings = param_shardings(config, mesh, rules)
    params = jax.device_put(params, shardings)
    state = jax.jit(lambda p: TrainState.create(p, tx))(params)
    return state, make_train_step(loss_fn, tx, mesh=mesh, donate=donate)
