"""Train state, jitted (and sharded) train step, and the ``fit`` loop.

A package supplies a pure ``loss_fn(params, batch, rng) -> (loss, metrics)`` and an optax optimizer;
``make_train_step`` turns them into ``step(state, batch, rng) -> (state, metrics)`` compiled with
``jax.jit(in_shardings=..., out_shardings=..., donate_argnums=0)``; ``fit`` runs it with a progress bar,
evaluation, JSONL metrics and orbax checkpoints, and resumes from the latest checkpoint of its workdir.
"""

from __future__ import annotations

import itertools
import json
import pathlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from jaxzoo.checkpoint import Checkpointer
from jaxzoo.config import check_resume_config, save_config
from jaxzoo.optim import map_master
from jaxzoo.sharding import DEFAULT_RULES, replicated, rules_for_mesh, shard_batch

LossFn = Callable[..., tuple[jax.Array, Mapping[str, jax.Array]]]


@flax.struct.dataclass
class TrainState:
    """Everything a training run updates: step counter, parameters, optimizer state, and ``extra``
    mutable collections (batch statistics, EMA weights, counters) that the loss returns updated."""

    step: jax.Array
    params: Any
    opt_state: Any
    extra: dict = flax.struct.field(default_factory=dict)

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation, extra: dict | None = None) -> TrainState:
        """A state at step 0 (pure; call it inside ``jax.jit``). To build a state, sharded or not, use
        ``jaxzoo.plan_state``, which also gives the optimizer state its parameters' shardings."""
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), extra=extra or {})


def shardings_of(tree: Any) -> Any:
    """The tree of ``.sharding`` of every array in ``tree`` (e.g. a sharded TrainState)."""
    return jax.tree.map(lambda x: x.sharding, tree)


def make_train_step(
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    *,
    mesh: Mesh | None = None,
    state_sharding: Any = None,
    batch_sharding: Any = None,
    has_extra: bool = False,
    post_update: Callable[[Any], Any] | None = None,
    donate: bool = True,
    rules: Any = None,
) -> Callable[[TrainState, Any, jax.Array], tuple[TrainState, dict]]:
    """Compile one optimisation step.

    Args:
      loss_fn: ``loss_fn(params, batch, rng) -> (loss, metrics)``; with ``has_extra``,
        ``loss_fn(params, extra, batch, rng) -> (loss, (metrics, new_extra))``.
      tx: the optax optimizer (clipping, schedules etc. chained in).
      mesh: when given, the step runs under ``jax.jit`` with explicit shardings: the state keeps
        ``state_sharding`` (by default the shardings its arrays have at the first call), the batch is split
        along its leading axis over ``"data"`` (or ``batch_sharding``), rng and metrics are replicated.
      post_update: optional pure ``params -> params`` applied after the optimizer update (e.g. keeping
        decoder rows unit-norm), and to the float32 master weights when the optimizer keeps them
        (``OptimizerConfig.master_dtype``).
      rules: logical-axis rules (default ``DEFAULT_RULES``) in force, with ``mesh``, while the step is
        traced, so activation constraints inside the model (``nn.with_logical_constraint``, e.g. tora's
        ``shard_sequence``) take effect in training as they do under ``with mesh, logical_axis_rules``.
      donate: donate the input state's buffers. The state passed in is then deleted by the step: keep
        using the state it returns, and copy parameters you want to keep (``jax.tree.map(jnp.copy, p)``)
        before the step; touching the old state raises a ``ValueError`` saying so.

    The rng given to ``loss_fn`` is ``fold_in(rng, state.step)``, so a run is reproducible from one key.
    Metrics always contain ``loss`` and ``grad_norm``; they stay on the device (``fit`` fetches them only
    every ``log_every`` steps).
    """

    def step(state: TrainState, batch: Any, rng: jax.Array) -> tuple[TrainState, dict]:
        rng = jax.random.fold_in(rng, state.step)
        if has_extra:

            def inner(p):
                return loss_fn(p, state.extra, batch, rng)

            (loss, (metrics, extra)), grads = jax.value_and_grad(inner, has_aux=True)(state.params)
        else:
            (loss, metrics), grads = jax.value_and_grad(lambda p: loss_fn(p, batch, rng), has_aux=True)(
                state.params
            )
            extra = state.extra
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if post_update is not None:
            params = post_update(params)
            opt_state = map_master(opt_state, post_update)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **metrics}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state, extra=extra), metrics

    donate_argnums = (0,) if donate else ()
    if mesh is None:
        return _explain_donation(jax.jit(step, donate_argnums=donate_argnums))

    data_sharding = (
        batch_sharding if batch_sharding is not None else NamedSharding(mesh, PartitionSpec("data"))
    )
    compiled: dict[str, Any] = {}

    mesh_rules = rules_for_mesh(DEFAULT_RULES if rules is None else rules, mesh)

    def sharded_step(state: TrainState, batch: Any, rng: jax.Array) -> tuple[TrainState, dict]:
        if "fn" not in compiled:
            sharding = state_sharding if state_sharding is not None else shardings_of(state)
            compiled["fn"] = jax.jit(
                step,
                in_shardings=(sharding, data_sharding, replicated(mesh)),
                out_shardings=(sharding, replicated(mesh)),
                donate_argnums=donate_argnums,
            )
        # traced (first call, or new shapes) with the mesh and the rules in force
        with jax.set_mesh(mesh), nn.logical_axis_rules(mesh_rules):
            return compiled["fn"](state, batch, rng)

    return _explain_donation(sharded_step)


