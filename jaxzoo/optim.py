"""One optimizer config for every package: algorithm, schedule, warm-up, weight decay, clipping, EMA.

``make_optimizer(OptimizerConfig(...), total_steps)`` builds the optax chain

    [before...] -> clip_by_global_norm -> (adamw | adam | sgd | lion)(schedule) -> [after...] -> [ema]

run on float32 master weights when ``master_dtype`` is set (``master_weights``: bf16 parameters, float32
optimizer state), and wrapped in ``optax.apply_if_finite`` when ``skip_nonfinite`` (a step whose gradients hold NaN/inf leaves
the weights unchanged). Packages keep only what is specific to their paper (a gradient projection, a decay
mask); spelling and defaults of the shared fields are the same everywhere.

Warm-up: ``warmup_steps=None`` derives it from the run's length (``warmup_fraction`` of the total steps),
so a short run is not spent entirely in warm-up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxzoo.config import Config

ALGORITHMS = ("adamw", "adam", "sgd", "lion")
SCHEDULES = ("constant", "cosine", "linear", "wsd")
DECAY = ("all", "matrices", "none")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig(Config):
    """The optimizer of a training run. Schedules: "constant" (after warm-up), "cosine" (warm-up, then
    cosine to ``end_lr_ratio * learning_rate``), "linear" (warm-up, then linear to the end value) and "wsd"
    (warm-up, stable, then linear decay to the end value over the last ``decay_fraction`` of the run, as
    SAELens)."""

    algorithm: str = "adamw"  # one of ALGORITHMS
    learning_rate: float = 1e-3  # peak learning rate
    b1: float = 0.9  # Adam/Lion beta1; SGD momentum (0: plain gradient descent)
    b2: float = 0.999  # Adam/Lion beta2
    eps: float = 1e-8  # Adam epsilon
    weight_decay: float = 0.0  # decoupled weight decay (adamw, lion), on the leaves chosen by decay_on
    decay_on: str = "matrices"  # "matrices": leaves with ndim >= 2 only; "all"; "none" (or a mask fn)
    schedule: str = "constant"  # one of SCHEDULES
    warmup_steps: int | None = None  # linear warm-up from 0; None: warmup_fraction of the total steps
    warmup_fraction: float = 0.01  # used when warmup_steps is None
    end_lr_ratio: float = 0.0  # cosine/linear/wsd end at end_lr_ratio * learning_rate
    decay_fraction: float = 0.2  # wsd: the last fraction of steps over which the rate decays
    grad_clip: float = 0.0  # clip gradients to this global norm (0: off)
    ema_decay: float = 0.0  # keep an EMA of the weights in the optimizer state (0: off); see ema_params
    skip_nonfinite: bool = False  # a step with NaN/inf gradients leaves the weights unchanged
    master_dtype: str | None = None  # e.g. "float32": keep master weights and all optimizer state in it for low-precision (bf16) parameters; None: off

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"OptimizerConfig.algorithm must be one of {ALGORITHMS}; got {self.algorithm!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"OptimizerConfig.schedule must be one of {SCHEDULES}; got {self.schedule!r}")
        if self.decay_on not in DECAY:
            raise ValueError(f"OptimizerConfig.decay_on must be one of {DECAY}; got {self.decay_on!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"OptimizerConfig.learning_rate must be positive; got {self.learning_rate}")
        for name in ("weight_decay", "grad_clip", "eps"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"OptimizerConfig.{name} must be >= 0; got {getattr(self, name)}")
        for name in ("b1", "b2", "ema_decay", "warmup_fraction", "end_lr_ratio", "decay_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"OptimizerConfig.{name} must lie in [0, 1]; got {getattr(self, name)}")
        if self.master_dtype is not None:
            from jaxzoo.precision import parse_dtype

            canonical = parse_dtype(self.master_dtype).name
            if canonical != self.master_dtype:
                object.__setattr__(self, "master_dtype", canonical)
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"OptimizerConfig.warmup_steps must be >= 0 or None; got {self.warmup_steps}")

    def warmup(self, total_steps: int) -> int:
        """Warm-up steps of a run of ``total_steps``: ``warmup_steps``, or ``warmup_fraction`` of the total."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return int(round(self.warmup_fraction * total_steps))


