"""Training the ColBERT encoder on jaxzoo's runtime: one run config, the shared verbs, sharded and resumable.

    enc = Encoder.from_pretrained(path)
    run_cfg = RunConfig(model=enc.config, nway=2, steps=1000, batch_size=32)
    batch_fn = lambda step: make_batch(enc.tokenizer, queries(step), candidates(step), teacher(step))
    mesh = jaxzoo.make_mesh({"data": -1, "model": 2})
    state, history = train(run_cfg, batch_fn, params=enc.colbert_params, mesh=mesh, workdir="runs/colbert")
    enc = enc.with_colbert_params(state.params)

or, step by step: `plan = init_state(run_cfg, rng, params=..., mesh=mesh)`, `step = make_train_step(run_cfg,
mesh=mesh, state_sharding=plan.shardings)`, `jaxzoo.fit(plan.state, step, batch_fn, ..., config=run_cfg)`.
`jaxzoo.rebuild(workdir)` brings a run back from its folder (config.json + latest checkpoint).

ColBERTv2's recipe (README, `colbert/training`): AdamW lr 1e-5 (eps 1e-8, torch's weight decay 0.01 on every
parameter), linear warm-up then linear decay to 0 (`get_linear_schedule_with_warmup`), gradients clipped to
norm 2, bsize 32, nway 64, in-batch negatives, distillation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

import jaxzoo
from colbert.bert import ColBERT, ColBERTConfig
from colbert.flops import flops_per_example
from colbert.losses import colbert_loss
from colbert.tokenize import ColBERTTokenizer
from jaxzoo.sharding import DEFAULT_RULES, Rules

COLBERT_OPTIMIZER = jaxzoo.OptimizerConfig(
    algorithm="adamw",
    learning_rate=1e-5,
    eps=1e-8,
    weight_decay=0.01,
    decay_on="all",
    schedule="linear",
    warmup_fraction=0.05,
    end_lr_ratio=0.0,
    grad_clip=2.0,
)


@dataclasses.dataclass(frozen=True)
class RunConfig(jaxzoo.Config):
    """A ColBERT training run: model, optimizer, batch layout and loss. `recipe()` rebuilds it from a folder."""

    model: ColBERTConfig = ColBERTConfig()  # the encoder (backbone, head, tokenisation lengths)
    optimizer: jaxzoo.OptimizerConfig = COLBERT_OPTIMIZER  # ColBERTv2's AdamW, linear warm-up and decay
    nway: int = 2  # candidates per query (positive first, then hard negatives)
    steps: int = 1000  # optimisation steps (the schedule's length)
    batch_size: int = 32  # queries per step
    seed: int = 0  # initialisation (of params not given) and dropout
    alpha: float = 1.0  # distillation temperature of the teacher scores (ColBERT's distillation_alpha)
    use_ib_negatives: bool = False  # add the in-batch-negative cross-entropy
    dropout: bool = True  # the config's dropout rates are on during training (PyTorch's train mode)

    def __post_init__(self):
        if self.nway < 1:
            raise ValueError(f"nway must be at least 1, got {self.nway}.")
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"RunConfig.{name} must be at least 1, got {getattr(self, name)}.")

    @classmethod
    def tiny(cls, **changes) -> RunConfig:
        """`ColBERTConfig.tiny()`, 4 queries x 2 candidates, 4 steps at lr 1e-3 (tests and smoke runs)."""
        opt = dataclasses.replace(COLBERT_OPTIMIZER, learning_rate=1e-3, warmup_steps=1)
        return cls(
            **{
                "model": ColBERTConfig.tiny(),
                "optimizer": opt,
                "nway": 2,
                "steps": 4,
                "batch_size": 4,
                **changes,
            }
        )

    def recipe(self) -> jaxzoo.Recipe:
        """The model, its init function (shapes and logical names), the optimizer and the rules."""
        model = ColBERT(self.model)
        length = min(8, self.model.bert.max_position_embeddings)
        ids = jnp.zeros((1, length), jnp.int32)
        return jaxzoo.Recipe(model, jaxzoo.module_init(model, ids, jnp.ones_like(ids)), make_optimizer(self))


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
    """`loss_fn(params, batch, rng) -> (loss, metrics)` for `jaxzoo.make_train_step`.

    params is the `ColBERT` tree {"bert": ..., "linear": ...}; dropout (the config's rates) is on when
    `dropout`, as in PyTorch's train mode. The batch is the dict of `make_batch`; query positions are all
    scored (ColBERT's query augmentation).
    """
    if nway < 1:
        raise ValueError(f"nway must be at least 1, got {nway}.")
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


def make_optimizer(run_cfg: RunConfig) -> optax.GradientTransformation:
    """`jaxzoo.make_optimizer(run_cfg.optimizer, run_cfg.steps)`."""
    return jaxzoo.make_optimizer(run_cfg.optimizer, run_cfg.steps)


def init_state(
    run_cfg: RunConfig,
    rng: jax.Array,
    *,
    params=None,
    mesh: Mesh | None = None,
    workdir=None,
    zero1: bool = False,
    allow_config_change: bool = False,
) -> jaxzoo.StatePlan:
    """The run's `TrainState` planned by `jaxzoo.plan_state`: sharded by logical names on `mesh` (Adam's
    moments like their parameters; with `zero1` also over "data"), restored from `workdir` when it holds a
    checkpoint, else started from `params` (the `ColBERT` tree, e.g. `Encoder.colbert_params`) or a random
    initialisation from `rng`."""
    recipe = run_cfg.recipe()
    return jaxzoo.plan_state(
        recipe.init_fn,
        recipe.tx,
        rng,
        mesh=mesh,
        rules=recipe.rules,
        params=params,
        workdir=workdir,
        config=run_cfg,
        allow_config_change=allow_config_change,
        zero1=zero1,
    )


def make_train_step(
    run_cfg: RunConfig, *, mesh: Mesh | None = None, state_sharding=None, donate: bool = True
):
    """`jaxzoo.make_train_step` of the ColBERT loss (`make_loss_fn`) and `make_optimizer(run_cfg)`.

    On a mesh the batch's leading axes are split over "data": B and B * nway must divide by its size.
    """
    cfg = run_cfg
    loss_fn = make_loss_fn(
        cfg.model, nway=cfg.nway, alpha=cfg.alpha, use_ib_negatives=cfg.use_ib_negatives, dropout=cfg.dropout
    )
    return jaxzoo.make_train_step(
        loss_fn, make_optimizer(cfg), mesh=mesh, state_sharding=state_sharding, donate=donate
    )


def train(
    run_cfg: RunConfig,
    batches,
    *,
    params=None,
    mesh: Mesh | None = None,
    workdir=None,
    zero1: bool = False,
    log_every: int = 10,
    checkpoint_every: int = 0,
    progress: bool = True,
):
    """One call: `init_state` + `make_train_step` + `jaxzoo.fit` for `run_cfg.steps` steps.

    batches: `step -> batch` (the dict of `make_batch`) or an iterable of them. Returns (state, history);
    `state.params` is the `ColBERT` tree (`Encoder.with_colbert_params` takes it).
    """
    init_rng, step_rng = jax.random.split(jax.random.key(run_cfg.seed))
    plan = init_state(run_cfg, init_rng, params=params, mesh=mesh, workdir=workdir, zero1=zero1)
    step = make_train_step(run_cfg, mesh=mesh, state_sharding=plan.shardings)
    return jaxzoo.fit(
        plan.state,
        step,
        batches,
        num_steps=run_cfg.steps,
        rng=step_rng,
        workdir=workdir,
        config=run_cfg,
        log_every=log_every,
        checkpoint_every=checkpoint_every,
        examples_per_step=run_cfg.batch_size,
        flops_per_step=run_cfg.batch_size * flops_per_example(run_cfg),
        desc="colbert",
        progress=progress,
    )
