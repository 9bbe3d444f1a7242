"""The sparsest AND-OR decomposition of a game (Li & Zhang ICML'23; Chen et al. ICLR'24), and learned baselines.

v is split as v_and = 0.5 (v + q) + p and v_or = 0.5 (v + q) - p; p and q (one value per subset, both
starting at zero) are fitted to minimise sum_S |I_and(S)| + sum_S |I_or(S)| with I_and = harsanyi(v_and)
and I_or = or_interactions(v_or). q is a tolerated error, projected every step onto
|q_T| <= q_bound * |v(N) - v(empty)|. The optimiser is the lab's: SGD with momentum 0.9 (PyTorch's form,
buf = 0.9 buf + g; x -= lr_t buf) and lr_t = logspace(log10 lr, log10 lr - 1, steps)[t], a log-linear decay
by 10x over the run. Everything is one jitted `lax.fori_loop`, vmapped over leading (sample) axes.

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

from interact.evaluate import _check_inputs, _values
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
    p, q, _, _ = jax.lax.fori_loop(0, steps, body, (zeros, zeros, zeros, zeros))
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
    steps, lr: SGD iterations and the initial learning rate (ICML'23: 1e-5 for images, 1e-4 for tabular
    data, 10k steps). The L1 gradient is a sign sum over up to 2^n subsets, so lr is per unit of that sum.
    merge_singletons: the lab's post-processing; for |S| <= 1, I_and += I_or and I_or = 0 (AND and OR are
    the same thing for a single player, and universal matching is unchanged).
    """
    num_players(v)  # on the host, before any transfer
    v = jnp.asarray(v)
    v = v if jnp.issubdtype(v.dtype, jnp.inexact) else v.astype(jnp.float32)
    if not q_bound >= 0:
        raise ValueError(f"q_bound must be a non-negative fraction of |v(N) - v(empty)|; got {q_bound}.")
    if steps < 0 or lr < 0:
        raise ValueError(f"steps and lr must be non-negative; got steps={steps}, lr={lr}.")
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


def learn_baseline(
    fn: Callable[..., jax.Array],
    x: jax.Array,
    baseline: jax.Array,
    players,
    *,
    steps: int = 50,
    lr: float = 1e-3,
    bound: float | jax.Array | None = None,
    momentum: float = 0.9,
    batch_size: int = 256,
    player_ndim: int = 1,
    fn_args: tuple = (),
) -> tuple[jax.Array, jax.Array]:
    """A baseline that makes the AND interactions sparse (CVPR'23 `aog`): minimise sum_{S non-empty} |I_and(S)|
    over the baseline values, starting from `baseline` and clamped to baseline +- bound after every step.

    The gradient sum_S sign(I(S)) dI(S)/db goes through all 2^n model calls. Optimiser as in the lab: SGD
    momentum 0.9 with the 10x logspace decay, lr 1e-3, 50 steps. bound defaults to 0.05 * std(x) (the lab
    uses 0.05 * std of the word embeddings; for other inputs this is our choice). I(empty) = v(x_empty) is
    left out of the loss: it is not an interaction, and including it would pull the output at the baseline
    to zero (our decision; the lab's exact sum was not readable).

    Returns (baseline, losses [steps]) where losses are the L1 before each step.
    """
    x, b0, member = _check_inputs(x, baseline, players, player_ndim)
    if bound is None:
        bound = 0.05 * jnp.std(x)
    bound = jnp.asarray(bound, x.dtype)
    if jnp.any(bound < 0):
        raise ValueError("bound must be non-negative (the baseline moves within baseline +- bound).")
    subsets = jnp.arange(2 ** member.shape[0], dtype=jnp.int32)
    return _learn_baseline(
        fn, x, b0, jnp.asarray(member), subsets, bound, lr, momentum, fn_args, steps, batch_size, player_ndim
    )


@partial(jax.jit, static_argnums=(0, 9, 10, 11))
def _learn_baseline(fn, x, b0, member, subsets, bound, lr, momentum, fn_args, steps, batch_size, player_ndim):
    def loss(b):
        v = _values(fn, x, b, member, subsets, batch_size, player_ndim, fn_args)
        return jnp.sum(jnp.abs(harsanyi(v)[1:]))

    lrs = lr * jnp.logspace(0.0, -1.0, steps, dtype=x.dtype)

    def body(carry, lr_t):
        b, buf = carry
        value, g = jax.value_and_grad(loss)(b)
        buf = momentum * buf + g
        b = jnp.clip(b - lr_t * buf, b0 - bound, b0 + bound)
        return (b, buf), value

    (b, _), losses = jax.lax.scan(body, (b0, jnp.zeros_like(b0)), lrs)
    return b, losses
