"""Training the MLP that the two-phase example explains, on the shared runtime (jaxzoo).

One run config (``RunConfig``: model, optimizer, steps, batch size, seed) and the verbs every package has::

    run_cfg = interact.RunConfig(model=interact.MLPConfig.digits(), steps=3000)
    state, history = interact.train(run_cfg, (x, y), workdir="runs/digits")   # resumes from the workdir
    source = jaxzoo.data.write_array_shards("data/digits", [{"x": x, "y": y}])  # or: a shard folder once
    state, history = interact.train(run_cfg, source, workdir="runs/digits")   # grain loader, resumable
    interact.evaluate(run_cfg, state.params, x_test, y_test)                   # {"loss", "accuracy"}
    run = jaxzoo.rebuild("runs/digits")                                          # config, model, state

The parameters are ``variables["params"]`` of ``MLP``: call the model as ``model.apply({"params": p}, x)``.
The AND-OR extraction (``extract_and_or``, ``learn_baseline``) has its own loops over interaction arrays in
``andor.py``; nothing here concerns it.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

import jaxzoo
import jaxzoo.data
from interact.model import MLP, MLPConfig

Data = tuple[Any, Any] | Mapping[str, Any] | jaxzoo.data.ShardedArrays
ADAM = jaxzoo.OptimizerConfig(algorithm="adam", learning_rate=1e-3, warmup_steps=0)


@dataclasses.dataclass(frozen=True)
class RunConfig(jaxzoo.Config):
    """A training run of the MLP: softmax cross-entropy on minibatches drawn without replacement."""

    model: MLPConfig = MLPConfig()  # the classifier
    optimizer: jaxzoo.OptimizerConfig = ADAM  # default: the example's plain Adam 1e-3, no warm-up or decay
    steps: int = 3000  # optimisation steps of the whole run
    batch_size: int = 64  # examples per step
    seed: int = 0  # initialisation and minibatch order

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"RunConfig.{name} must be a positive integer; got {getattr(self, name)}.")

    @classmethod
    def tiny(cls) -> RunConfig:
        """The tiny MLP, 10 steps of batch 8: tests and smoke runs."""
        return cls(model=MLPConfig.tiny(), steps=10, batch_size=8)

    @classmethod
    def digits(cls) -> RunConfig:
        """The two-phase example: MLP 64-256-256-10, 3000 Adam steps of batch 64."""
        return cls(model=MLPConfig.digits(), steps=3000, batch_size=64)

    def recipe(self) -> jaxzoo.Recipe:
        """Model, init function, optimizer and rules (what ``jaxzoo.rebuild`` needs)."""
        model = MLP(config=self.model)
        sample = jnp.zeros((1, self.model.num_features), self.model.precision.param)
        return jaxzoo.Recipe(model, jaxzoo.module_init(model, sample), make_optimizer(self))


def make_optimizer(run_cfg: RunConfig) -> optax.GradientTransformation:
    """``run_cfg.optimizer`` over ``run_cfg.steps`` (``jaxzoo.make_optimizer``)."""
    return jaxzoo.make_optimizer(run_cfg.optimizer, run_cfg.steps)


def flops_per_example(config: RunConfig | MLPConfig) -> float:
    """Training FLOPs per example of the MLP: 3 x the forward's matmul FLOPs (forward + backward, whose two
    matmuls per layer cost twice the forward's), a multiply-add counted as 2, so 6 sum_l d_in d_out over the
    dense layers (hidden and head). Biases, ReLUs, the softmax cross-entropy and the optimizer update are
    not counted (O(width) per example against O(width^2))."""
    cfg = config.model if isinstance(config, RunConfig) else config
    if not isinstance(cfg, MLPConfig):
        raise ValueError(
            f"flops_per_example expects a RunConfig or an MLPConfig; got {type(config).__name__}."
        )
    widths = (cfg.num_features, *cfg.hidden, cfg.num_classes)
    return 3.0 * sum(2.0 * a * b for a, b in zip(widths[:-1], widths[1:], strict=False))


def init_state(
    run_cfg: RunConfig,
    rng: jax.Array | None = None,
    *,
    mesh: Mesh | None = None,
    workdir: str | pathlib.Path | None = None,
    zero1: bool = False,
    params: Any = None,
    allow_config_change: bool = False,
) -> jaxzoo.StatePlan:
    """The training state of ``run_cfg`` (``jaxzoo.plan_state``): sharded by logical names on ``mesh``,
    restored from ``workdir`` when it holds a checkpoint, else initialised from ``rng`` (default: the
    config's seed) or from ``params``."""
    recipe = run_cfg.recipe()
    rng = jax.random.key(run_cfg.seed) if rng is None else rng
    return jaxzoo.plan_state(
        recipe.init_fn, recipe.tx, rng, mesh=mesh, rules=recipe.rules, params=params, workdir=workdir,
        config=run_cfg, allow_config_change=allow_config_change, zero1=zero1,
    )  # fmt: skip


def loss_fn(model: MLP, params: Any, batch: Mapping[str, jax.Array], rng: jax.Array | None = None):
    """Mean softmax cross-entropy of ``batch = {"x": [B, F], "y": [B]}`` -> (loss, {"acc": accuracy})."""
    del rng  # the MLP is deterministic
    logits = model.apply({"params": params}, batch["x"])  # [B, C]
    logits = logits.astype(model.config.precision.dtype_for("loss"))
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
    return loss, {"acc": jnp.mean(jnp.argmax(logits, -1) == batch["y"])}


def make_train_step(
    run_cfg: RunConfig, *, mesh: Mesh | None = None, state_sharding: Any = None, donate: bool = True
) -> Callable:
    """``step(state, batch, rng) -> (state, metrics)`` (``jaxzoo.make_train_step``); with a mesh the batch
    is split over "data"."""
    model = MLP(config=run_cfg.model)
    return jaxzoo.make_train_step(
        partial(loss_fn, model), make_optimizer(run_cfg), mesh=mesh, state_sharding=state_sharding,
        donate=donate,
    )  # fmt: skip


def _arrays(data: Data) -> tuple[np.ndarray, np.ndarray]:
    x, y = (data["x"], data["y"]) if isinstance(data, Mapping) else data
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or y.shape != x.shape[:1]:
        raise ValueError(
            f"data must be x [N, F] and integer labels y [N]; got shapes {x.shape} and {y.shape}."
        )
    return x, y.astype(np.int32)


def batch_fn(run_cfg: RunConfig, data: Data) -> Callable[[int], dict[str, np.ndarray]]:
    """``step -> {"x": [B, F], "y": [B]}``: ``batch_size`` examples drawn without replacement, the same for a
    given (seed, step), so a resumed run sees the batches of an uninterrupted one."""
    x, y = _arrays(data)
    if x.shape[1] != run_cfg.model.num_features:
        raise ValueError(f"the model reads {run_cfg.model.num_features} features; the data has {x.shape[1]}.")
    if len(x) < run_cfg.batch_size:
        raise ValueError(f"batch_size {run_cfg.batch_size} exceeds the {len(x)} training examples.")
    x = x.astype(run_cfg.model.precision.param)

    def batch(step: int) -> dict[str, np.ndarray]:
        idx = np.random.default_rng([run_cfg.seed, step]).choice(len(x), run_cfg.batch_size, replace=False)
        return {"x": x[idx], "y": y[idx]}

    return batch


def _loader_batches(run_cfg: RunConfig, source: jaxzoo.data.ShardedArrays):
    """An iterator over a grain loader (``jaxzoo.data.make_loader``) of a shard folder with fields x, y:
    shuffled per epoch from the run's seed; ``jaxzoo.fit`` saves and restores its state with checkpoints."""
    fields = getattr(source, "fields", {})
    if set(fields) != {"x", "y"} or fields["x"][1] != (run_cfg.model.num_features,) or fields["y"][1] != ():
        got = {k: v[1] for k, v in fields.items()}
        raise ValueError(
            f"a shard folder for the MLP needs fields x [{run_cfg.model.num_features}] and y [] (one row per "
            f"example); got row shapes {got}."
        )
    if len(source) < run_cfg.batch_size:
        raise ValueError(f"batch_size {run_cfg.batch_size} exceeds the {len(source)} training examples.")
    loader = jaxzoo.data.make_loader(source, batch_size=run_cfg.batch_size, seed=run_cfg.seed)
    return iter(loader)


def train(
    run_cfg: RunConfig,
    data: Data,
    *,
    mesh: Mesh | None = None,
    workdir: str | pathlib.Path | None = None,
    zero1: bool = False,
    stop_at: int | None = None,
    log_every: int = 10,
    checkpoint_every: int = 0,
    keep: int = 3,
    eval_fn: Callable[[jaxzoo.TrainState], Mapping[str, Any]] | None = None,
    eval_every: int = 0,
    allow_config_change: bool = False,
    progress: bool = True,
) -> tuple[jaxzoo.TrainState, list[dict]]:
    """Train the MLP on ``data`` -> ``(state, history)``.

    ``data``: arrays ``(x [N, F], y [N])`` or ``{"x", "y"}`` (``batch_fn``: each step's batch drawn from
    (seed, step)), or a ``jaxzoo.data.ShardedArrays`` shard folder with fields x and y (a grain loader,
    ``make_loader(source, batch_size, seed)``, shuffled per epoch; its state is checkpointed, so a resumed
    run reads the batches an uninterrupted one would). Logged records carry examples/s and FLOP/s
    (``flops_per_example``).

    With ``workdir`` the run saves ``config.json``, metrics and checkpoints there and resumes from its latest
    checkpoint (a different ``run_cfg`` raises ``ValueError``). ``stop_at`` ends this call at that step
    (the schedule still spans ``run_cfg.steps``; call again to continue). History: one record per
    ``log_every`` steps.
    """
    plan = init_state(
        run_cfg, mesh=mesh, workdir=workdir, zero1=zero1, allow_config_change=allow_config_change
    )
    step = make_train_step(run_cfg, mesh=mesh, state_sharding=plan.shardings)
    end = run_cfg.steps if stop_at is None else stop_at
    if not 0 <= end <= run_cfg.steps:
        raise ValueError(f"stop_at must lie in [0, steps={run_cfg.steps}]; got {stop_at}.")
    batches = (_loader_batches(run_cfg, data) if isinstance(data, jaxzoo.data.ShardedArrays)
               else batch_fn(run_cfg, data))  # fmt: skip
    return jaxzoo.fit(
        plan.state, step, batches, num_steps=end, rng=jax.random.key(run_cfg.seed),
        workdir=workdir, config=run_cfg, allow_config_change=allow_config_change, log_every=log_every,
        eval_fn=eval_fn, eval_every=eval_every, checkpoint_every=checkpoint_every, keep=keep,
        desc="interact MLP", progress=progress, examples_per_step=run_cfg.batch_size,
        flops_per_step=run_cfg.batch_size * flops_per_example(run_cfg),
    )  # fmt: skip


@partial(jax.jit, static_argnums=0)
def _evaluate(cfg: MLPConfig, params: Any, x: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
    loss, metrics = loss_fn(MLP(config=cfg), params, {"x": x, "y": y})
    return {"loss": loss, "accuracy": metrics["acc"]}


def evaluate(config: RunConfig | MLPConfig, params: Any, data: Data) -> dict[str, float]:
    """Mean cross-entropy and accuracy of the MLP ``params`` on ``data`` (all examples in one batch)."""
    cfg = config.model if isinstance(config, RunConfig) else config
    x, y = _arrays(data)
    out = _evaluate(cfg, params, x.astype(cfg.precision.param), y)
    return {k: float(v) for k, v in out.items()}
