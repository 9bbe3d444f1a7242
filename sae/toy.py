"""Toy ground truth: activations built from known sparse features (Sharkey et al. 2022 replication) and
how well an SAE's decoder recovers them (mean max cosine similarity, matched recovery)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import ndtr

from sae.model import decoder_directions


def feature_probabilities(n_features: int, avg_active: float, decay: float) -> np.ndarray:
    """p_i proportional to decay^i, rescaled so that sum_i p_i = avg_active (clipped to 1)."""
    p = decay ** np.arange(n_features, dtype=np.float64)
    return np.clip(p * avg_active / p.sum(), 0.0, 1.0)


def superposition_data(
    n_samples: int,
    *,
    d_in: int = 256,
    n_features: int = 512,
    avg_active: float = 5.0,
    decay: float = 0.99,
    correlated: bool = False,
    seed: int = 0,
    features: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Activations x = codes @ F from ``n_features`` unit-norm random Gaussian features F [n_features, d_in].

    Feature i fires with probability p_i ~ decay^i (``avg_active`` on average per sample) with a U(0, 1)
    magnitude; samples where nothing fires get one random feature at 1 (Sharkey et al.). With ``correlated``,
    firing is a Gaussian copula of a random correlation matrix C: fire_i = Phi(g_i) > 1 - p_i, g ~ N(0, C),
    which keeps each p_i exactly (our choice; the replication rescales Phi(g) * decay per batch instead).
    Returns (x [n_samples, d_in] float32, F [n_features, d_in] float32).
    """
    if n_samples < 1 or d_in < 1 or n_features < 1:
        raise ValueError(
            f"n_samples, d_in, n_features must be positive; got {n_samples}, {d_in}, {n_features}."
        )
    if not 0 < avg_active <= n_features:
        raise ValueError(f"avg_active must be in (0, n_features={n_features}]; got {avg_active}.")
    rng = np.random.default_rng(seed)
    if features is None:
        features = rng.normal(size=(n_features, d_in))
        features /= np.linalg.norm(features, axis=-1, keepdims=True)
    elif features.shape != (n_features, d_in):
        raise ValueError(
            f"features must have shape [n_features={n_features}, d_in={d_in}]; got {features.shape}."
        )
    p = feature_probabilities(n_features, avg_active, decay)
    if correlated:
        a = rng.normal(size=(n_features, n_features)) / np.sqrt(n_features)
        cov = a @ a.T + 0.1 * np.eye(n_features)
        std = np.sqrt(np.diag(cov))
        chol = np.linalg.cholesky(cov / np.outer(std, std))
        u = ndtr(rng.normal(size=(n_samples, n_features)) @ chol.T)
        fire = u > 1.0 - p
    else:
        fire = rng.random((n_samples, n_features)) < p
    codes = np.where(fire, rng.random((n_samples, n_features)), 0.0)
    empty = ~fire.any(-1)
    codes[np.nonzero(empty)[0], rng.integers(0, n_features, empty.sum())] = 1.0
    x = codes @ features
    return x.astype(np.float32), np.asarray(features, np.float32)


def cosine_matrix(params, features) -> np.ndarray:
    """cos(F_i, D_j) for ground-truth features F [n, d] and decoder rows D [d_sae, d]: -> [n, d_sae]."""
    f = np.asarray(features, np.float64)
    f = f / np.linalg.norm(f, axis=-1, keepdims=True)
    return f @ np.asarray(decoder_directions(params), np.float64).T


def mmcs(params, features) -> float:
    """Mean max cosine similarity: mean over ground-truth features of max_j cos(F_i, D_j)."""
    return float(cosine_matrix(params, features).max(axis=1).mean())


def recovery(params, features, threshold: float = 0.9) -> dict:
    """Matched-feature recovery: MMCS, the fraction of features with a decoder row at cosine >= threshold,
    and the mean cosine of a one-to-one (Hungarian) matching of features to latents (MCC, as SAELens' synthetic
    evals)."""
    cos = cosine_matrix(params, features)
    rows, cols = linear_sum_assignment(-cos)
    return {
        "mmcs": float(cos.max(axis=1).mean()),
        "frac_recovered": float((cos.max(axis=1) >= threshold).mean()),
        "mcc": float(cos[rows, cols].mean()),
    }
