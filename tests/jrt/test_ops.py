"""jrt.ops against slow numpy loops over positions written here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxzoo
import jrt
from jrt import ops

# ----------------------------------------------------------------------------------------------------
# Slow references: explicit feature vectors, loops over batch, head, query and key positions (float64).


def np_phi(x):
    f = x.shape[-1]
    return np.concatenate([[1.0], x / f**0.25, np.outer(x, x).reshape(-1) / np.sqrt(2 * f)])


def np_pla(q, k, v, k_enc=None, v_enc=None, mask=None, eps=1e-12):
    """Loops: y[b, i, h] = (sum_{j<=i} w_j K(q_i,k_j) v_j + sum_{j<M} w_j K(q_i,ke_j) ve_j) / (den + eps)."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    b_, n, h_, _ = q.shape
    w = np.ones((b_, n)) if mask is None else np.asarray(mask, np.float64)
    y = np.zeros(v.shape)
    for b in range(b_):
        for h in range(h_):
            for i in range(n):
                pq = np_phi(q[b, i, h])
                num = np.zeros(v.shape[-1])
                den = 0.0
                for j in range(i + 1):
                    a = w[b, j] * pq @ np_phi(k[b, j, h])
                    num += a * v[b, j, h]
                    den += a
                if k_enc is not None:
                    for j in range(k_enc.shape[1]):
                        a = w[b, j] * pq @ np_phi(np.float64(k_enc[b, j, h]))
                        num += a * np.float64(v_enc[b, j, h])
                        den += a
                y[b, i, h] = num / (den + eps)
    return y


def rand(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def left_pad_mask(rng, b, n):
    lens = rng.integers(1, n + 1, size=b)
    return np.arange(n)[None, :] >= (n - lens)[:, None]


SHAPES = [(1, 5, 1, 2, 3), (2, 9, 2, 4, 3), (2, 16, 3, 3, 5)]  # B, L, H, f, dv


def test_taylor_feature_map_matches_kernel_and_loops():
    rng = np.random.default_rng(0)
    for f in (1, 3, 16):
        q, k = rand(rng, 4, f), rand(rng, 4, f)
        pq = np.asarray(jrt.taylor_feature_map(jnp.asarray(q)))
        assert pq.shape == (4, 1 + f + f * f)
        np.testing.assert_allclose(
            pq, np.stack([np_phi(x.astype(np.float64)) for x in q]), rtol=1e-5, atol=1e-6
        )
        dot = np.einsum("nF,nF->n", pq, np.asarray(jrt.taylor_feature_map(jnp.asarray(k))))
        s = np.einsum("nf,nf->n", q.astype(np.float64), k) / np.sqrt(f)
        np.testing.assert_allclose(dot, 1 + s + s**2 / 2, rtol=1e-5)


LA_CASES = [  # (B, L, H, f, dv), chunk_size, padded
    (SHAPES[0], None, False),
    (SHAPES[0], 1, True),
    (SHAPES[1], 4, True),
    (SHAPES[2], None, True),
    (SHAPES[2], 7, False),
]


@pytest.mark.parametrize("shape,chunk_size,padded", LA_CASES)
def test_linear_attention_vs_loops(shape, chunk_size, padded):
    b, n, h, f, dv = shape
    rng = np.random.default_rng(n * 7 + (chunk_size or 0))
    q, k, v = rand(rng, b, n, h, f), rand(rng, b, n, h, f), rand(rng, b, n, h, dv)
    mask = left_pad_mask(rng, b, n) if padded else None
    y = jrt.linear_attention(q, k, v, mask=mask, chunk_size=chunk_size)
    want = np_pla(q, k, v, mask=mask)
    if mask is not None:  # a padded query sees no real key: both give 0 / eps = 0
        want = want * mask[..., None, None]
        y = y * mask[..., None, None]
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-5, atol=1e-5)


