"""The noisy-triggering-function model of the two-phase dynamics (Ren et al., arXiv 2407.19198).

A network's output on masked inputs is modelled as y_S = sum_{T subset of S} w*_T (ground-truth AND
interactions), learned through triggering functions J_T(x_S) = 1(T subset of S) corrupted by noise eps_T
with E eps_T = 0 and Var eps_T = 2^{|T|} sigma^2. Minimising E_eps E_S (y_S - w^T (J(x_S) + eps))^2 over
the 2^n subsets gives

    w_hat = (J^T J + 2^n diag(c))^{-1} J^T J w*,  c_T = 2^{|T|} sigma^2,  (J^T J)_{T,T'} = 2^{n - |T union T'|}.

(c_T and the Gram entries are our derivation from the project page's statement; they are checked against a
direct least-squares solve in the tests.) Large sigma^2 (early training) suppresses high orders; as
sigma^2 shrinks, interactions of gradually higher order appear.

Dense 2^n x 2^n algebra: n <= MAX_THEORY_PLAYERS = 12 (a float64 Gram matrix of 2^12 x 2^12 is 128 MiB;
n = 16 would be 32 GiB), checked before anything is allocated.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from interact.ops import check_num_players, num_players, subset_sizes

MAX_THEORY_PLAYERS = 12


def _check_dense(n: int) -> int:
    n = check_num_players(n)
    if n > MAX_THEORY_PLAYERS:
        raise ValueError(
            f"The noisy-triggering theory builds dense 2^n x 2^n matrices; at most n = {MAX_THEORY_PLAYERS} "
            f"players are supported (2^{n} x 2^{n} float64 would take {8 * 4**n / 2**30:.0f} GiB); got n = {n}."
        )
    return n


def gram_matrix(n: int, dtype=np.float64) -> np.ndarray:
    """(J^T J)_{T,T'} = #{S : T union T' subset of S} = 2^{n - |T union T'|}.  [2^n, 2^n]."""
    n = _check_dense(n)
    idx = np.arange(2**n)
    union = idx[:, None] | idx[None, :]
    return (2.0 ** (n - subset_sizes(n)[union])).astype(dtype)


def noisy_triggering_weights(w_star: jax.Array, sigma2: float | jax.Array) -> jax.Array:
    """w_hat for ground-truth interactions w_star [2^n] and noise level sigma2 (scalar or [m]) -> [(m,) 2^n]."""
    w_star = jnp.asarray(w_star)
    w_star = w_star if jnp.issubdtype(w_star.dtype, jnp.inexact) else w_star.astype(jnp.float32)
    n = _check_dense(num_players(w_star, "w_star"))
    if w_star.ndim != 1:
        raise ValueError(f"w_star must be one vector [2^n] of interactions; got shape {w_star.shape}.")
    sigma2 = jnp.asarray(sigma2, w_star.dtype)
    if not np.all(np.asarray(sigma2) >= 0):
        raise ValueError(f"sigma2 is a noise variance and must be non-negative (not NaN); got {sigma2}.")
    gram = jnp.asarray(gram_matrix(n), w_star.dtype)
    c = jnp.asarray(2.0 ** subset_sizes(n), w_star.dtype)  # c_T / sigma^2
    rhs = gram @ w_star

    def one(s2):
        return jnp.linalg.solve(gram + (2.0**n) * s2 * jnp.diag(c), rhs)

    return one(sigma2) if sigma2.ndim == 0 else jax.vmap(one)(sigma2)


def strength_by_order(interactions: jax.Array) -> jax.Array:
    """sum over |S| = k of |I(S)| for k = 1..n: [..., 2^n] -> [..., n]."""
    a = jnp.asarray(interactions)
    n = num_players(a, "I")
    one_hot = jnp.asarray(subset_sizes(n)[:, None] == np.arange(1, n + 1)[None, :], a.dtype)
    return jnp.einsum("...s,so->...o", jnp.abs(a), one_hot, precision="highest")


def predicted_order_strength(w_star: jax.Array, sigma2s: jax.Array, *, normalize: bool = True) -> jax.Array:
    """Per-order strength sum_{|T|=k} |w_hat_T| (k = 1..n) predicted for each noise level -> [m, n].

    With normalize, each row is divided by its sum (the distribution over orders).
    """
    w_hat = noisy_triggering_weights(w_star, jnp.atleast_1d(jnp.asarray(sigma2s)))
    strength = strength_by_order(w_hat)
    if normalize:
        strength = strength / jnp.sum(strength, axis=-1, keepdims=True)
    return strength


def random_game_strength(n: int, scale: float = 1.0) -> np.ndarray:
    """Expected sum_{|S|=k} |I(S)| (k = 1..n) for a game of i.i.d. N(0, scale^2) values: C(n, k) 2^{k/2}
    scale sqrt(2/pi). This is the spindle (medium orders dominate) of a randomly initialised network whose
    outputs on masked inputs look like noise (our derivation: I(S) sums 2^{|S|} values with signs)."""
    n = check_num_players(n)
    k = np.arange(1, n + 1)
    comb = np.array([math.comb(n, int(i)) for i in k], dtype=np.float64)
    return comb * 2.0 ** (k / 2) * scale * math.sqrt(2 / math.pi)


def random_interaction_strength(n: int, scale: float = 1.0) -> np.ndarray:
    """Expected sum_{|S|=k} |I(S)| (k = 1..n) when the interactions themselves are independent with equal
    spread, I(S) ~ N(0, scale^2): C(n, k) scale sqrt(2/pi), the binomial shape. This is the seed document's
    argument for the spindle of a randomly initialised network (it treats the interactions as independent);
    `random_game_strength` is the other reference (independent game values, C(n, k) 2^{k/2}, which leans to
    higher orders)."""
    n = check_num_players(n)
    k = np.arange(1, n + 1)
    comb = np.array([math.comb(n, int(i)) for i in k], dtype=np.float64)
    return comb * scale * math.sqrt(2 / math.pi)