def _explain_donation(fn: Callable) -> Callable:
    """Turn XLA's bare "Array has been deleted" into an error that says what happened and what to do."""

    def step(state, batch, rng):
        try:
            return fn(state, batch, rng)
        except (RuntimeError, ValueError) as e:
            if "deleted" not in str(e).lower():
                raise
            raise ValueError(
                "the train step was given a state whose arrays were deleted: the step donates its input "
                "state, so a state (or parameters taken from it) may be used only once. Continue from the "
                "state the step returned, copy arrays you want to keep before the step "
                "(jax.tree.map(jnp.copy, params)), or build the step with donate=False"
            ) from e

    step.__doc__ = fn.__doc__
    step.__wrapped__ = fn
    return step


DATA_STATE = "data_state"


def _data_state_path(workdir: pathlib.Path, step: int) -> pathlib.Path:
    return workdir / DATA_STATE / f"step_{step:09d}.process_{jax.process_index()}.bin"


def _batches(batches: Callable[[int], Any] | Iterable[Any], start: int,
             saved_state: pathlib.Path | None = None) -> Callable[[int], Any]:
    """A ``step -> batch`` function from a callable (used as is) or an iterable. An iterable resumed at
    ``start`` is fast-forwarded: a grain iterator by its saved state when there is one, any other by
    skipping ``start`` batches."""
    if callable(batches):
        return batches
    iterator = iter(batches)
    if start and saved_state is not None and saved_state.is_file() and hasattr(iterator, "set_state"):
        iterator.set_state(saved_state.read_bytes())
    else:
        for _ in itertools.islice(iterator, start):
            pass

    def next_batch(_step: int) -> Any:
        try:
            return next(iterator)
        except StopIteration:
            raise ValueError(
                f"the batch iterable ran out at step {_step}; give more batches or fewer steps"
            ) from None

    return next_batch