PLA_CASES = [  # (B, L, H, f, dv), M, chunk_size, padded
    (SHAPES[0], 0, None, False),
    (SHAPES[0], 5, 3, True),
    (SHAPES[1], 4, None, True),
    (SHAPES[1], 9, 4, False),
    (SHAPES[2], 8, 8, True),
    (SHAPES[2], 16, 3, True),
    (SHAPES[2], 0, 5, True),
]


@pytest.mark.parametrize("shape,m,chunk_size,padded", PLA_CASES)
def test_prefix_linear_attention_vs_loops(shape, m, chunk_size, padded):
    b, n, h, f, dv = shape
    rng = np.random.default_rng(n + m * 3 + (chunk_size or 0))
    q, k, v = rand(rng, b, n, h, f), rand(rng, b, n, h, f), rand(rng, b, n, h, dv)
    ke, ve = rand(rng, b, m, h, f), rand(rng, b, m, h, dv)
    mask = left_pad_mask(rng, b, n) if padded else None
    if mask is not None and m > 0:
        mask[:, -1] = True  # the last token is always real
    y = jrt.prefix_linear_attention(q, k, v, ke, ve, mask=mask, chunk_size=chunk_size)
    want = np_pla(q, k, v, ke, ve, mask=mask)
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-5, atol=1e-5)


def test_padding_contributes_nothing():
    """Changing padded tokens' keys/values (and encoder entries) leaves real positions unchanged."""
    rng = np.random.default_rng(1)
    b, n, h, f, dv, m = 2, 10, 2, 3, 4, 6
    q, k, v = rand(rng, b, n, h, f), rand(rng, b, n, h, f), rand(rng, b, n, h, dv)
    ke, ve = rand(rng, b, m, h, f), rand(rng, b, m, h, dv)
    mask = np.arange(n)[None] >= np.array([[3], [5]])
    pad = ~mask[..., None, None]
    k2, v2 = np.where(pad, rand(rng, b, n, h, f), k), np.where(pad, rand(rng, b, n, h, dv), v)
    ke2, ve2 = np.where(pad[:, :m], 0.0, ke), np.where(pad[:, :m], 9.0, ve)  # phi(0) = e0 != 0
    for chunk in (None, 4):
        y1 = jrt.prefix_linear_attention(q, k, v, ke, ve, mask=mask, chunk_size=chunk)
        y2 = jrt.prefix_linear_attention(q, k2, v2, ke2, ve2, mask=mask, chunk_size=chunk)
        np.testing.assert_allclose(np.asarray(y1) * ~pad, np.asarray(y2) * ~pad, rtol=1e-5, atol=1e-6)
        # a padded token zeroed before phi, as the reference does, would still count: our mask is not that
        y3 = jrt.prefix_linear_attention(q, k, v, ke, ve, mask=None, chunk_size=chunk)
        assert not np.allclose(np.asarray(y1)[~pad[..., 0, 0]], np.asarray(y3)[~pad[..., 0, 0]])


@pytest.mark.parametrize("chunk_size", [5])
def test_chunked_gradients_match_quadratic(chunk_size):
    rng = np.random.default_rng(2)
    b, n, h, f, dv, m = 2, 11, 2, 3, 4, 4
    args = [rand(rng, b, n, h, f), rand(rng, b, n, h, f), rand(rng, b, n, h, dv)]
    args += [rand(rng, b, m, h, f), rand(rng, b, m, h, dv)]
    mask = jnp.asarray(left_pad_mask(rng, b, n) | (np.arange(n) >= n - 1))
    cot = jnp.asarray(rand(rng, b, n, h, dv))

    def loss(chunk, *a):
        return jnp.sum(jrt.prefix_linear_attention(*a, mask=mask, chunk_size=chunk) * cot)

    grad = jax.jit(jax.grad(loss, argnums=(1, 2, 3, 4, 5)), static_argnums=0)
    g_quad, g_chunk = grad(None, *args), grad(chunk_size, *args)
    for a, c in zip(g_quad, g_chunk):
        np.testing.assert_allclose(np.asarray(c), np.asarray(a), rtol=1e-5, atol=1e-5)

    def la_loss(chunk, *a):
        return jnp.sum(jrt.linear_attention(*a, chunk_size=chunk) * cot)

    grad = jax.jit(jax.grad(la_loss, argnums=(1, 2, 3)), static_argnums=0)
    g_quad, g_chunk = grad(None, *args[:3]), grad(chunk_size, *args[:3])
    for a, c in zip(g_quad, g_chunk):
        np.testing.assert_allclose(np.asarray(c), np.asarray(a), rtol=1e-5, atol=1e-5)


