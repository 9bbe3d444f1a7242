"""Evaluation of a trained SAE on held-out activations (and, optionally, on a downstream loss).

Pooled over all evaluated tokens (not averaged per batch): L0, MSE (sum over d_in, mean over tokens),
normalised MSE (MSE / MSE of predicting the mean activation), explained variance (1 - the same ratio),
dead / dense latent fractions, the log10 feature-density histogram, shrinkage (mean ||x_hat|| / ||x||),
relative reconstruction bias E||x_hat||^2 / E[x . x_hat] (Gated paper, eq. 10) and mean cosine(x, x_hat).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from sae import ops
from sae.config import SAEConfig
from sae.model import SAE, check_input


def batch_statistics(cfg: SAEConfig, params, x):
    """Sums over a batch x [B, d_in] that ``evaluate`` pools: a dict of scalars and the per-latent
    firing counts [d_sae]."""
    x_hat, f = SAE(cfg, parent=None).apply({"params": params}, x)
    active = f != 0
    x_norm, x_hat_norm = jnp.sqrt(ops.sum_sq(x)), jnp.sqrt(ops.sum_sq(x_hat))
    dot = jnp.sum(x * x_hat, axis=-1)
    return {
        "n": jnp.asarray(x.shape[0], jnp.float32),
        "sq_err": jnp.sum(ops.sum_sq(x - x_hat)),
        "mean": jnp.mean(x, axis=0),
        "m2": ops.variance_sum(x),
        "l0": jnp.sum(active),
        "l2_ratio": jnp.sum(x_hat_norm / jnp.maximum(x_norm, 1e-12)),
        "x_hat_sq": jnp.sum(x_hat_norm**2),
        "dot": jnp.sum(dot),
        "cos": jnp.sum(dot / jnp.maximum(x_norm * x_hat_norm, 1e-12)),
        "fires": jnp.sum(active, axis=0),
    }


def _merge(a: dict, b: dict) -> dict:
    """Pool two batches' statistics; means and centred sums of squares by Chan et al.'s parallel formula."""
    out = {k: a[k] + b[k] for k in a if k not in ("mean", "m2")}
    n = a["n"] + b["n"]
    delta = b["mean"] - a["mean"]
    out["mean"] = a["mean"] + delta * (b["n"] / n)
    out["m2"] = a["m2"] + b["m2"] + float(delta @ delta) * a["n"] * b["n"] / n
    return out


def score_recovered(loss_clean: float, loss_sae: float, loss_zero: float) -> float:
    """(L_zero - L_sae) / (L_zero - L_clean): 1 = as good as the clean model, 0 = as bad as zero-ablation."""
    return float((loss_zero - loss_sae) / (loss_zero - loss_clean))


def evaluate(
    cfg: SAEConfig,
    params,
    activations,
    *,
    batch_size: int = 4096,
    dense_threshold: float = 0.1,
    bins: int = 40,
    downstream: Callable[[str], float] | None = None,
) -> dict:
    """Metrics of an SAE on ``activations`` ([N, d_in] array or iterable of batches).

    ``downstream(mode) -> loss`` for mode in ("clean", "sae", "zero") adds ``score_recovered`` and the three
    losses; build it with ``sae.splice`` / ``sae.ablate`` (a cross-entropy for a language model, 1 - cosine of
    the output embedding for an encoder).
    """
    if isinstance(activations, np.ndarray | jax.Array):
        check_input(activations, cfg)
        data = np.asarray(activations).reshape(-1, cfg.d_in)
        batches: Iterable = (data[i : i + batch_size] for i in range(0, len(data), batch_size))
    else:
        batches = activations
    stats_fn = jax.jit(lambda p, x: batch_statistics(cfg, p, x))
    total = None
    for x in batches:
        x = np.asarray(x, np.float32)
        check_input(x, cfg)
        s = jax.device_get(stats_fn(params, x.reshape(-1, cfg.d_in)))
        s = {k: np.asarray(v, np.float64) for k, v in s.items()}
        total = s if total is None else _merge(total, s)
    if total is None:
        raise ValueError("no activations to evaluate.")
    n = total["n"]
    var_sum = total["m2"]  # sum ||x - mean||^2 over all tokens
    density = total["fires"] / n
    hist, edges = np.histogram(np.clip(np.log10(density + 1e-10), -10.0, 0.0), bins=bins, range=(-10.0, 0.0))
    out = {
        "tokens": int(n),
        "l0": float(total["l0"] / n),
        "mse": float(total["sq_err"] / n),
        "normalized_mse": float(total["sq_err"] / var_sum),
        "explained_variance": float(1.0 - total["sq_err"] / var_sum),
        "dead_fraction": float(np.mean(density == 0)),
        "dense_fraction": float(np.mean(density > dense_threshold)),
        "l2_ratio": float(total["l2_ratio"] / n),
        "relative_reconstruction_bias": float(total["x_hat_sq"] / total["dot"]),
        "cosine": float(total["cos"] / n),
        "density_histogram": {"log10_density_edges": edges.tolist(), "counts": hist.tolist()},
        "feature_density": density.tolist(),
    }
    if downstream is not None:
        losses = {mode: float(downstream(mode)) for mode in ("clean", "sae", "zero")}
        out.update({f"loss_{k}": v for k, v in losses.items()})
        out["score_recovered"] = score_recovered(losses["clean"], losses["sae"], losses["zero"])
    return out
