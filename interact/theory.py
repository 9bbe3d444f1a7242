"""The noisy-triggering-function model of the two-phase dynamics (Ren et al., arXiv 2407.19198).

A network's output on masked inputs is modelled as y_S = sum_{T subset of S} w*_T (ground-truth AND
interactions), learned through triggering functions J_T(x_S) = 1(T subset of S) corrupted by noise eps_T
with E eps_T = 0 and Var eps_T = 2^{|T|} sigma^2. Minimising E_eps E_S (y_S - w^T (J(x_S) + eps))^2 over
the 2^n subsets gives

    w_hat = (J^T J + 2^n diag(c))^{-1} J^T J w*,  c_T = 2^{|T|} sigma^2,  (J^T J)_{T,T'} = 2^{n - |T union T'|}.

(c_T and the Gram entries are our derivation from the project page's statement; they are checked against a
direct least-squares solve in the tests.) Large sigma^2 (early training) suppresses high orders; as
sigma^2 shrinks, interactions of gradually higher order appear.

Dense 2^n x 2^n algebra: meant for n <= 12.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from interact.ops import check_num_players, num_players, subset_sizes


def gram_matrix(n: int, dtype=np.float64) -> np.ndarray:
    """(J^T J)_{T,T'} = #{S : T union T' subset of S} = 2^{n - |T union T'|}.  [2^n, 2^n]."""
    n = check_num_players(n)
    idx = np.arange(2**n)
    union = idx[:, None] | idx[None, :]
    return (2.0 ** (n - subset_sizes(n)[union])).astype(dtype)


def noisy_triggering_weights(w_star: jax.Array, sigma2: float | jax.Array) -> jax.Array:
    """w_hat for ground-truth interactions w_star [2^n] and noise level sigma2 (scalar or [m]) -> [(m,) 2^n]."""
    w_star = jnp.asarray(w_star)
    w_star = w_star if jnp.issubdtype(w_star.dtype, jnp.inexact) else w_star.astype(jnp.float32)
    n = num_players(w_star, "w_star")
    if w_star.ndim != 1:
        raise ValueError(f"w_star must be one vector [2^n] of interactions; got shape {w_star.shape}.")
    sigma2 = jnp.asarray(sigma2, w_star.dtype)
    if np.any(np.asarray(sigma2) < 0):
        raise ValueError("sigma2 is a noise variance and must be non-negative.")
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
