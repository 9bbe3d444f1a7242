"""The sparsest AND-OR decomposition of a game (Li & Zhang ICML'23; Chen et al. ICLR'24), and learned baselines.

v is split as v_and = 0.5 (v + q) + p and v_or = 0.5 (v + q) - p; p and q (one value per subset, both
starting at zero) are fitted to minimise sum_S |I_and(S)| + sum_S |I_or(S)| with I_and = harsanyi(v_and)
and I_or = or_interactions(v_or). q is a tolerated error, projected every step onto
|q_T| <= q_bound * |v(N) - v(empty)|. The optimiser is the lab's: SGD with momentum 0.9 (PyTorch's form,
buf = 0.9 buf + g; x -= lr_t buf) and lr_t = logspace(log10 lr, log10 lr - 1, steps)[t]. As in the lab's
loop (`_train_p_q`, sjtu-xai-lab/interaction-concept), `steps` counts evaluations of the loss: iteration t
evaluates the loss and, unless it is the last one, updates with lr_t, so `steps` iterations make steps - 1
updates (the last learning rate, lr / 10, is never used). Everything is one jitted `lax.fori_loop`, vmapped
over leading (sample) axes.

Universal matching holds exactly for every subset T (it is an identity of the transforms):
v(x_T) + q_T = I_and(empty) + I_or(empty) + sum_{non-empty S subset of T} I_and(S)
             + sum_{non-empty S meeting T} I_or(S).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from interact.evaluate import _check_batch_size, _check_inputs, _values
from interact.ops import (
    harsanyi,
    harsanyi_inverse,
    num_players,
    or_interactions,
    or_interactions_inverse,
    subset_sizes,
)


class AndOrResult(NamedTuple):
    """The AND-OR decomposition of games v [..., 2^n]; every field has v's shape except `loss`."""

    i_and: jax.Array  # AND interactions I_and(S)
    i_or: jax.Array  # OR interactions I_or(S)
    p: jax.Array  # the AND/OR split
    q: jax.Array  # the tolerated error, |q| <= q_bound |v(N) - v(empty)|
    loss: jax.Array  # [...] final sum |I_and| + sum |I_or| (before merging singletons)


