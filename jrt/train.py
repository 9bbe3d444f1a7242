"""Training JRT / Based on the jaxzoo runtime: one run config, its optimizer, state, step and loop.

Reference recipe (the defaults of `RunConfig`): AdamW lr 8e-4, betas (0.9, 0.95), weight decay 0.1 (none
on the embedding, which is also the tied LM head, nor on biases; see `decay_mask` for norm scales), linear warm-up (1% of the run: 600 of 60k steps) then cosine decay to 10% of
the peak (8e-5), gradient clipping at global norm 1.0. For bf16 compute set
`JRTConfig(precision=jaxzoo.Precision.bf16())`; parameters, residual stream and sums stay float32.

::

    model = jrt.JRTConfig.synthetic(64, seq_len=64, context_len=16)  # MQAR, 8 pairs: the context is 16 tokens
    run = jrt.RunConfig.synthetic(model, steps=300)
    data = jrt.mqar(4096, seq_len=64, num_kv_pairs=8, vocab_size=64, random_non_queries=False)
    state, history = jrt.train(run, data, workdir="runs/a")
    again = jaxzoo.rebuild("runs/a")  # config, model and state back from the folder
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import numpy as np
import optax

import jaxzoo
from jrt.config import JRTConfig
from jrt.data import batch_iterator
from jrt.flops import flops_per_example
from jrt.losses import check_batch, eval_metrics, make_loss_fn
from jrt.model import LM, sample_ids

# The reference's optimizer (train/configs/experiment/baselines of the JRT release).
REFERENCE_OPTIMIZER = jaxzoo.OptimizerConfig(
    algorithm="adamw",
    learning_rate=8e-4,
    b1=0.9,
    b2=0.95,
    weight_decay=0.1,
    schedule="cosine",
    end_lr_ratio=0.1,
    grad_clip=1.0,
)


@dataclasses.dataclass(frozen=True)
class RunConfig(jaxzoo.Config):
    """A JRT / Based training run; the defaults are the reference's JRT-360M run (60k steps).

    `recipe()` builds the model, init function and optimizer, so `jaxzoo.rebuild(workdir)` can bring a run
    back from its folder.
    """

    model: JRTConfig = JRTConfig()  # the language model
    optimizer: jaxzoo.OptimizerConfig = REFERENCE_OPTIMIZER  # AdamW recipe; warm-up derived unless given
    steps: int = 60000  # optimizer steps of the run (the learning-rate schedule spans them)
    batch_size: int = 32  # sequences per optimizer step (global, split over the "data" mesh axis)
    seed: int = 0  # parameters from key(seed); batches shuffled by seed
    decay_norm_scales: bool = False  # True: decay RMSNorm scales as the reference does by accident

    def __post_init__(self):
        if not isinstance(self.model, JRTConfig):
            raise ValueError(f"RunConfig.model must be a JRTConfig, but got {type(self.model).__name__}.")
        if not isinstance(self.optimizer, jaxzoo.OptimizerConfig):
            raise ValueError(
                f"RunConfig.optimizer must be a jaxzoo.OptimizerConfig, but got {type(self.optimizer).__name__}."
            )
        if self.steps < 1:
            raise ValueError(f"steps must be positive, but got {self.steps}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, but got {self.batch_size}.")
        warm = self.optimizer.warmup(self.steps)
        if warm > self.steps:
            raise ValueError(f"warmup_steps must be in [0, steps={self.steps}], but got {warm}.")

    @classmethod
    def synthetic(cls, model: JRTConfig, steps: int = 300, batch_size: int = 32, lr: float = 1e-2, **kw):
        """The small-task run of `JRTConfig.synthetic`: the reference AdamW at lr 1e-2, 10% warm-up,
        cosine decay to 0 (the reference's lr 8e-4 with 1% warm-up and a 10% floor is for 30B tokens)."""
        opt = REFERENCE_OPTIMIZER.replace(learning_rate=lr, warmup_fraction=0.1, end_lr_ratio=0.0)
        return cls(**{"model": model, "optimizer": opt, "steps": steps, "batch_size": batch_size, **kw})

    def recipe(self) -> jaxzoo.Recipe:
        """The model `LM(config=model)`, its init function (boxed params) and the optimizer."""
        model = LM(config=self.model)
        return jaxzoo.Recipe(model, jaxzoo.module_init(model, sample_ids(self.model)), make_optimizer(self))


def decay_mask(params, *, norm_scales: bool = False):
    """True for weights that get weight decay: every kernel (linear layers, the untied LM head, BaseConv's
    depthwise conv kernel) but not the embedding (which is also the tied LM head), biases or, unless
    `norm_scales`, RMSNorm scales.

    The reference (`train/src/optim/param_grouping.py`, `group_parameters_for_optimizer`) means to spare
    embeddings, biases and normalisation weights, but its blacklist lists torch's norm classes and the
    model uses flash-attn's RMSNorm, which is not among them, so the scales fall into the "decay" rest:
    `norm_scales=True` (`RunConfig.decay_norm_scales`) reproduces that; the default follows the intent.
    (Not jaxzoo's "matrices" rule: BaseConv's in_proj bias is 2-D, [2, inner], and must not decay; the
    conv kernel is 2-D and decays, as an nn.Conv1d weight does in the reference.)
    """
    spared = ("bias", "embedding") + (() if norm_scales else ("scale",))

    def decays(path, _):
        names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]  # skips logical boxes
        return names[-1] not in spared

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(run: RunConfig) -> optax.GradientTransformation:
    """`run.optimizer` over `run.steps` steps, with jrt's weight-decay mask (`decay_mask`)."""
    return jaxzoo.make_optimizer(
        run.optimizer, run.steps, mask=functools.partial(decay_mask, norm_scales=run.decay_norm_scales)
    )


