"""The maths of sparse autoencoders as pure array functions (tested against numpy in tests/sae/test_ops.py).

Shapes: x [B, d_in], W_enc [d_in, d_sae], W_dec [d_sae, d_in], z (pre-activations) and f (latents) [B, d_sae].
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# --- encoders -------------------------------------------------------------------------------------------


def pre_activation(x, W_enc, b_enc, b_dec=None):
    """z = (x - b_dec) W_enc + b_enc. x [..., d_in] -> [..., d_sae]; b_dec None skips the centring."""
    if b_dec is not None:
        x = x - b_dec
    return jnp.einsum("...d,dm->...m", x, W_enc) + b_enc


def topk(z, k: int):
    """Top-k of the last axis followed by ReLU (SAELens/OpenAI order; equal to DL's ReLU-then-top-k).

    Returns (values [..., k], indices [..., k]); values are >= 0.
    """
    values, indices = jax.lax.top_k(z, k)
    return jax.nn.relu(values), indices


def scatter_last(values, indices, size: int):
    """Dense [..., size] array with ``values`` at ``indices`` along the last axis and zeros elsewhere."""
    lead = values.shape[:-1]
    flat_v = values.reshape(-1, values.shape[-1])
    flat_i = indices.reshape(-1, indices.shape[-1])
    rows = jnp.arange(flat_v.shape[0])[:, None]
    out = jnp.zeros((flat_v.shape[0], size), values.dtype).at[rows, flat_i].set(flat_v)
    return out.reshape(*lead, size)


def topk_activation(z, k: int):
    """f = scatter(ReLU(top_k(z))): keeps the k largest pre-activations of each token. [..., m] -> [..., m]."""
    values, indices = topk(z, k)
    return scatter_last(values, indices, z.shape[-1])


def batch_topk_activation(z, k: int):
    """BatchTopK: keep the k * B largest values of ReLU(z) over the whole batch z [B, m] (ties broken by
    position, as lax.top_k does)."""
    batch, m = z.shape
    flat = jax.nn.relu(z).reshape(-1)
    values, indices = jax.lax.top_k(flat, min(k * batch, batch * m))
    return jnp.zeros_like(flat).at[indices].set(values).reshape(batch, m)


def _rectangle(u):
    """K(u) = 1[|u| < 1/2], the kernel of the JumpReLU straight-through estimator."""
    return (jnp.abs(u) < 0.5).astype(u.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def jumprelu(z, threshold, bandwidth: float):
    """JumpReLU_theta(z) = z * H(z - theta). z [..., m], threshold [m].

    Gradients (Rajamanoharan et al. 2024b): d/dz = H(z - theta); d/dtheta = -(theta/eps) K((z - theta)/eps),
    summed over the leading (batch) axes.
    """
    return z * (z > threshold).astype(z.dtype)


def _jumprelu_fwd(z, threshold, bandwidth):
    return jumprelu(z, threshold, bandwidth), (z, threshold)


def _jumprelu_bwd(bandwidth, res, g):
    z, threshold = res
    dz = g * (z > threshold).astype(z.dtype)
    dtheta = -(threshold / bandwidth) * _rectangle((z - threshold) / bandwidth) * g
    return dz, jnp.sum(dtheta.reshape(-1, z.shape[-1]), axis=0).reshape(threshold.shape)


jumprelu.defvjp(_jumprelu_fwd, _jumprelu_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def step(z, threshold, bandwidth: float):
    """Heaviside H(z - theta) with the straight-through gradient d/dtheta = -(1/eps) K((z - theta)/eps),
    d/dz = 0 (the JumpReLU paper's L0 estimator). z [..., m], threshold [m]."""
    return (z > threshold).astype(z.dtype)


def _step_fwd(z, threshold, bandwidth):
    return step(z, threshold, bandwidth), (z, threshold)


def _step_bwd(bandwidth, res, g):
    z, threshold = res
    dtheta = -(1.0 / bandwidth) * _rectangle((z - threshold) / bandwidth) * g
    return jnp.zeros_like(z), jnp.sum(dtheta.reshape(-1, z.shape[-1]), axis=0).reshape(threshold.shape)


step.defvjp(_step_fwd, _step_bwd)


def threshold_activation(z, threshold):
    """Inference JumpReLU without gradients to theta: z * 1[z > theta] (BatchTopK at inference)."""
    return z * (z > threshold).astype(z.dtype)


def gated_pre_activations(x, W_enc, b_gate, r_mag, b_mag, b_dec=None):
    """pi_gate = x~ W_enc + b_gate, pi_mag = x~ (W_enc * exp(r_mag)) + b_mag with x~ = x - b_dec. -> 2 x [..., m]."""
    if b_dec is not None:
        x = x - b_dec
    pi_gate = jnp.einsum("...d,dm->...m", x, W_enc) + b_gate
    pi_mag = jnp.einsum("...d,dm->...m", x, W_enc * jnp.exp(r_mag)) + b_mag
    return pi_gate, pi_mag


def gated_activation(pi_gate, pi_mag):
    """f = 1[pi_gate > 0] * ReLU(pi_mag): no gradient flows through the gate's indicator."""
    return (pi_gate > 0).astype(pi_mag.dtype) * jax.nn.relu(pi_mag)


# --- decoder --------------------------------------------------------------------------------------------


def decode(f, W_dec, b_dec):
    """x_hat = f W_dec + b_dec. f [..., m] -> [..., d_in]."""
    return jnp.einsum("...m,md->...d", f, W_dec) + b_dec


def full(x):
    """``x`` in at least float32 (bfloat16 -> float32, float64 stays): sums of squares, losses and norms are
    accumulated in full precision whatever dtype the SAE computes in."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def row_norms(W, eps: float = 0.0):
    """||W_i|| for each row i: [m, d] -> [m], summed in float32 and returned in W's dtype."""
    return jnp.sqrt(jnp.sum(jnp.square(full(W)), axis=-1) + eps).astype(W.dtype)


def normalize_rows(W, eps: float = 1e-12):
    """Rows of W scaled to unit norm ([m, d] -> [m, d]); a zero row stays zero."""
    return W / jnp.maximum(row_norms(W), eps)[:, None]


def project_out_parallel(grad, W):
    """Remove from each row of ``grad`` its component along the same (unit) row of ``W``:
    g_i <- g_i - (g_i . w_i) w_i with w_i = W_i / ||W_i||. Keeps unit-norm rows on the sphere to first order."""
    Wn = normalize_rows(W)
    return grad - jnp.sum(grad * Wn, axis=-1, keepdims=True) * Wn


# --- losses ---------------------------------------------------------------------------------------------


def sum_sq(x):
    """sum over the last axis of x^2, in at least float32: [..., d] -> [...]."""
    x = full(x)
    return jnp.sum(x * x, axis=-1)


def mse(x, x_hat):
    """MSE as SAELens reports it: squared error summed over d_in, averaged over tokens. -> scalar."""
    return jnp.mean(sum_sq(full(x_hat) - full(x)))


def variance_sum(x):
    """sum_b ||x_b - mean_b x||^2 (pooled variance of a batch [B, d], times B)."""
    x = full(x)
    return jnp.sum(sum_sq(x - jnp.mean(x, axis=0)))


def normalized_mse(x, x_hat):
    """Fraction of variance unexplained: sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the batch
    (OpenAI's normalised MSE; 1 - explained variance)."""
    return jnp.sum(sum_sq(full(x_hat) - full(x))) / variance_sum(x)


def explained_variance(x, x_hat):
    """Pooled explained variance 1 - sum ||x - x_hat||^2 / sum ||x - mean x||^2 over the batch. -> scalar."""
    return 1.0 - normalized_mse(x, x_hat)


def auxk_normalized(residual, e_hat):
    """||e - e_hat||^2 / ||e - mean_b e||^2 summed over the batch, e = stop_gradient(residual); NaN -> 0."""
    e = full(jax.lax.stop_gradient(residual))
    loss = jnp.sum(sum_sq(e - full(e_hat))) / variance_sum(e)
    return jnp.where(jnp.isfinite(loss), loss, 0.0)


def auxk_loss(residual, z, dead, W_dec, k_aux: int):
    """AuxK (Gao et al. 2024): reconstruct the (stop-gradient) residual e = x - x_hat [B, d] with the top
    ``k_aux`` post-ReLU pre-activations among dead latents only (``dead`` [m] bool), no bias:
    L = ||e - e_hat||^2 / ||e - mean_b e||^2 summed over the batch; 0 when nothing is dead or e is constant.
    """
    masked = jnp.where(dead, jax.nn.relu(z), -jnp.inf)
    values, indices = jax.lax.top_k(masked, k_aux)
    values = jnp.where(jnp.isfinite(values), values, 0.0)  # fewer than k_aux dead latents
    e_hat = decode(scatter_last(values, indices, z.shape[-1]), W_dec, 0.0)
    return jnp.where(jnp.any(dead), auxk_normalized(residual, e_hat), 0.0)


def l1_penalty(f, W_dec=None):
    """mean_b sum_i |f_i| (* ||W_dec,i|| when W_dec is given: Anthropic's decoder-norm-weighted L1)."""
    a = jnp.abs(full(f))
    if W_dec is not None:
        a = a * full(row_norms(W_dec))
    return jnp.mean(jnp.sum(a, axis=-1))


def tanh_l0(f, decoder_norms, scale: float):
    """Anthropic's smoothed L0 (Jan 2025): mean_b sum_i tanh(scale * f_i * ||W_dec,i||). f [B, m] -> scalar."""
    return jnp.mean(jnp.sum(jnp.tanh(scale * full(f) * full(decoder_norms)), axis=-1))


def pre_act_loss(z, threshold, dead, decoder_norms):
    """Anthropic's pre-activation loss, on dead latents only (SAELens): mean_b sum_i ReLU(theta_i - z_i)
    * dead_i * ||W_dec,i||. z [B, m], threshold/dead/decoder_norms [m] -> scalar."""
    return jnp.mean(jnp.sum(jax.nn.relu(full(threshold) - full(z)) * dead * full(decoder_norms), axis=-1))


# --- initialisation -------------------------------------------------------------------------------------


def geometric_median(points, iters: int = 100, eps: float = 1e-8):
    """Weiszfeld's algorithm: argmin_y sum_i ||p_i - y||. points [N, d] -> [d]; starts at the mean."""

    def body(_, y):
        w = 1.0 / jnp.maximum(jnp.sqrt(sum_sq(points - y)), eps)
        return jnp.sum(w[:, None] * points, axis=0) / jnp.sum(w)

    return jax.lax.fori_loop(0, iters, body, jnp.mean(points, axis=0))


def norm_scale(x):
    """s = sqrt(d_in) / mean ||x||, the factor that makes the mean activation norm sqrt(d_in)."""
    return jnp.sqrt(x.shape[-1]) / jnp.mean(jnp.sqrt(sum_sq(x)))


# --- sparse top-k kernels -------------------------------------------------------------------------------
# A top-k code touches k of the d_sae latents per token, so everything after the (dense) encoder matmul can
# run at O(B k d) instead of O(B d_sae d). XLA's CPU gather/scatter is fast one slot at a time and slow as a
# single [B, k, d] gather, hence the fori_loops over the k slots. Backward passes are written out so that no
# dense [B, d_sae] cotangent (and no dense matmul with it) is ever formed.


def _gather_sum(values, indices, table):
    """sum_j values[:, j] * table[indices[:, j]]: [B, k], [B, k], [m, d] -> [B, d]."""
    out = jnp.zeros((values.shape[0], table.shape[-1]), jnp.result_type(values, table))
    return jax.lax.fori_loop(
        0,
        values.shape[1],
        lambda j, acc: acc + values[:, j, None] * jnp.take(table, indices[:, j], axis=0),
        out,
    )


def _gather_dot(g, indices, table):
    """out[:, j] = g . table[indices[:, j]]: [B, d], [B, k], [m, d] -> [B, k]."""
    out = jnp.zeros(indices.shape, jnp.result_type(g, table))

    def body(j, acc):
        return acc.at[:, j].set(jnp.sum(g * jnp.take(table, indices[:, j], axis=0), axis=-1))

    return jax.lax.fori_loop(0, indices.shape[1], body, out)


def _scatter_outer(values, indices, rows, size: int):
    """sum over (b, j) of values[b, j] * rows[b] added at row indices[b, j]: -> [size, d]."""
    out = jnp.zeros((size, rows.shape[-1]), jnp.result_type(values, rows))

    def body(j, acc):
        return acc.at[indices[:, j]].add(values[:, j, None] * rows)

    return jax.lax.fori_loop(0, values.shape[1], body, out)


@jax.custom_vjp
def sparse_decode(values, indices, W_dec, b_dec):
    """x_hat = sum_j values[:, j] W_dec[indices[:, j]] + b_dec from a top-k code (values, indices) [B, k].

    Equal to ``decode(scatter_last(values, indices, d_sae), W_dec, b_dec)`` at O(B k d) instead of O(B d_sae d).
    """
    return _gather_sum(values, indices, W_dec) + b_dec


def _sparse_decode_fwd(values, indices, W_dec, b_dec):
    return sparse_decode(values, indices, W_dec, b_dec), (values, indices, W_dec)


def _sparse_decode_bwd(res, g):
    values, indices, W_dec = res
    d_values = _gather_dot(g, indices, W_dec)
    d_W_dec = _scatter_outer(values, indices, g, W_dec.shape[0])
    return d_values, _int_zero(indices), d_W_dec, jnp.sum(g, axis=0)


sparse_decode.defvjp(_sparse_decode_fwd, _sparse_decode_bwd)


def _int_zero(x):
    return np.zeros(x.shape, jax.dtypes.float0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def topk_encode(x, W_enc, b_enc, dead, k: int, k_aux: int = 0):
    """Top-k codes of z = x W_enc + b_enc (x already centred) from one encoder matmul.

    Returns (values, indices) [B, k] of ReLU(top_k(z)) and, for AuxK, (aux_values, aux_indices) [B, k_aux]
    of ReLU(top_k(z masked to the ``dead`` [m] latents)); aux values are 0 where fewer than k_aux are dead.
    The backward pass only touches the chosen columns of W_enc (gradients equal to autodiff of the dense
    form, tested); nothing of size [B, d_sae] is differentiated.
    """
    z = pre_activation(x, W_enc, b_enc)
    values, indices = topk(z, k)
    aux_values, aux_indices = _aux_topk(z, dead, k_aux)
    return values, indices, aux_values, aux_indices


def _aux_topk(z, dead, k_aux):
    batch = z.shape[0]
    if k_aux == 0:
        return jnp.zeros((batch, 0), z.dtype), jnp.zeros((batch, 0), jnp.int32)

    def some_dead(z):
        values, indices = jax.lax.top_k(jnp.where(dead, z, -jnp.inf), k_aux)
        return jnp.where(jnp.isfinite(values), jax.nn.relu(values), 0.0), indices

    def none_dead(z):
        return jnp.zeros((batch, k_aux), z.dtype), jnp.zeros((batch, k_aux), jnp.int32)

    return jax.lax.cond(jnp.any(dead), some_dead, none_dead, z)


def _topk_encode_fwd(x, W_enc, b_enc, dead, k, k_aux):
    out = topk_encode(x, W_enc, b_enc, dead, k, k_aux)
    values, indices, aux_values, aux_indices = out
    return out, (
        x,
        W_enc,
        dead,
        jnp.concatenate([values, aux_values], 1),
        jnp.concatenate([indices, aux_indices], 1),
    )


def _topk_encode_bwd(k, k_aux, res, cotangents):
    x, W_enc, dead, values, indices = res
    W_t = W_enc.T  # [m, d]

    def slots(g, idx):  # (d_x, d_W_enc^T, d_b_enc) of the codes at ``idx`` [B, j] with cotangents ``g``
        return (
            _gather_sum(g, idx, W_t),
            _scatter_outer(g, idx, x, W_t.shape[0]),
            jnp.zeros(W_t.shape[0], g.dtype).at[idx.reshape(-1)].add(g.reshape(-1)),
        )

    relu = (values > 0).astype(values.dtype)
    d_x, d_W_t, d_b_enc = slots(cotangents[0] * relu[:, :k], indices[:, :k])
    if k_aux:  # AuxK slots only cost a pass when some latent is dead (their values are 0 otherwise)
        aux = jax.lax.cond(
            jnp.any(dead),
            lambda: slots(cotangents[2] * relu[:, k:], indices[:, k:]),
            lambda: jax.tree_util.tree_map(jnp.zeros_like, (d_x, d_W_t, d_b_enc)),
        )
        d_x, d_W_t, d_b_enc = (a + b for a, b in zip((d_x, d_W_t, d_b_enc), aux, strict=True))
    return d_x, d_W_t.T, d_b_enc, _int_zero(dead)


topk_encode.defvjp(_topk_encode_fwd, _topk_encode_bwd)
