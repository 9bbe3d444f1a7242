"""tora.ops against naive numpy references written here (loops over tokens, frames, patches, positions)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxzoo
from tora import ops

RNG = np.random.default_rng(0)


def softmax(a):
    a = a - a.max()
    e = np.exp(a)
    return e / e.sum()


def naive_attention(q, k, v, key_mask=None):
    """q [Lq, N, D], k, v [Lk, N, D] -> [Lq, N, D], one query and head at a time."""
    lq, n, d = q.shape
    out = np.zeros((lq, n, d))
    for h in range(n):
        for i in range(lq):
            s = np.array([q[i, h] @ k[j, h] / math.sqrt(d) for j in range(k.shape[0])])
            if key_mask is not None:
                s = np.where(key_mask, s, -np.inf)
            p = softmax(s)
            out[i, h] = sum(p[j] * v[j, h] for j in range(k.shape[0]))
    return out


def test_timestep_embedding_matches_numpy():
    t = np.array([0.0, 3.5, 999.0], np.float32)
    for dim in (8, 9, 256):
        got = np.asarray(ops.timestep_embedding(jnp.asarray(t), dim))
        half = dim // 2
        want = np.zeros((3, dim))
        for b in range(3):
            for i in range(half):
                f = math.exp(-math.log(10000) * i / half)
                want[b, i] = math.cos(t[b] * f)
                want[b, half + i] = math.sin(t[b] * f)
        np.testing.assert_allclose(got[:2], want[:2], atol=1e-5)
        # At t = 999 one float32 ulp of the frequency moves the argument by up to 999 * 2^-24 ~ 6e-5 (torch
        # float32 has the same error), so this row is compared at 1e-4.
        np.testing.assert_allclose(got[2], want[2], atol=1e-4)


def opensora_pos_embed(h, w, dim, scale, base_size):
    """Open-Sora's PositionEmbedding2D._get_cached_emb transcribed line by line (with its name swap)."""
    half = dim // 2
    inv_freq = 1.0 / (10000 ** (np.arange(0, half, 2) / half))

    def sincos(t):
        out = np.einsum("i,d->id", t, inv_freq)
        return np.concatenate([np.sin(out), np.cos(out)], -1)

    grid_h = np.arange(h) / scale
    grid_w = np.arange(w) / scale
    if base_size is not None:
        grid_h = grid_h * (base_size / h)
        grid_w = grid_w * (base_size / w)
    grid_h, grid_w = np.meshgrid(grid_w, grid_h, indexing="ij")  # here w goes first
    grid_h = grid_h.T.reshape(-1)
    grid_w = grid_w.T.reshape(-1)
    return np.concatenate([sincos(grid_h), sincos(grid_w)], -1)


