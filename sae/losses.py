"""Training losses of the five architectures, as pure functions of (params, x, dead latents, coefficient).

All take activations x [B, d_in] (already scaled) and return ``(loss, aux)`` where ``aux`` holds the terms,
the reconstruction ``x_hat``, which latents ``fired`` in the batch [d_sae] and ``l0``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sae import ops
from sae.config import SAEConfig
from sae.model import cast_input, cast_params


def _centre(params, x, cfg: SAEConfig):
    return x - params["b_dec"] if cfg.apply_b_dec_to_input else x


def effective_params(params, cfg: SAEConfig) -> dict:
    """The parameters the TopK-family losses see: with ``cfg.rescale_by_decoder_norm`` the decoder norms
    n_i = ||W_dec,i|| move into the encoder (W_enc * n, b_enc * n, W_dec / n), which is exactly SAELens'
    top-k on z * n followed by decoding f / n; gradients flow to the free W_dec through n."""
    if not cfg.rescale_by_decoder_norm:
        return params
    n = ops.row_norms(params["W_dec"])
    out = dict(params)
    out["W_enc"], out["b_enc"] = params["W_enc"] * n, params["b_enc"] * n
    out["W_dec"] = params["W_dec"] / n[:, None]
    return out


def _dense_stats(f):
    active = f != 0
    return {"fired": jnp.any(active, axis=0), "l0": jnp.mean(jnp.sum(active, axis=-1))}


def relu_loss(params, x, dead, l1: float, cfg: SAEConfig):
    """MSE + l1 * mean_b sum_i |f_i| (* ||W_dec,i|| when ``cfg.l1_decoder_norm``), f = ReLU(z)."""
    f = jax.nn.relu(ops.pre_activation(_centre(params, x, cfg), params["W_enc"], params["b_enc"]))
    x_hat = ops.decode(f, params["W_dec"], params["b_dec"])
    mse = ops.mse(x, x_hat)
    sparsity = ops.l1_penalty(f, params["W_dec"] if cfg.l1_decoder_norm else None)
    return mse + l1 * sparsity, {"mse": mse, "l1": sparsity, "x_hat": x_hat, **_dense_stats(f)}


def gated_loss(params, x, dead, l1: float, cfg: SAEConfig):
    """Gated SAE, paper-faithful (Rajamanoharan et al. 2024, eq. 8; dictionary_learning):

    L = ||x - x_hat||^2 + l1 ||ReLU(pi_gate)||_1 + ||x - (ReLU(pi_gate) sg(W_dec) + sg(b_dec))||^2,
    each term summed over d_in / d_sae and averaged over tokens. With an unconstrained decoder the L1 term
    is weighted by sg(||W_dec,i||), frozen like the aux term (mixing frozen and unfrozen is worse: Rajamanoharan).
    """
    pi_gate, pi_mag = ops.gated_pre_activations(
        _centre(params, x, cfg), params["W_enc"], params["b_gate"], params["r_mag"], params["b_mag"]
    )
    f = ops.gated_activation(pi_gate, pi_mag)
    x_hat = ops.decode(f, params["W_dec"], params["b_dec"])
    mse = ops.mse(x, x_hat)
    gate = jax.nn.relu(pi_gate)
    W_dec_sg, b_dec_sg = jax.lax.stop_gradient(params["W_dec"]), jax.lax.stop_gradient(params["b_dec"])
    sparsity = ops.l1_penalty(gate, None if cfg.constrain_decoder else W_dec_sg)
    aux = ops.mse(x, ops.decode(gate, W_dec_sg, b_dec_sg))
    loss = mse + l1 * sparsity + aux
    return loss, {"mse": mse, "l1": sparsity, "aux": aux, "x_hat": x_hat, **_dense_stats(f)}


def topk_loss(params, x, dead, coefficient: float, cfg: SAEConfig):
    """TopK (Gao et al. 2024): normalised MSE + alpha * AuxK, alpha = ``cfg.aux_coefficient`` (1/32).

    Runs on the sparse code (ops.topk_encode / ops.sparse_decode): O(B k d_in) after the encoder matmul.
    """
    params = effective_params(params, cfg)
    k_aux = cfg.auxk_size if cfg.aux_coefficient > 0 else 0
    x_in, b_enc = x, params["b_enc"]
    if cfg.apply_b_dec_to_input:
        # (x - b_dec) W + b_enc with b_dec's gradient taken through b_enc - (b_dec - sg(b_dec)) W (= b_enc in
        # value): the same numbers and gradients, but no per-token input cotangent is formed (x is data)
        b_dec_sg = jax.lax.stop_gradient(params["b_dec"])
        x_in = x - b_dec_sg
        b_enc = b_enc - (params["b_dec"] - b_dec_sg) @ params["W_enc"]
    values, indices, aux_values, aux_indices = ops.topk_encode(
        x_in, params["W_enc"], b_enc, dead, cfg.k, k_aux
    )
    x_hat = ops.sparse_decode(values, indices, params["W_dec"], params["b_dec"])
    nmse = ops.normalized_mse(x, x_hat)
    loss, terms = nmse, {"nmse": nmse}
    if k_aux:

        def auxk():  # decoded (and differentiated) only when a latent is dead
            e_hat = ops.sparse_decode(
                aux_values, aux_indices, params["W_dec"], jnp.zeros_like(params["b_dec"])
            )
            return ops.auxk_normalized(x - x_hat, e_hat)

        aux = jax.lax.cond(jnp.any(dead), auxk, lambda: jnp.zeros((), nmse.dtype))
        loss, terms = loss + cfg.aux_coefficient * aux, {**terms, "auxk": aux}
    active = values > 0
    fired = jnp.zeros(cfg.d_sae, bool).at[indices.reshape(-1)].max(active.reshape(-1))
    l0 = jnp.mean(jnp.sum(active, axis=-1))
    return loss, {**terms, "mse": ops.mse(x, x_hat), "x_hat": x_hat, "fired": fired, "l0": l0}


def batchtopk_loss(params, x, dead, coefficient: float, cfg: SAEConfig):
    """BatchTopK (Bussmann et al. 2024): keep the top k*B of ReLU(z) over the batch; normalised MSE + AuxK.

    Also returns ``min_positive``, the smallest kept activation, for the inference-threshold EMA, and ``f``.
    """
    params = effective_params(params, cfg)
    z = ops.pre_activation(_centre(params, x, cfg), params["W_enc"], params["b_enc"])
    f = ops.batch_topk_activation(z, cfg.k)
    x_hat = ops.decode(f, params["W_dec"], params["b_dec"])
    nmse = ops.normalized_mse(x, x_hat)
    loss, terms = nmse, {"nmse": nmse}
    if cfg.aux_coefficient > 0:  # a dense decode: run (and differentiated) only when a latent is dead
        aux = jax.lax.cond(
            jnp.any(dead),
            lambda: ops.auxk_loss(x - x_hat, z, dead, params["W_dec"], cfg.auxk_size),
            lambda: jnp.zeros((), nmse.dtype),
        )
        loss, terms = loss + cfg.aux_coefficient * aux, {**terms, "auxk": aux}
    min_positive = jnp.min(jnp.where(f > 0, f, jnp.inf))
    return loss, {
        **terms,
        "mse": ops.mse(x, x_hat),
        "x_hat": x_hat,
        "min_positive": min_positive,
        "f": f,
        **_dense_stats(f),
    }


def matryoshka_loss(params, x, dead, coefficient: float, cfg: SAEConfig):
    """Matryoshka BatchTopK (Bussmann et al. 2025; SAELens ``MatryoshkaBatchTopKTrainingSAE``): the BatchTopK
    loss of the whole dictionary plus, for each inner width m_l < d_sae of ``cfg.levels``, the normalised MSE
    of the prefix reconstruction f[:, :m_l] W_dec[:m_l] + b_dec (same code f, same denominator).

    SAELens adds sum_l ||x - x_hat_l||^2 (summed over d_in, mean over tokens); with our normalised MSE every
    term is divided by the same batch variance, so the two losses differ by that one factor (tested)."""
    loss, aux = batchtopk_loss(params, x, dead, coefficient, cfg)
    eff = effective_params(params, cfg)
    f = aux["f"]
    terms = {}
    for width in cfg.levels[:-1]:
        x_hat_l = ops.decode(f[:, :width], eff["W_dec"][:width], eff["b_dec"])
        terms[f"nmse_{width}"] = ops.normalized_mse(x, x_hat_l)
        loss = loss + terms[f"nmse_{width}"]
    return loss, {**aux, **terms}


def jumprelu_loss(params, x, dead, l0: float, cfg: SAEConfig):
    """JumpReLU with the rectangle-kernel straight-through estimator for theta (ops.jumprelu / ops.step):

    - ``jumprelu_sparsity="step"`` (Rajamanoharan et al. 2024b): MSE + l0 * mean_b sum_i H(z_i - theta_i);
    - ``"tanh"`` (Anthropic, Jan 2025): MSE + l0 * mean_b sum_i tanh(c f_i ||W_dec,i||), c = jumprelu_tanh_scale;
    - plus, when ``pre_act_coefficient`` > 0, Anthropic's pre-activation loss
      lambda_P * mean_b sum_i ReLU(theta_i - z_i) ||W_dec,i|| over dead latents only (as SAELens).
    """
    z = ops.pre_activation(_centre(params, x, cfg), params["W_enc"], params["b_enc"])
    theta, eps = params["threshold"], cfg.jumprelu_bandwidth
    f = ops.jumprelu(z, theta, eps)
    x_hat = ops.decode(f, params["W_dec"], params["b_dec"])
    mse = ops.mse(x, x_hat)
    norms = ops.row_norms(params["W_dec"])
    if cfg.jumprelu_sparsity == "tanh":
        sparsity = ops.tanh_l0(f, norms, cfg.jumprelu_tanh_scale)
    else:
        sparsity = jnp.mean(jnp.sum(ops.step(z, theta, eps), axis=-1))
    loss, terms = mse + l0 * sparsity, {"mse": mse, "l0_penalty": sparsity}
    if cfg.pre_act_coefficient > 0:
        pre_act = ops.pre_act_loss(z, theta, dead, norms)
        loss, terms = loss + cfg.pre_act_coefficient * pre_act, {**terms, "pre_act": pre_act}
    return loss, {**terms, "x_hat": x_hat, **_dense_stats(f)}


LOSSES = {
    "relu": relu_loss,
    "gated": gated_loss,
    "topk": topk_loss,
    "batchtopk": batchtopk_loss,
    "jumprelu": jumprelu_loss,
    "matryoshka": matryoshka_loss,
}


def sparsity_coefficient(cfg: SAEConfig, step):
    """lambda(step): the L1 (relu, gated) or L0 (jumprelu) coefficient with its linear warm-up."""
    lam = cfg.l0_coefficient if cfg.architecture == "jumprelu" else cfg.l1_coefficient
    if cfg.l1_warmup_steps <= 0:
        return jnp.asarray(lam, jnp.float32)
    return lam * jnp.minimum(1.0, (step + 1) / cfg.l1_warmup_steps)


def sae_loss(params, x, dead, coefficient, cfg: SAEConfig):
    """The architecture's loss: (loss, aux). Under a low-precision ``cfg.precision`` the weights (not the
    threshold) and x are cast to the compute dtype; the loss terms are summed in float32 (``ops.full``)."""
    return LOSSES[cfg.architecture](cast_params(params, cfg), cast_input(x, cfg), dead, coefficient, cfg)