def lr_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """The learning rate at each step of a run of ``total_steps`` (see ``OptimizerConfig``)."""
    if not isinstance(total_steps, int) or isinstance(total_steps, bool) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive int; got {total_steps!r}")
    warm = cfg.warmup(total_steps)
    if warm > total_steps:
        raise ValueError(f"warm-up ({warm} steps) is longer than the run ({total_steps} steps)")
    peak, end = cfg.learning_rate, cfg.learning_rate * cfg.end_lr_ratio
    rest = max(total_steps - warm, 1)
    if cfg.schedule == "constant":
        after = optax.constant_schedule(peak)
    elif cfg.schedule == "cosine":
        after = optax.cosine_decay_schedule(peak, rest, alpha=cfg.end_lr_ratio)
    elif cfg.schedule == "linear":
        after = optax.linear_schedule(peak, end, rest)
    else:  # wsd
        decay = int(round(cfg.decay_fraction * total_steps))
        stable = max(total_steps - warm - decay, 0)
        after = optax.join_schedules(
            [optax.constant_schedule(peak), optax.linear_schedule(peak, end, max(decay, 1))], [stable]
        )
    if warm == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warm), after], [warm])


def decay_mask(rule: str | Callable[[Any], Any]) -> Callable[[Any], Any] | None:
    """A weight-decay mask function for optax from a rule name (``DECAY``) or a ``params -> bool tree`` fn."""
    if callable(rule):
        return rule
    if rule == "all":
        return None
    if rule == "none":
        return lambda params: jax.tree.map(lambda _: False, params)
    return lambda params: jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


class EmaState(NamedTuple):
    ema: Any  # exponential moving average of the parameters, same tree as the params


def ema_weights(decay: float) -> optax.GradientTransformation:
    """Pass updates through unchanged; track ``ema <- decay * ema + (1 - decay) * (params + updates)``,
    the EMA of the *updated* weights (Open-Sora's ``update_ema`` after each step). Read with ``ema_params``."""

    def init(params):
        return EmaState(ema=jax.tree.map(jnp.copy, params))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("ema_weights needs the params: call tx.update(grads, opt_state, params)")
        new = jax.tree.map(lambda e, p, u: decay * e + (1 - decay) * (p + u), state.ema, params, updates)
        return updates, EmaState(ema=new)

    return optax.GradientTransformation(init, update)


def ema_params(opt_state: Any) -> Any:
    """The EMA weights kept in an optimizer state built with ``ema_decay > 0``."""
    for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, EmaState)):
        if isinstance(s, EmaState):
            return s.ema
    raise ValueError("this optimizer state holds no EMA; build the optimizer with ema_decay > 0")


class MasterState(NamedTuple):
    master: Any  # the parameters in the master dtype
    inner: Any  # the wrapped optimizer's state (built from the master weights, so in the master dtype)


def map_master(opt_state: Any, fn: Callable[[Any], Any]) -> Any:
    """``opt_state`` with ``fn`` (a ``params -> params`` function) applied to the master copy of every
    ``master_weights`` state in it; the identity for optimizers without master weights. ``make_train_step``
    applies its ``post_update`` here too, so a constraint (unit-norm rows, a non-negative threshold) holds on
    the float32 master weights and not only on their low-precision copy."""
    is_master = lambda s: isinstance(s, MasterState)  # noqa: E731
    return jax.tree.map(
        lambda s: s._replace(master=fn(s.master)) if is_master(s) else s, opt_state, is_leaf=is_master
    )


def _floating(x: Any) -> bool:
    return jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)


