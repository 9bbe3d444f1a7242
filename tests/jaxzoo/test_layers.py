"""The layer kit against slow numpy loops: attention (masks, causal, GQA, dropout path, fully masked
rows -> zeros), LayerNorm / RMSNorm / GroupNorm, RoPE in both pair conventions, parameter counting."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxzoo

RNG = np.random.default_rng(0)


def np_attention(q, k, v, mask, scale):
    """Loops over batch, heads and queries; a query with no visible key gives zeros."""
    b, lq, h, d = q.shape
    lk, kh = k.shape[1], k.shape[2]
    out = np.zeros((b, lq, h, v.shape[-1]))
    for bi in range(b):
        for hi in range(h):
            kv = hi // (h // kh)
            for i in range(lq):
                keys = [j for j in range(lk) if mask[bi, hi, i, j]]
                if not keys:
                    continue
                s = np.array([q[bi, i, hi] @ k[bi, j, kv] * scale for j in keys])
                p = np.exp(s - s.max())
                p /= p.sum()
                out[bi, i, hi] = sum(pj * v[bi, j, kv] for pj, j in zip(p, keys))
    return out


@pytest.mark.parametrize(  # dv == d takes jax.nn's fused kernel, dv != d the explicit softmax
    "b, lq, lk, h, kh, dv, causal", [(2, 5, 5, 2, 2, 8, True), (2, 3, 6, 4, 2, 4, False), (2, 4, 4, 2, 1, 4, True)]
)
def test_attention_matches_numpy_with_masks(b, lq, lk, h, kh, dv, causal):
    q = RNG.normal(size=(b, lq, h, 8)).astype(np.float32)
    k = RNG.normal(size=(b, lk, kh, 8)).astype(np.float32)
    v = RNG.normal(size=(b, lk, kh, dv)).astype(np.float32)
    key_mask = RNG.random((b, lk)) > 0.3
    key_mask[0, :] = False  # a batch row with every key masked
    full = np.broadcast_to(key_mask[:, None, None, :], (b, h, lq, lk)).copy()
    if causal:
        full &= np.tril(np.ones((lq, lk), bool))[None, None]
    want = np_attention(q, k, v, full, 8**-0.5)
    got = jaxzoo.dot_product_attention(q, k, v, mask=key_mask, is_causal=causal)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(got)[0] == 0.0)  # fully masked rows are exactly zero


@pytest.mark.parametrize("window, causal, lq", [((2, 2), False, 7), ((3, 0), True, 7), (1, False, 4)])
def test_attention_local_window_matches_numpy(window, causal, lq):
    """Sliding-window attention: query i (aligned at the end of the keys) sees keys i-left .. i+right."""
    b, lk, h = 2, 7, 2
    q = RNG.normal(size=(b, lq, h, 4)).astype(np.float32)
    k = RNG.normal(size=(b, lk, h, 4)).astype(np.float32)
    v = RNG.normal(size=(b, lk, h, 4)).astype(np.float32)
    left, right = (window, window) if isinstance(window, int) else window
    key_mask = np.ones((b, lk), bool)
    key_mask[1, 0] = False
    full = np.zeros((b, h, lq, lk), bool)
    for i in range(lq):
        pos = i + lk - lq
        for j in range(lk):
            full[:, :, i, j] = (pos - left <= j <= pos + right) and (not causal or j <= pos)
    full &= key_mask[:, None, None, :]
    want = np_attention(q, k, v, full, 0.5)
    got = jaxzoo.dot_product_attention(q, k, v, mask=key_mask, is_causal=causal, local_window=window)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="local_window"):
        jaxzoo.dot_product_attention(q, k, v, local_window=(-1, 2))


def test_attention_dropout_is_rescaled_and_needs_a_key():
    q = k = v = jnp.ones((1, 4, 1, 2))
    out = jaxzoo.dot_product_attention(q, k, v, dropout_rate=0.5, dropout_rng=jax.random.key(0))
    assert set(np.unique(np.round(np.asarray(out), 5))) <= {0.0, 0.5, 1.0, 1.5, 2.0}
    with pytest.raises(ValueError, match="needs dropout_rng"):
        jaxzoo.dot_product_attention(q, k, v, dropout_rate=0.1)
    with pytest.raises(ValueError, match="rank 4"):
        jaxzoo.dot_product_attention(q[0], k[0], v[0])
    with pytest.raises(ValueError, match="must be equal and divide"):
        jaxzoo.dot_product_attention(jnp.ones((1, 4, 3, 2)), jnp.ones((1, 4, 2, 2)), jnp.ones((1, 4, 2, 2)))
    with pytest.raises(ValueError, match=r"\[B, Lk\]"):
        jaxzoo.dot_product_attention(q, k, v, mask=jnp.ones((1, 3), bool))


def test_norms_match_numpy_loops():
    x = RNG.normal(size=(2, 3, 4, 6)).astype(np.float32) * 3 + 1
    scale, bias = RNG.normal(size=6).astype(np.float32), RNG.normal(size=6).astype(np.float32)
    ln = np.zeros_like(x)
    rms = np.zeros_like(x)
    for idx in np.ndindex(x.shape[:-1]):
        row = x[idx].astype(np.float64)
        ln[idx] = (row - row.mean()) / np.sqrt(row.var() + 1e-5) * scale + bias
        rms[idx] = row / np.sqrt((row**2).mean() + 1e-6) * scale
    np.testing.assert_allclose(jaxzoo.layer_norm(x, scale, bias, 1e-5), ln, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jaxzoo.rms_norm(x, scale, 1e-6), rms, rtol=1e-5, atol=1e-5)
    # group norm: 2 groups of 3 channels, stats over (H, W) and the group's channels, per batch row
    gn = np.zeros_like(x)
    for bi in range(2):
        for g in range(2):
            block = x[bi, :, :, 3 * g : 3 * g + 3].astype(np.float64)
            gn[bi, :, :, 3 * g : 3 * g + 3] = (block - block.mean()) / np.sqrt(block.var() + 1e-5)
    gn = gn * scale + bias
    np.testing.assert_allclose(jaxzoo.group_norm(x, 2, scale, bias, 1e-5), gn, rtol=1e-5, atol=1e-5)
    # per-frame statistics: reduce over axis 2 only
    per = np.zeros_like(x)
    for bi, ti in np.ndindex(2, 3):
        for g in range(2):
            block = x[bi, ti, :, 3 * g : 3 * g + 3].astype(np.float64)
            per[bi, ti, :, 3 * g : 3 * g + 3] = (block - block.mean()) / np.sqrt(block.var() + 1e-5)
    np.testing.assert_allclose(jaxzoo.group_norm(x, 2, reduce_axes=(2,)), per, rtol=1e-5, atol=1e-5)
    bf = jaxzoo.layer_norm(jnp.asarray(x, jnp.bfloat16), scale, bias)
    assert bf.dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="cannot be split into 4 groups"):
        jaxzoo.group_norm(x, 4)


def test_norm_modules_have_named_params_and_shard():
    mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
    x = jnp.ones((4, 3, 8))
    for module, names in [(jaxzoo.LayerNorm(), {"scale", "bias"}), (jaxzoo.RMSNorm(), {"scale"}),
                          (jaxzoo.GroupNorm(num_groups=2, axis_name="mlp"), {"scale", "bias"})]:
        variables, shardings = jaxzoo.init_sharded(module, jax.random.key(0), x, mesh=mesh)
        assert set(variables["params"]) == names
        np.testing.assert_allclose(module.apply(variables, x), jnp.zeros_like(x) if names != {"scale"} else x,
                                   atol=1e-3)
    assert shardings["params"]["scale"].spec == jax.sharding.PartitionSpec("model")


@pytest.mark.parametrize("mode", ["half", "interleaved"])
def test_rope_matches_rotations(mode):
    x = RNG.normal(size=(2, 5, 3, 8)).astype(np.float32)
    pos = np.array([0, 1, 2, 7, 11])
    want = x.astype(np.float64).copy()
    for li, p in enumerate(pos):
        for i in range(4):
            a, b = (i, i + 4) if mode == "half" else (2 * i, 2 * i + 1)
            ang = p * 10000.0 ** (-2 * i / 8)
            c, s = np.cos(ang), np.sin(ang)
            xa, xb = x[:, li, :, a], x[:, li, :, b]
            want[:, li, :, a] = xa * c - xb * s
            want[:, li, :, b] = xb * c + xa * s
    got = jaxzoo.rope(x, pos, mode=mode)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    batched = jaxzoo.rope(x, np.stack([pos, pos]), mode=mode)
    np.testing.assert_allclose(batched, want, rtol=1e-5, atol=1e-5)
    partial = jaxzoo.rope(x, pos, mode=mode, rotary_dim=4)
    np.testing.assert_array_equal(np.asarray(partial)[..., 4:], x[..., 4:])


def test_rope_errors_and_param_count():
    with pytest.raises(ValueError, match="mode must be one of"):
        jaxzoo.rope(jnp.ones((1, 2, 1, 4)), jnp.arange(2), mode="spiral")
    with pytest.raises(ValueError, match="even rotary_dim"):
        jaxzoo.rope(jnp.ones((1, 2, 1, 5)), jnp.arange(2))
    with pytest.raises(ValueError, match="positions must be"):
        jaxzoo.rope(jnp.ones((1, 2, 1, 4)), jnp.arange(3))
    boxed = jaxzoo.DenseGeneral((3, 2), ("embed", "heads", "head_dim")).init(jax.random.key(0), jnp.ones((1, 4)))
    assert jaxzoo.param_count(boxed) == 4 * 6 + 6
    assert jaxzoo.param_count(jax.eval_shape(lambda: nn.meta.unbox(boxed))) == 30


def test_axis_vocabulary_check():
    boxed = jaxzoo.DenseGeneral((3,), ("embed", "mlp")).init(jax.random.key(0), jnp.ones((1, 4)))
    assert jaxzoo.check_axis_names(boxed) == {"embed", "mlp"}
    odd = jaxzoo.DenseGeneral((3,), ("embed", "kv")).init(jax.random.key(0), jnp.ones((1, 4)))
    with pytest.raises(ValueError, match=r"\['kv'\] are not in jaxzoo.AXES"):
        jaxzoo.check_axis_names(odd)


def np_conv(x, w, b, strides, pad):
    """Direct loops: out[n, o..., f] = sum over taps and input channels of xpad * w, + b."""
    xp = np.pad(x, [(0, 0), *pad, (0, 0)])
    k = w.shape[:-2]
    out_shape = [(xp.shape[1 + i] - k[i]) // strides[i] + 1 for i in range(len(k))]
    out = np.zeros((x.shape[0], *out_shape, w.shape[-1]))
    for n in range(x.shape[0]):
        for o in np.ndindex(*out_shape):
            sl = tuple(slice(o[i] * strides[i], o[i] * strides[i] + k[i]) for i in range(len(k)))
            out[(n, *o)] = np.tensordot(xp[(n, *sl)], w, axes=len(k) + 1) + b
    return out


@pytest.mark.parametrize("k, strides, padding", [((3,), (1,), None), ((3, 3), (2, 2), None),
                                                  ((3, 3, 3), (2, 1, 1), "causal"), ((2, 3), (1, 1), ((1, 0), (0, 2)))])
def test_conv_matches_numpy_loops_and_shards(k, strides, padding):
    nd = len(k)
    x = RNG.normal(size=(2, *([5] * nd), 3)).astype(np.float32)
    conv = jaxzoo.Conv(4, k, strides, padding)
    variables = conv.init(jax.random.key(0), x)
    w, b = np.asarray(variables["params"]["kernel"].unbox()), np.asarray(variables["params"]["bias"].unbox())
    assert w.shape == (*k, 3, 4) and np.abs(w).max() <= (3 * np.prod(k)) ** -0.5  # torch's U(+-1/sqrt(fan_in))
    b = RNG.normal(size=4).astype(np.float32)
    params = {"kernel": w, "bias": b}
    if padding is None:
        pad = [(kk // 2, kk // 2) for kk in k]
    elif padding == "causal":
        pad = [(k[0] - strides[0], 0)] + [(kk // 2, kk // 2) for kk in k[1:]]
    else:
        pad = list(padding)
    want = np_conv(x, w, b, strides, pad)
    got = conv.apply({"params": params}, x)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
    sharded, _ = jaxzoo.init_sharded(jaxzoo.Conv(4, k, strides, padding), jax.random.key(0), x, mesh=mesh)
    assert sharded["params"]["kernel"].shape == (*k, 3, 4)


def test_conv_errors():
    with pytest.raises(ValueError, match="expects x"):
        jaxzoo.Conv(4, (3, 3)).init(jax.random.key(0), jnp.ones((2, 5, 3)))
    with pytest.raises(ValueError, match="padding must be"):
        jaxzoo.Conv(4, (3,), padding="same").init(jax.random.key(0), jnp.ones((2, 5, 3)))