def and_or_from(v: jax.Array, p: jax.Array, q: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(I_and, I_or) of v_and = 0.5 (v + q) + p and v_or = 0.5 (v + q) - p.  All [..., 2^n]."""
    half = 0.5 * (v + q)
    return harsanyi(half + p), or_interactions(half - p)


def and_or_to_game(i_and: jax.Array, i_or: jax.Array) -> jax.Array:
    """v + q rebuilt from the AND and OR interactions (the universal-matching sum) for every T: [..., 2^n]."""
    return harsanyi_inverse(i_and) + or_interactions_inverse(i_or)


def _l1(v, p, q):
    i_and, i_or = and_or_from(v, p, q)
    return jnp.sum(jnp.abs(i_and)) + jnp.sum(jnp.abs(i_or))


def check_finite_values(v, name: str = "v") -> None:
    """ValueError when the game values hold NaN or inf (a model output that overflowed, a bad label)."""
    bad = ~np.isfinite(np.asarray(v))
    if bad.any():
        where = np.argwhere(bad)[0].tolist()
        raise ValueError(
            f"{name} holds {int(bad.sum())} NaN or infinite values (first at index {where}); the game values "
            "must be finite model outputs (check the model, its inputs and the label)."
        )


def _check_hyper(*, q_bound=None, steps=None, lr=None, momentum=None, bound=None, p_bound=None):
    """Host-side checks of the optimiser's hyper-parameters (NaN fails every comparison, so it is caught)."""
    if q_bound is not None and not q_bound >= 0:
        raise ValueError(f"q_bound must be a non-negative fraction of |v(N) - v(empty)|; got {q_bound}.")
    if p_bound is not None and not p_bound >= 0:
        raise ValueError(f"p_bound must be a non-negative fraction; got {p_bound}.")
    if steps is not None and (not isinstance(steps, int | np.integer) or steps < 0):
        raise ValueError(f"steps and lr must be non-negative (steps an integer); got steps={steps!r}.")
    if lr is not None and not (np.isfinite(lr) and lr >= 0):
        raise ValueError(f"steps and lr must be non-negative; lr must be a finite number >= 0, got lr={lr}.")
    if momentum is not None and not 0 <= momentum < 1:
        raise ValueError(f"momentum must lie in [0, 1) (0: plain gradient descent); got {momentum}.")
    if bound is not None and not bool(np.all(np.asarray(bound) >= 0)):
        raise ValueError(
            f"bound must be non-negative and not NaN (the baseline moves within baseline +- bound); got {bound}."
        )


def lr_schedule(lr: float, steps: int) -> np.ndarray:
    """The lab's learning rates: logspace(log10 lr, log10 lr - 1, steps), a 10x log-linear decay."""
    return np.logspace(np.log10(lr), np.log10(lr) - 1, steps)


def _extract_one(v, q_bound, lr, momentum, steps, *, learn_p, learn_q):
    """One game v [2^n]; steps is traced, so runs of any length share one compiled program."""
    bound = q_bound * jnp.abs(v[-1] - v[0])
    grad = jax.grad(_l1, argnums=(1, 2))
    decay = 1.0 / jnp.maximum(steps - 1, 1).astype(v.dtype)

    def body(t, carry):
        p, q, bp, bq = carry
        lr_t = lr * 10.0 ** (-t.astype(v.dtype) * decay)  # = logspace(log10 lr, log10 lr - 1, steps)[t]
        gp, gq = grad(v, p, q)
        bp = momentum * bp + gp
        bq = momentum * bq + gq
        if learn_p:
            p = p - lr_t * bp
        if learn_q:
            q = jnp.clip(q - lr_t * bq, -bound, bound)
        return p, q, bp, bq

    zeros = jnp.zeros_like(v)
    updates = jnp.maximum(steps - 1, 0)  # the lab's loop: no update after the last loss evaluation
    p, q, _, _ = jax.lax.fori_loop(0, updates, body, (zeros, zeros, zeros, zeros))
    return p, q, _l1(v, p, q)


def extract_and_or(
    v: jax.Array,
    *,
    q_bound: float = 0.04,
    steps: int = 10_000,
    lr: float = 1e-5,
    momentum: float = 0.9,
    learn_p: bool = True,
    learn_q: bool = True,
    merge_singletons: bool = True,
) -> AndOrResult:
    """Sparse AND-OR interactions of games v [..., 2^n] (leading axes are samples, vmapped).

    q_bound: the tolerated error relative to |v(N) - v(empty)| (0.04 in ICML'23, 0.02 for BERT in ICLR'24).
    steps, lr: iterations of the lab's loop (steps - 1 SGD updates, see the module docstring) and the initial
    learning rate (ICML'23: 1e-5 for images, 1e-4 for tabular data, 10k steps). The L1 gradient is a sign
    sum over up to 2^n subsets, so lr is per unit of that sum. momentum: in [0, 1) (the lab's 0.9).
    merge_singletons: the lab's post-processing; for |S| <= 1, I_and += I_or and I_or = 0 (AND and OR are
    the same thing for a single player, and universal matching is unchanged).
    """
    num_players(v)  # on the host, before any transfer
    v = jnp.asarray(v)
    v = v if jnp.issubdtype(v.dtype, jnp.inexact) else v.astype(jnp.float32)
    _check_hyper(q_bound=q_bound, steps=steps, lr=lr, momentum=momentum)
    check_finite_values(v, "v")
    return _extract(v, q_bound, lr, momentum, steps, merge_singletons, learn_p=learn_p, learn_q=learn_q)


@partial(jax.jit, static_argnames=("learn_p", "learn_q"))
def _extract(v, q_bound, lr, momentum, steps, merge, *, learn_p, learn_q):
    n = num_players(v)
    batch = v.shape[:-1]
    flat = v.reshape(-1, 2**n)
    dtype = v.dtype
    run = partial(_extract_one, learn_p=learn_p, learn_q=learn_q)
    args = (
        jnp.asarray(q_bound, dtype),
        jnp.asarray(lr, dtype),
        jnp.asarray(momentum, dtype),
        jnp.asarray(steps),
    )
    p, q, loss = jax.vmap(run, in_axes=(0, None, None, None, None))(flat, *args)
    i_and, i_or = and_or_from(flat, p, q)
    low = jnp.asarray(subset_sizes(n) <= 1) & merge
    i_and = jnp.where(low, i_and + i_or, i_and)
    i_or = jnp.where(low, 0.0, i_or)

    def shape(a):
        return a.reshape(*batch, 2**n)

    return AndOrResult(shape(i_and), shape(i_or), shape(p), shape(q), loss.reshape(batch))


class SharedAndOrResult(NamedTuple):
    """AND-OR interactions of M models extracted jointly (Chen et al. ICLR'24) from v [M, ..., 2^n]."""

    i_and: jax.Array  # [M, ..., 2^n] AND interactions of each model
    i_or: jax.Array  # [M, ..., 2^n] OR interactions of each model
    p_share: jax.Array  # [..., 2^n] the split shared by all models
    p: jax.Array  # [M, ..., 2^n] each model's own part of the split, |p_m| <= p_bound_m
    q: jax.Array  # [M, ..., 2^n] each model's tolerated error, |q_m| <= q_bound |v_m(N) - v_m(empty)|
    loss: jax.Array  # [...] final joint loss (Eq. 6)


def _joint_loss(v, p_share, p, q, alpha):
    """sum over the 2 * 2^n AND/OR entries of (1 - alpha) max_m |I_m| + alpha sum_m |I_m|.  v, p, q: [M, 2^n]."""
    i_and, i_or = and_or_from(v, p_share[None] + p, q)
    both = jnp.abs(jnp.concatenate([i_and, i_or], axis=-1))  # [M, 2 * 2^n]
    return jnp.sum((1 - alpha) * jnp.max(both, axis=0) + alpha * jnp.sum(both, axis=0))


def _shared_one(v, q_bound, p_bound, lr, momentum, alpha, steps):
    """One sample: v [M, 2^n]; p_bound [M]."""
    qb = (q_bound * jnp.abs(v[:, -1] - v[:, 0]))[:, None]  # [M, 1]
    pb = p_bound[:, None]
    grad = jax.grad(_joint_loss, argnums=(1, 2, 3))

    def body(_, carry):
        params, bufs = carry
        grads = grad(v, *params, alpha)
        bufs = tuple(momentum * b + g for b, g in zip(bufs, grads, strict=True))
        ps, p, q = (x - lr * b for x, b in zip(params, bufs, strict=True))
        return (ps, jnp.clip(p, -pb, pb), jnp.clip(q, -qb, qb)), bufs

    zeros = (jnp.zeros_like(v[0]), jnp.zeros_like(v), jnp.zeros_like(v))
    (ps, p, q), _ = jax.lax.fori_loop(0, jnp.maximum(steps - 1, 0), body, (zeros, zeros))
    return ps, p, q, _joint_loss(v, ps, p, q, alpha)


def extract_shared_and_or(
    v: jax.Array,
    *,
    q_bound: float = 0.02,
    p_bound: float | jax.Array | None = None,
    steps: int = 20_000,
    lr: float = 1e-7,
    momentum: float = 0.9,
    alpha: float = 0.1,
    merge_singletons: bool = True,
) -> SharedAndOrResult:
    """Interactions shared by M models (Chen et al., ICLR'24, "generalizable interactions"): the AND-OR
    extraction run jointly over the games v [M, ..., 2^n] of M models on the same inputs and players.

    Model m is split with p_share + p_m: v_and,m = 0.5 (v_m + q_m) + p_share + p_m, v_or,m = 0.5 (v_m + q_m)
    - p_share - p_m. The loss (their Eq. 6) sums over the 2 * 2^n AND and OR entries
    (1 - alpha) max_m |I_m(S)| + alpha sum_m |I_m(S)|, which rewards interactions that all models share.
    As in the lab's `_train_p_q_joint_model` (sjtu-xai-lab/generalizable-interaction): SGD momentum 0.9 with
    a constant learning rate, |q_m| <= q_bound |v_m(N) - v_m(empty)| and |p_m| <= p_bound_m projected every
    iteration, `steps` iterations = steps - 1 updates. Defaults are the lab's BERT settings (q_bound 0.02,
    lr 1e-7, 20k steps, alpha 0.1). p_bound: absolute, a scalar or one value per model [M]; the lab uses
    0.5 x the model's mean output over the explained samples (read from its own files); the default here is
    0.5 |v_m(N) - v_m(empty)| of each sample (our choice). Leading axes after M are samples (vmapped).
    merge_singletons: for |S| <= 1, I_and += I_or and I_or = 0 (as in `extract_and_or`).
    """
    num_players(v)
    v = jnp.asarray(v)
    v = v if jnp.issubdtype(v.dtype, jnp.inexact) else v.astype(jnp.float32)
    if v.ndim < 2 or v.shape[0] < 1:
        raise ValueError(f"v must hold one game per model, [M, ..., 2^n]; got shape {v.shape}.")
    _check_hyper(q_bound=q_bound, steps=steps, lr=lr, momentum=momentum)
    if not 0 <= alpha <= 1:
        raise ValueError(
            f"alpha weighs the sum against the max over models and must lie in [0, 1]; got {alpha}."
        )
    check_finite_values(v, "v")
    models = v.shape[0]
    if p_bound is None:
        p_bound = 0.5 * jnp.abs(v[..., -1] - v[..., 0])  # [M, ...]
    else:
        p_bound = np.asarray(p_bound, np.float64)
        if p_bound.ndim > 1 or (p_bound.ndim == 1 and p_bound.shape[0] != models):
            raise ValueError(
                f"p_bound must be a scalar or one value per model [{models}]; got shape {p_bound.shape}."
            )
        _check_hyper(p_bound=float(p_bound.min()) if p_bound.size else 0.0)
        p_bound = jnp.broadcast_to(
            jnp.asarray(p_bound, v.dtype).reshape((-1,) + (1,) * (v.ndim - 2)), v.shape[:-1]
        )
    return _extract_shared(v, p_bound, q_bound, lr, momentum, alpha, steps, merge_singletons)


@jax.jit
def _extract_shared(v, p_bound, q_bound, lr, momentum, alpha, steps, merge):
    n = num_players(v)
    models, batch = v.shape[0], v.shape[1:-1]
    flat = jnp.moveaxis(v.reshape(models, -1, 2**n), 1, 0)  # [B, M, 2^n]
    pb = jnp.moveaxis(p_bound.reshape(models, -1), 1, 0)  # [B, M]
    dtype = v.dtype
    ps, p, q, loss = jax.vmap(_shared_one, in_axes=(0, None, 0, None, None, None, None))(
        flat, jnp.asarray(q_bound, dtype), pb, jnp.asarray(lr, dtype), jnp.asarray(momentum, dtype),
        jnp.asarray(alpha, dtype), jnp.asarray(steps),
    )  # fmt: skip
    i_and, i_or = and_or_from(flat, ps[:, None] + p, q)  # [B, M, 2^n]
    low = jnp.asarray(subset_sizes(n) <= 1) & merge
    i_and, i_or = jnp.where(low, i_and + i_or, i_and), jnp.where(low, 0.0, i_or)

    def per_model(a):  # [B, M, 2^n] -> [M, ..., 2^n]
        return jnp.moveaxis(a, 0, 1).reshape(models, *batch, 2**n)

    return SharedAndOrResult(
        per_model(i_and), per_model(i_or), ps.reshape(*batch, 2**n), per_model(p), per_model(q),
        loss.reshape(batch),
    )  # fmt: skip


def learn_baseline(
    fn: Callable[..., jax.Array],
    x: jax.Array,
    baseline: jax.Array,
    players,
    *,
    steps: int = 50,
    lr: float = 1e-3,
    bound: float | jax.Array | None = None,
    momentum: float = 0.0,
    include_empty: bool = True,
    batch_size: int = 256,
    player_ndim: int = 1,
    fn_args: tuple = (),
) -> tuple[jax.Array, jax.Array]:
    """A baseline that makes the AND interactions sparse (CVPR'23, sjtu-xai-lab/aog `_train_baseline`):
    minimise sum_S |I_and(S)| over the baseline values, starting from `baseline` and clamped to
    baseline +- bound after every step.

    The default follows the lab's loop: the sum runs over all S, the empty set included (I(empty) =
    v(x_empty), so the output at the baseline is pulled towards zero too), and the update is plain gradient
    descent b -= lr_t * grad with lr_t = logspace(log10 lr, log10 lr - 1, steps)[t], lr 1e-3, 50 steps. The
    gradient sum_S sign(I(S)) dI(S)/db goes through all 2^n model calls. Variants: include_empty=False
    leaves I(empty) out of the loss; momentum > 0 uses PyTorch-style momentum (buf = m buf + g). bound
    defaults to 0.05 * std(x) (the lab clamps to init +- 0.05 std of the word embeddings; for other inputs
    this is our choice).

    Returns (baseline, losses [steps]) where losses[t] is the loss before update t (the lab's `losses`).
    """
    x, b0, member = _check_inputs(x, baseline, players, player_ndim)
    _check_batch_size(batch_size)
    _check_hyper(steps=steps, lr=lr, momentum=momentum)
    if bound is None:
        bound = 0.05 * jnp.std(x)
    _check_hyper(bound=bound)
    bound = jnp.asarray(bound, x.dtype)
    subsets = jnp.arange(2 ** member.shape[0], dtype=jnp.int32)
    return _learn_baseline(
        fn, x, b0, jnp.asarray(member), subsets, bound, lr, momentum, fn_args, steps, batch_size, player_ndim,
        bool(include_empty),
    )  # fmt: skip


@partial(jax.jit, static_argnums=(0, 9, 10, 11, 12))
def _learn_baseline(
    fn, x, b0, member, subsets, bound, lr, momentum, fn_args, steps, batch_size, player_ndim, include_empty
):
    def loss(b):
        v = _values(fn, x, b, member, subsets, batch_size, player_ndim, fn_args)
        dividends = harsanyi(v)
        return jnp.sum(jnp.abs(dividends if include_empty else dividends[1:]))

    lrs = lr * jnp.logspace(0.0, -1.0, steps, dtype=x.dtype)

    def body(carry, lr_t):
        b, buf = carry
        value, g = jax.value_and_grad(loss)(b)
        buf = momentum * buf + g
        b = jnp.clip(b - lr_t * buf, b0 - bound, b0 + bound)
        return (b, buf), value

    (b, _), losses = jax.lax.scan(body, (b0, jnp.zeros_like(b0)), lrs)
    return b, losses