def _save_data_state(workdir: pathlib.Path, step: int, iterator: Any, keep: int) -> None:
    """Write a grain iterator's state next to checkpoint ``step`` (one file per process), keep the last few."""
    if iterator is None:
        return
    path = _data_state_path(workdir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(iterator.get_state())
    mine = sorted(path.parent.glob(f"step_*.process_{jax.process_index()}.bin"))
    for old in mine[: max(len(mine) - keep, 0)]:
        old.unlink()


def _fetch(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Device metrics -> host floats (scalars only): the one device-to-host sync of a logged step.

    In a multi-process run a metric that is not replicated (sharded over other processes' devices) is
    gathered from every process first."""
    def host(v):
        if isinstance(v, jax.Array) and not v.is_fully_addressable and not v.is_fully_replicated:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(v, tiled=True))
        return np.asarray(jax.device_get(v))

    return {k: float(host(v)) for k, v in dict(metrics).items() if np.ndim(v) == 0}


def evaluate(
    metric_fn: Callable[[Any, Any], Mapping[str, Any]],
    params: Any,
    batches: Iterable[Any],
    *,
    mesh: Mesh | None = None,
) -> dict[str, float]:
    """Metrics of ``params`` over a data set: the mean of ``metric_fn(params, batch)`` over ``batches``,
    weighted by each batch's global size (so a smaller last batch counts for its rows).

    ``metric_fn(params, batch) -> {name: scalar mean over the batch}`` is jitted here unless it already is.
    ``batches`` holds this process's rows of each batch (``jaxzoo.data.make_loader(..., shuffle=False,
    num_epochs=1)`` gives each process its part); with ``mesh`` each goes through ``shard_batch``, so in a
    multi-process run every process passes its own rows, every process must pass the same number of
    batches, and all get the same result (process 0 typically logs it). Sums stay on the device until the
    end (one host sync). Raises ``ValueError`` for an empty ``batches``.
    """
    fn = metric_fn if hasattr(metric_fn, "lower") else jax.jit(metric_fn)
    totals: dict[str, Any] = {}
    rows_total = 0
    for batch in batches:
        leaves = jax.tree.leaves(batch)
        if not leaves or np.ndim(leaves[0]) == 0:
            raise ValueError("evaluate expects batches of arrays with a leading batch dimension")
        rows = int(np.shape(leaves[0])[0]) * (jax.process_count() if mesh is not None else 1)
        metrics = fn(params, shard_batch(batch, mesh) if mesh is not None else batch)
        for k, v in metrics.items():
            if np.ndim(v) == 0:
                totals[k] = totals.get(k, 0.0) + v * rows
        rows_total += rows
    if rows_total == 0:
        raise ValueError("evaluate got no batches (an empty data set or an exhausted iterator)")
    return {k: v / rows_total for k, v in _fetch(totals).items()}


def read_metrics(path: str | pathlib.Path) -> list[dict]:
    """Read a metrics JSONL file written by ``fit`` (one dict per logged step)."""
    path = pathlib.Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def fit(
    state: TrainState,
    step_fn: Callable[[TrainState, Any, jax.Array], tuple[TrainState, dict]],
    batches: Callable[[int], Any] | Iterable[Any],
    *,
    num_steps: int,
    rng: jax.Array,
    workdir: str | pathlib.Path | None = None,
    eval_fn: Callable[[TrainState], Mapping[str, Any]] | None = None,
    eval_every: int = 0,
    checkpoint_every: int = 0,
    keep: int = 3,
    config: Any = None,
    allow_config_change: bool = False,
    mesh: Mesh | None = None,
    log_every: int = 10,
    examples_per_step: int | None = None,
    flops_per_step: float | None = None,
    peak_flops: float | None = None,
    desc: str = "train",
    progress: bool = True,
) -> tuple[TrainState, list[dict]]:
    """Run ``step_fn`` until ``state.step == num_steps``; returns ``(state, history)``.

    ``batches`` is ``batch_fn(step) -> batch``, or an iterable; a grain iterator
    (``iter(jaxzoo.data.make_loader(...))``) has its state saved with every checkpoint (``workdir/data_state``)
    and restored on resume, so a resumed run sees exactly the batches an uninterrupted one would. With
    ``mesh``, each batch goes through ``shard_batch`` (one process's rows, assembled into the global batch). Metrics stay on the device and are fetched to the host every ``log_every`` steps and at the
    last step (one sync per logged step, none in between); the progress bar moves every step. ``history``
    holds one record per logged step (and per eval step).

    With ``workdir``, metrics are appended to ``workdir/metrics.jsonl``, a checkpoint is saved every
    ``checkpoint_every`` steps and at the end into ``workdir/checkpoints`` with ``config.json``, and a run
    that finds a checkpoint there resumes from the latest one: its history is the logged history up to that
    step followed by the new steps, exactly as an uninterrupted run's. Resuming with a ``config`` other than
    the saved one raises ``ValueError`` unless ``allow_config_change``. In a multi-process run only process
    0 writes metrics and shows progress; every process writes its checkpoint shards.

    Throughput: with ``examples_per_step`` (global examples, or tokens) each logged record gets
    ``examples_per_s``; with ``flops_per_step`` (e.g. ``batch * pkg.flops_per_example(cfg)``) also
    ``flops_per_s`` and, when the device's peak is known (``jaxzoo.flops.peak_flops()`` or
    ``peak_flops``), ``mfu``. They are measured between logged steps (the fetch there waits for the
    device), so the first logged interval includes compilation.
    """
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 0:
        raise ValueError(f"num_steps must be an int >= 0; got {num_steps!r}")
    if not isinstance(log_every, int) or log_every < 1:
        raise ValueError(f"log_every must be an int >= 1; got {log_every!r}")
    lead = jax.process_index() == 0
    ckpt = None
    history: list[dict] = []
    metrics_path = None
    if workdir is not None:
        workdir = pathlib.Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        metrics_path = workdir / "metrics.jsonl"
        ckpt = Checkpointer(workdir / "checkpoints", keep=keep)
        if ckpt.latest_step() is not None:
            check_resume_config(workdir, config, allow_config_change)
            if ckpt.latest_step() != int(state.step):
                state = ckpt.restore(state)
        if config is not None and lead:
            save_config(workdir, config)
    start = int(state.step)
    if metrics_path is not None:  # keep the logged history up to the restored step, drop what came after
        history = [r for r in read_metrics(metrics_path) if r["step"] <= start]
        if lead:
            metrics_path.write_text("".join(json.dumps(r) + "\n" for r in history))
    iterator = batches if (not callable(batches) and hasattr(batches, "get_state")) else None
    saved = _data_state_path(workdir, start) if workdir is not None else None
    next_batch = _batches(batches, start, saved)
    if mesh is not None:
        raw_batch = next_batch
        next_batch = lambda s: shard_batch(raw_batch(s), mesh)  # noqa: E731
    bar = tqdm(range(start, num_steps), desc=desc, disable=not (progress and lead), initial=start,
               total=num_steps)
    last_saved = start if ckpt is not None and ckpt.latest_step() == start else None
    if flops_per_step is not None and peak_flops is None:
        from jaxzoo.flops import peak_flops as device_peak

        peak_flops = device_peak()
    clock, clock_step = time.perf_counter(), start
    for s in bar:
        state, metrics = step_fn(state, next_batch(s), rng)
        done = s + 1
        record = None
        if done % log_every == 0 or done == num_steps:
            record = {"step": done, **_fetch(metrics)}
            if examples_per_step or flops_per_step:
                now = time.perf_counter()
                rate = (done - clock_step) / max(now - clock, 1e-9)  # steps per second
                clock, clock_step = now, done
                if examples_per_step:
                    record["examples_per_s"] = rate * examples_per_step
                if flops_per_step:
                    record["flops_per_s"] = rate * flops_per_step
                    if peak_flops:
                        record["mfu"] = rate * flops_per_step / peak_flops
            bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "step"}, refresh=False)
        if eval_fn is not None and eval_every and done % eval_every == 0:
            record = record or {"step": done}
            record.update({f"eval_{k}": v for k, v in _fetch(eval_fn(state)).items()})
        if record is not None:
            history.append(record)
            if metrics_path is not None and lead:
                with metrics_path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
        if ckpt is not None and checkpoint_every and done % checkpoint_every == 0:
            ckpt.save(done, state, config=config if lead else None)
            _save_data_state(workdir, done, iterator, keep)
            last_saved = done
    if ckpt is not None:
        if last_saved != int(state.step):
            ckpt.save(int(state.step), state, config=config if lead else None)
            _save_data_state(workdir, int(state.step), iterator, keep)
        ckpt.close()
    return state, history