def test_quadratic_gradient_vs_finite_differences():
    """Central differences in float64 numpy on the loop reference, against jax.grad of the quadratic form."""
    rng = np.random.default_rng(3)
    b, n, h, f, dv, m = 1, 4, 1, 2, 2, 2
    arrs = [rand(rng, b, n, h, f), rand(rng, b, n, h, f), rand(rng, b, n, h, dv)]
    arrs += [rand(rng, b, m, h, f), rand(rng, b, m, h, dv)]
    cot = rand(rng, b, n, h, dv).astype(np.float64)
    grads = jax.grad(lambda *a: jnp.sum(jrt.prefix_linear_attention(*a) * cot), argnums=(0, 1, 2, 3, 4))(
        *arrs
    )
    delta = 1e-6
    for which, (x, g) in enumerate(zip(arrs, grads)):
        for idx in np.ndindex(x.shape):
            plus = [a.astype(np.float64).copy() for a in arrs]
            minus = [a.astype(np.float64).copy() for a in arrs]
            plus[which][idx] += delta
            minus[which][idx] -= delta
            fd = (np.sum(np_pla(*plus) * cot) - np.sum(np_pla(*minus) * cot)) / (2 * delta)
            # float32 forward/backward vs float64 differences: relative 1e-4 covers float32 rounding
            # through the L-term sums (the values are O(1..10)).
            np.testing.assert_allclose(float(g[idx]), fd, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("with_encoder,padded", [(False, True), (True, False), (True, True)])
def test_prefill_then_decode_equals_parallel(with_encoder, padded):
    rng = np.random.default_rng(4)
    b, n, h, f, dv, m, p = 2, 12, 2, 3, 4, 5, 6  # decode positions p..n-1 after a prompt of p tokens
    q, k, v = rand(rng, b, n, h, f), rand(rng, b, n, h, f), rand(rng, b, n, h, dv)
    ke, ve = (rand(rng, b, m, h, f), rand(rng, b, m, h, dv)) if with_encoder else (None, None)
    mask = np.ones((b, n), bool)
    if padded:
        mask[0, :2] = False
        mask[1, :4] = False
    if with_encoder:
        full = jrt.prefix_linear_attention(q, k, v, ke, ve, mask=mask)
    else:
        full = jrt.linear_attention(q, k, v, mask=mask)
    state = jrt.prefill(k[:, :p], v[:, :p], ke, ve, mask=mask[:, :p])
    assert state.kv.shape == (b, h, 1 + f + f * f, dv) and state.k_sum.shape == (b, h, 1 + f + f * f)
    for t in range(p, n):
        y, state = jrt.decode_step(state, q[:, t], k[:, t], v[:, t])
        np.testing.assert_allclose(np.asarray(y), np.asarray(full[:, t]), rtol=1e-5, atol=1e-5)


def test_bfloat16_inputs_accumulate_in_float32():
    """bf16 inputs: outputs equal the float64 loops on the bf16-rounded inputs up to bf16 output rounding."""
    rng = np.random.default_rng(5)
    b, n, h, f, dv, m = 2, 8, 2, 4, 3, 3
    q, k, v = (jnp.asarray(rand(rng, b, n, h, d), jnp.bfloat16) for d in (f, f, dv))
    ke, ve = (
        jnp.asarray(rand(rng, b, m, h, f), jnp.bfloat16),
        jnp.asarray(rand(rng, b, m, h, dv), jnp.bfloat16),
    )
    y = jrt.prefix_linear_attention(q, k, v, ke, ve, chunk_size=4)
    assert y.dtype == jnp.bfloat16
    up = [np.asarray(x, np.float32) for x in (q, k, v, ke, ve)]
    want = np_pla(*up)
    # bf16 has an 8-bit mantissa: one final rounding of the output is a relative error <= 2^-8.
    np.testing.assert_allclose(np.asarray(y, np.float32), want, rtol=2**-8, atol=2**-8)


# ----------------------------------------------------------------------------------------------------
# Sliding-window attention, RoPE, convolution.


def np_swa(q, k, v, window, mask=None):
    b_, n, h_, d = q.shape
    y = np.zeros(v.shape)
    for b in range(b_):
        for h in range(h_):
            for i in range(n):
                js = [j for j in range(max(0, i - window), i + 1) if mask is None or mask[b, j]]
                if not js:
                    continue
                logits = np.array([q[b, i, h] @ k[b, j, h] / np.sqrt(d) for j in js], np.float64)
                p = np.exp(logits - logits.max())
                p /= p.sum()
                y[b, i, h] = sum(pj * v[b, j, h] for pj, j in zip(p, js))
    return y


@pytest.mark.parametrize("window,padded", [(0, True), (3, True), (100, False)])
def test_sliding_window_attention_vs_loops(window, padded):
    rng = np.random.default_rng(window)
    b, n, h, d = 2, 9, 2, 4
    q, k, v = rand(rng, b, n, h, d), rand(rng, b, n, h, d), rand(rng, b, n, h, d)
    mask = left_pad_mask(rng, b, n) if padded else None
    y = ops.sliding_window_attention(q, k, v, window=window, mask=mask)
    np.testing.assert_allclose(np.asarray(y), np_swa(q, k, v, window, mask), rtol=1e-5, atol=1e-5)


def test_rope_vs_loops_and_relative():
    """jrt's SWA uses jaxzoo.rope in "half" mode: the reference's full-head-dim, non-interleaved rotary."""
    rng = np.random.default_rng(6)
    b, n, h, d = 2, 5, 2, 6
    x = rand(rng, b, n, h, d)
    pos = np.arange(n)
    y = np.asarray(jaxzoo.rope(x, pos, mode="half"))
    want = np.zeros_like(x, np.float64)
    for i in range(n):
        for c in range(d // 2):
            ang = pos[i] * 10000.0 ** (-2 * c / d)
            a, bb = x[:, i, :, c], x[:, i, :, c + d // 2]
            want[:, i, :, c] = a * np.cos(ang) - bb * np.sin(ang)
            want[:, i, :, c + d // 2] = bb * np.cos(ang) + a * np.sin(ang)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    # relative: <R_i q, R_j k> depends only on i - j
    q, k = rand(rng, 1, 1, 1, d), rand(rng, 1, 1, 1, d)
    dots = [
        float(jnp.sum(jaxzoo.rope(q, jnp.array([i + s])) * jaxzoo.rope(k, jnp.array([s]))))
        for i, s in [(3, 0), (3, 7)]
    ]
    np.testing.assert_allclose(dots[0], dots[1], rtol=1e-4)


def test_causal_depthwise_conv_vs_loops():
    rng = np.random.default_rng(7)
    x, w = rand(rng, 2, 7, 5), rand(rng, 3, 5)
    y = np.asarray(ops.causal_depthwise_conv(x, w))
    want = np.zeros(x.shape)
    for t in range(7):
        for i in range(3):
            s = t - 2 + i
            if s >= 0:
                want[:, t] += w[i] * x[:, s]
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