def master_weights(inner: optax.GradientTransformation, dtype: Any = jnp.float32) -> optax.GradientTransformation:
    """Mixed-precision training with master weights: ``inner`` runs in ``dtype`` on a copy of the parameters.

    The state keeps the parameters in ``dtype`` (float32 for bf16 parameters) and ``inner``'s state built
    from them, so Adam moments and EMA copies are float32 too. Each update casts the gradients to ``dtype``,
    steps the master copy, and returns ``master.astype(p.dtype) - p``, so the stored low-precision
    parameters follow the master weights (within one rounding of their dtype) and small updates that would
    round away in bf16 accumulate in the master copy instead. The planner shards the master copy like its
    parameter (same key path and shape). Integer leaves pass through.
    """
    from jaxzoo.precision import parse_dtype

    dtype = parse_dtype(dtype)

    def up(x):
        return x.astype(dtype) if _floating(x) else x

    def init(params):
        master = jax.tree.map(up, params)
        return MasterState(master, inner.init(master))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("master_weights needs the parameters in update(grads, state, params)")
        grads = jax.tree.map(up, updates)
        step, inner_state = inner.update(grads, state.inner, state.master)
        master = optax.apply_updates(state.master, step)
        out = jax.tree.map(
            lambda m, p: (m - p.astype(dtype)).astype(p.dtype) if _floating(p) else jnp.zeros_like(p),
            master, params)
        return out, MasterState(master, inner_state)

    return optax.GradientTransformation(init, update)


def scale_by_name(factors: dict[str, float]) -> optax.GradientTransformation:
    """Multiply the update of every leaf whose key path ends in a name of ``factors`` by its factor: a
    per-parameter learning-rate multiplier (placed after the optimizer's update, it scales the step, so with
    Adam it is exactly that parameter's own learning rate)."""
    for name, f in factors.items():
        if isinstance(f, bool) or not isinstance(f, int | float) or not 0 < f < float("inf"):
            raise ValueError(f"learning-rate multiplier for {name!r} must be a positive number; got {f!r}")

    def last_key(path) -> str | None:
        for k in reversed(path):
            name = getattr(k, "key", getattr(k, "name", None))
            if isinstance(name, str):
                return name
        return None

    def update(updates, state, params=None):
        del params
        scaled = jax.tree_util.tree_map_with_path(
            lambda path, u: u * factors[last_key(path)] if last_key(path) in factors else u, updates
        )
        return scaled, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(
    cfg: OptimizerConfig,
    total_steps: int,
    *,
    mask: str | Callable[[Any], Any] | None = None,
    before: Sequence[optax.GradientTransformation] = (),
    after: Sequence[optax.GradientTransformation] = (),
    lr_multipliers: dict[str, float] | None = None,
) -> optax.GradientTransformation:
    """The optax chain of ``cfg`` for a run of ``total_steps``.

    mask: the weight-decay rule (a ``DECAY`` name or a ``params -> bool tree`` function); default
      ``cfg.decay_on``. before/after: package transforms placed before clipping (e.g. a gradient
      projection) or after the update (e.g. a trainable-parameter mask). lr_multipliers: {parameter name:
      factor}, that parameter's learning rate relative to the schedule's (``scale_by_name``; e.g. a
      JumpReLU threshold that must move faster than the weights).
    """
    if not isinstance(cfg, OptimizerConfig):
        raise ValueError(f"make_optimizer expects an OptimizerConfig; got {type(cfg).__name__}")
    lr = lr_schedule(cfg, total_steps)
    wd_mask = decay_mask(cfg.decay_on if mask is None else mask)
    if cfg.algorithm == "adamw":
        core = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=wd_mask)
    elif cfg.algorithm == "adam":
        core = optax.adam(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    elif cfg.algorithm == "lion":
        core = optax.lion(lr, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=wd_mask)
    else:
        core = optax.sgd(lr, momentum=cfg.b1 or None)
    parts = list(before)
    if cfg.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip))
    parts.append(core)
    if lr_multipliers:
        parts.append(scale_by_name(dict(lr_multipliers)))
    parts.extend(after)
    if cfg.ema_decay > 0:
        parts.append(ema_weights(cfg.ema_decay))
    tx = optax.chain(*parts)
    if cfg.master_dtype is not None:
        tx = master_weights(tx, cfg.master_dtype)
    if cfg.skip_nonfinite:
        tx = optax.apply_if_finite(tx, max_consecutive_errors=2**30)
    return tx