def init_state(
    run: RunConfig,
    rng: jax.Array | None = None,
    *,
    mesh=None,
    workdir=None,
    zero1: bool = False,
    params: Any = None,
    rules=jaxzoo.DEFAULT_RULES,
    allow_config_change: bool = False,
) -> jaxzoo.StatePlan:
    """The train state of `run` (`jaxzoo.plan_state`): parameters and AdamW moments created sharded on
    `mesh`, restored from `workdir` when it holds a checkpoint. rng defaults to key(run.seed); `params`
    starts from given weights."""
    recipe = run.recipe()
    return jaxzoo.plan_state(
        recipe.init_fn,
        recipe.tx,
        jax.random.key(run.seed) if rng is None else rng,
        mesh=mesh,
        rules=rules,
        params=params,
        workdir=workdir,
        config=run,
        allow_config_change=allow_config_change,
        zero1=zero1,
    )


def make_train_step(run: RunConfig, *, mesh=None, state_sharding=None, donate: bool = True):
    """Jitted `step(state, batch, rng) -> (state, metrics)`: JRT/Based loss, AdamW, clipping."""
    return jaxzoo.make_train_step(
        make_loss_fn(run.model), make_optimizer(run), mesh=mesh, state_sharding=state_sharding, donate=donate
    )


def train(
    run: RunConfig,
    data: Mapping[str, np.ndarray] | Callable[[int], Any] | Iterable[Any],
    *,
    mesh=None,
    workdir=None,
    rng: jax.Array | None = None,
    num_steps: int | None = None,
    zero1: bool = False,
    log_every: int = 10,
    eval_fn: Callable[[jaxzoo.TrainState], Mapping[str, Any]] | None = None,
    eval_every: int = 0,
    checkpoint_every: int = 0,
    progress: bool = True,
    desc: str = "jrt",
    seq_len: int | None = None,
) -> tuple[jaxzoo.TrainState, list[dict]]:
    """Train `run` in one call; returns `(state, history)` (one history record per logged step).

    data: a data set dict of arrays [N, L] (batches of `run.batch_size` drawn by `jrt.batch_iterator`
      with `run.seed`), a `step -> batch` function, or an iterable of batches.
    mesh: shard parameters/optimizer by logical names and the batch over "data".
    workdir: checkpoints and metrics; an existing run there is resumed (its config must equal `run`).
    rng: key of the training steps (MLM masks); default fold_in(key(run.seed), 1).
    num_steps: stop at this step instead of `run.steps` (the schedule still spans `run.steps`).
    seq_len: tokens per sequence for the FLOP count passed to `jaxzoo.fit` (`flops_per_step = batch_size
      * jrt.flops_per_example(run.model, seq_len)`); default: the data set's length, else `model.max_len`.
    """
    plan = init_state(run, mesh=mesh, workdir=workdir, zero1=zero1)
    step = make_train_step(run, mesh=mesh, state_sharding=plan.shardings)
    if seq_len is None:
        seq_len = np.shape(data["input_ids"])[1] if isinstance(data, Mapping) else run.model.max_len
    batches = batch_iterator(data, run.batch_size, seed=run.seed) if isinstance(data, Mapping) else data
    batches = _checked(batches, run.model)
    if mesh is not None:
        batches = _sharded(batches, mesh)
    return jaxzoo.fit(
        plan.state,
        step,
        batches,
        num_steps=run.steps if num_steps is None else num_steps,
        rng=jax.random.fold_in(jax.random.key(run.seed), 1) if rng is None else rng,
        workdir=workdir,
        config=run,
        log_every=log_every,
        eval_fn=eval_fn,
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
        progress=progress,
        desc=desc,
        examples_per_step=run.batch_size,
        flops_per_step=run.batch_size * flops_per_example(run.model, seq_len),
    )


def evaluate(params, data: Mapping[str, np.ndarray], cfg: JRTConfig, *, batch_size: int = 32, mesh=None):
    """`eval_metrics` over a whole data set, in batches: {"loss", "accuracy", "example_accuracy"}.

    Batches are equal-sized (the last partial batch is dropped; at least one batch is used), and the
    metrics are means over them (`jaxzoo.evaluate`). With `mesh`, each batch is split over "data"; in a
    multi-process run pass each process's own rows (every process the same number) and `batch_size` per
    process: all processes get the metrics of the whole set.
    """
    n = len(next(iter(data.values())))
    if n == 0:
        raise ValueError("evaluate needs at least one example, but the data set is empty.")
    size = min(batch_size, n)

    def batches():
        for i in range(0, n - size + 1, size):
            batch = {k: v[i : i + size] for k, v in data.items()}
            check_batch(cfg, batch, training=False)
            yield batch

    return jaxzoo.evaluate(_eval_fn(cfg), params, batches(), mesh=mesh)


def _checked(batches, cfg: JRTConfig):
    """The batches with `check_batch` run on each one on the host (inside the jitted step it cannot see
    values: a label >= vocab would give NaN there)."""

    def check(batch):
        check_batch(cfg, batch)
        return batch

    if callable(batches):
        return lambda s: check(batches(s))
    return (check(b) for b in batches)


def _sharded(batches, mesh):
    """The batches (a step -> batch function or an iterable) split over the "data" axis of `mesh`."""
    if callable(batches):
        return lambda s: jaxzoo.shard_batch(batches(s), mesh)
    return (jaxzoo.shard_batch(b, mesh) for b in batches)


@functools.cache
def _eval_fn(cfg: JRTConfig):
    return jax.jit(lambda p, b: eval_metrics(p, b, cfg))