@pytest.mark.parametrize(
    "h,w,dim,height,width", [(4, 4, 16, 64, 64), (3, 5, 32, 48, 80), (6, 2, 8, 720, 1280)]
)
def test_pos_embed_2d_matches_opensora(h, w, dim, height, width):
    scale, base = ops.pos_embed_scale(h, w, height=height, width=width, input_sq_size=512)
    assert scale == pytest.approx(math.sqrt(height * width) / 512) and base == round(math.sqrt(h * w))
    got = ops.pos_embed_2d(h, w, dim, scale, base)
    np.testing.assert_allclose(got, opensora_pos_embed(h, w, dim, scale, base), atol=1e-5)
    # row r of the grid (h coordinate) only changes the second half
    g = got.reshape(h, w, dim)
    np.testing.assert_allclose(g[0, :, : dim // 2], g[-1, :, : dim // 2], atol=1e-6)


@pytest.mark.parametrize("d", [2, 8, 12])
def test_rope_matches_rotation_of_pairs(d):
    length, n = 5, 2
    x = RNG.normal(size=(3, length, n, d)).astype(np.float32)
    pos = np.array([0, 1, 2, 7, 11])
    got = np.asarray(jaxzoo.rope(jnp.asarray(x), jnp.asarray(pos), theta=10000.0, mode="interleaved"))
    want = np.zeros_like(x, dtype=np.float64)
    for b in range(3):
        for li, p in enumerate(pos):
            for h in range(n):
                for i in range(d // 2):
                    ang = p * 10000.0 ** (-2 * i / d)
                    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
                    want[b, li, h, 2 * i : 2 * i + 2] = rot @ x[b, li, h, 2 * i : 2 * i + 2]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    # relative position property: <rope(q, m), rope(k, n)> depends on m - n only
    q, k = x[0, 0, 0], x[0, 1, 0]
    rq = lambda v, p: np.asarray(jaxzoo.rope(jnp.asarray(v)[None, None], jnp.asarray([p]), mode="interleaved"))[0, 0]
    assert np.dot(rq(q, 3), rq(k, 1)) == pytest.approx(np.dot(rq(q, 9), rq(k, 7)), abs=1e-4)


def test_norms_and_modulate_match_numpy():
    x = RNG.normal(size=(4, 6)).astype(np.float32) * 3 + 1
    w = RNG.normal(size=(6,)).astype(np.float32)
    ln = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(jaxzoo.layer_norm(jnp.asarray(x), eps=1e-6), ln, atol=1e-5)
    rms = w * x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(jaxzoo.rms_norm(jnp.asarray(x), jnp.asarray(w)), rms, atol=1e-5)
    sh, sc = RNG.normal(size=(2, 6)).astype(np.float32)
    np.testing.assert_allclose(ops.modulate(jnp.asarray(x), sh, sc), x * (1 + sc) + sh, atol=1e-5)


@pytest.mark.parametrize("b,t,s,n,d", [(1, 3, 4, 2, 4), (2, 2, 5, 1, 8)])
def test_spatial_and_temporal_attention_match_loops(b, t, s, n, d):
    q, k, v = (RNG.normal(size=(b, t, s, n, d)).astype(np.float32) for _ in range(3))
    sp = np.asarray(ops.spatial_attention(*map(jnp.asarray, (q, k, v))))
    tp = np.asarray(ops.temporal_attention(*map(jnp.asarray, (q, k, v))))
    for bi in range(b):
        for ti in range(t):  # spatial: the S patches of frame ti
            np.testing.assert_allclose(
                sp[bi, ti], naive_attention(q[bi, ti], k[bi, ti], v[bi, ti]), atol=1e-5
            )
        for si in range(s):  # temporal: the T frames of patch si
            want = naive_attention(q[bi, :, si], k[bi, :, si], v[bi, :, si])
            np.testing.assert_allclose(tp[bi, :, si], want, atol=1e-5)


def test_attention_key_mask_matches_loops():
    b, lq, lk, n, d = 2, 3, 5, 2, 4
    q = RNG.normal(size=(b, lq, n, d)).astype(np.float32)
    k, v = (RNG.normal(size=(b, lk, n, d)).astype(np.float32) for _ in range(2))
    mask = np.array([[1, 1, 0, 1, 0], [1, 0, 0, 0, 0]], bool)
    got = np.asarray(jaxzoo.dot_product_attention(*map(jnp.asarray, (q, k, v)), mask=jnp.asarray(mask)))
    for bi in range(b):
        np.testing.assert_allclose(got[bi], naive_attention(q[bi], k[bi], v[bi], mask[bi]), atol=1e-5)


def test_attention_and_rope_gradients_match_finite_differences():
    q, k, v = (jnp.asarray(RNG.normal(size=(1, 3, 2, 2, 4)), jnp.float32) for _ in range(3))
    # check_grads compares reverse mode to central differences; f32 needs its default 1e-2 tolerance.
    check_grads(jax.jit(ops.temporal_attention), (q, k, v), order=1, modes=("rev",))
    check_grads(
        jax.jit(lambda x: jaxzoo.rope(x, jnp.arange(3), mode="interleaved")), (q[0, :, 0],), order=1, modes=("rev",)
    )


@pytest.mark.parametrize("shape,patch", [((1, 3, 4, 6, 2), (1, 2, 2)), ((2, 3, 5, 3, 1), (2, 2, 2))])
def test_patchify_matches_loops_and_inverts(shape, patch):
    x = RNG.normal(size=shape).astype(np.float32)
    got = np.asarray(ops.patchify(jnp.asarray(x), patch))
    b, t, h, w, c = shape
    pt, ph, pw = patch
    tp, hp, wp = ops.padded_size((t, h, w), patch)
    xp = np.zeros((b, tp, hp, wp, c), np.float32)
    xp[:, :t, :h, :w] = x
    assert got.shape == (b, tp // pt, hp // ph, wp // pw, pt * ph * pw * c)
    for i in range(tp // pt):
        for j in range(hp // ph):
            for k in range(wp // pw):
                feat = [
                    xp[:, i * pt + a, j * ph + r, k * pw + s, ch]
                    for a in range(pt)
                    for r in range(ph)
                    for s in range(pw)
                    for ch in range(c)
                ]
                np.testing.assert_array_equal(got[:, i, j, k], np.stack(feat, -1))
    np.testing.assert_array_equal(ops.unpatchify(jnp.asarray(got), patch, (t, h, w), c), x)


def test_timestep_shift_formula():
    t = np.linspace(0, 1, 11).astype(np.float32)
    # Open-Sora: 51 frames at 480x854 -> ratio = sqrt(480*854/512^2) * sqrt(51 // 17 * 5)
    ratio = ops.shift_ratio(480, 854, ops.opensora_latent_frames(51))
    assert float(ratio) == pytest.approx(math.sqrt(480 * 854 / 512**2) * math.sqrt(15), rel=1e-6)
    got = np.asarray(ops.timestep_shift(jnp.asarray(t), ratio))
    np.testing.assert_allclose(got, [float(ratio) * v / (1 + (float(ratio) - 1) * v) for v in t], atol=1e-6)
    assert got[0] == 0 and got[-1] == pytest.approx(1.0) and np.all(got >= t - 1e-7)  # shifted towards noise
    # Open-Sora's bug (#601): num_frames // 17 * 5 = 0 below 17 frames makes every t zero. Not here.
    assert ops.opensora_latent_frames(16) == 4 and ops.opensora_latent_frames(1) == 1
    short = np.asarray(
        ops.timestep_shift(jnp.asarray(t), ops.shift_ratio(256, 256, ops.opensora_latent_frames(16)))
    )
    assert np.all(short[1:] > 0)


def test_rf_interpolate_and_masked_mse_match_numpy():
    x0, noise, pred = (RNG.normal(size=(2, 3, 2, 2, 1)).astype(np.float32) for _ in range(3))
    t = np.array([0.25, 1.0], np.float32)
    xt = np.asarray(ops.rf_interpolate(jnp.asarray(x0), jnp.asarray(noise), jnp.asarray(t)))
    np.testing.assert_allclose(xt[0], 0.75 * x0[0] + 0.25 * noise[0], atol=1e-6)
    np.testing.assert_allclose(xt[1], noise[1], atol=1e-6)
    mask = np.array([[True, False, True], [False, False, True]])
    got = float(ops.masked_frame_mse(jnp.asarray(pred), jnp.asarray(x0), jnp.asarray(mask)))
    per = []
    for b in range(2):
        vals = [(pred[b, f] - x0[b, f]) ** 2 for f in range(3) if mask[b, f]]
        per.append(np.mean(np.stack(vals)))
    assert got == pytest.approx(np.mean(per), rel=1e-5)
    assert float(ops.masked_frame_mse(jnp.asarray(pred), jnp.asarray(x0))) == pytest.approx(
        np.mean((pred - x0) ** 2), rel=1e-5
    )


def test_frame_select_picks_per_frame():
    a, b_ = jnp.ones((2, 3, 2, 2, 1)), jnp.zeros((2, 3, 2, 2, 1))
    m = jnp.array([[True, False, True], [False, True, True]])
    got = np.asarray(ops.frame_select(m, a, b_))
    np.testing.assert_array_equal(got[:, :, 0, 0, 0], np.asarray(m, np.float32))
    assert jax.numpy.array_equal(ops.frame_select(None, a, b_), a)
