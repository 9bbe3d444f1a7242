"""tora.motion: fuser and extractor maths against numpy loops, identity at init, shapes, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxzoo import group_norm  # Tora's GroupNorm (statistics over H, W and the group) is jaxzoo's
from tora.config import STDiTConfig
from tora.motion import (
    MotionGuidanceFuser,
    TrajectoryExtractor,
    TrajectoryExtractorConfig,
    pixel_unshuffle,
    temporal_conv_replicate,
)

VARIANTS = ("channel", "cross_attention", "adanorm")


# ----------------------------------------------------------------------------- slow references
def ref_pixel_unshuffle(x, r):
    n, h, w, c = x.shape
    out = np.zeros((n, h // r, w // r, c * r * r))
    for b in range(n):
        for y in range(h // r):
            for xx in range(w // r):
                for ch in range(c):
                    for i in range(r):
                        for j in range(r):
                            out[b, y, xx, ch * r * r + i * r + j] = x[b, y * r + i, xx * r + j, ch]
    return out


def ref_group_norm(x, groups, scale, bias, eps=1e-5):
    n, h, w, c = x.shape
    out = np.zeros_like(x, dtype=np.float64)
    size = c // groups
    for b in range(n):
        for g in range(groups):
            vals = [x[b, y, xx, g * size + k] for y in range(h) for xx in range(w) for k in range(size)]
            mu = sum(vals) / len(vals)
            var = sum((v - mu) ** 2 for v in vals) / len(vals)
            for y in range(h):
                for xx in range(w):
                    for k in range(size):
                        ch = g * size + k
                        out[b, y, xx, ch] = (x[b, y, xx, ch] - mu) / np.sqrt(var + eps) * scale[ch] + bias[ch]
    return out


def ref_temporal_conv(x, kernel, bias):
    b, t, h, w, _ = x.shape
    k = kernel.shape[0]
    out = np.zeros((b, t, h, w, kernel.shape[2]))
    for n in range(b):
        for i in range(t):
            for y in range(h):
                for xx in range(w):
                    acc = bias.astype(np.float64).copy()
                    for j in range(k):
                        src = min(max(i + j - k // 2, 0), t - 1)  # replicate padding
                        acc += x[n, src, y, xx] @ kernel[j]
                    out[n, i, y, xx] = acc
    return out


def ref_conv3x3(x, kernel, bias):
    """SAME zero-padded 3x3 correlation on [N, H, W, Cin] with kernel [3, 3, Cin, Cout]."""
    n, h, w, _ = x.shape
    out = np.zeros((n, h, w, kernel.shape[-1]))
    for b in range(n):
        for y in range(h):
            for xx in range(w):
                acc = bias.astype(np.float64).copy()
                for dy in range(3):
                    for dx in range(3):
                        yy, xs = y + dy - 1, xx + dx - 1
                        if 0 <= yy < h and 0 <= xs < w:
                            acc += x[b, yy, xs] @ kernel[dy, dx]
                out[b, y, xx] = acc
    return out


# ----------------------------------------------------------------------------- kernels
@pytest.mark.parametrize("shape,r", [((2, 4, 6, 3), 2), ((1, 6, 3, 2), 3), ((1, 2, 2, 5), 1)])
def test_pixel_unshuffle_matches_loops(shape, r):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(pixel_unshuffle(jnp.asarray(x), r)), ref_pixel_unshuffle(x, r))


def test_pixel_unshuffle_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).normal(size=(2, 3, 4, 6)).astype(np.float32)  # NCHW
    want = torch.nn.PixelUnshuffle(2)(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
    got = np.asarray(pixel_unshuffle(jnp.asarray(x.transpose(0, 2, 3, 1)), 2))
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="divisible by 2"):
        pixel_unshuffle(jnp.zeros((1, 3, 4, 1)), 2)


@pytest.mark.parametrize("shape,groups", [((2, 3, 4, 8), 4), ((1, 2, 2, 6), 3), ((1, 3, 3, 4), 1)])
def test_group_norm_matches_loops_and_grad(shape, groups):
    rng = np.random.default_rng(2)
    x = rng.normal(size=shape).astype(np.float32) * 2 + 1
    scale, bias = rng.normal(size=shape[-1]).astype(np.float32), rng.normal(size=shape[-1]).astype(np.float32)
    got = np.asarray(group_norm(jnp.asarray(x), groups, scale, bias))
    np.testing.assert_allclose(got, ref_group_norm(x.astype(np.float64), groups, scale, bias), atol=1e-5)
    # Gradient against central finite differences of the float64 loop reference.
    w = rng.normal(size=shape)
    g = np.asarray(jax.grad(lambda a: jnp.sum(group_norm(a, groups, scale, bias) * w))(jnp.asarray(x)))
    eps = 1e-4
    for idx in [(0, 0, 0, 0), (0, 1, 1, shape[-1] - 1)]:
        xp, xm = x.astype(np.float64).copy(), x.astype(np.float64).copy()
        xp[idx] += eps
        xm[idx] -= eps
        fd = (
            np.sum(ref_group_norm(xp, groups, scale, bias) * w)
            - np.sum(ref_group_norm(xm, groups, scale, bias) * w)
        ) / (2 * eps)
        np.testing.assert_allclose(g[idx], fd, rtol=1e-3, atol=1e-3)  # float32 grad vs float64 FD


@pytest.mark.parametrize("t,k", [(1, 3), (4, 3), (5, 5)])
def test_temporal_conv_replicate_matches_loops(t, k):
    rng = np.random.default_rng(t)
    x = rng.normal(size=(2, t, 2, 3, 4)).astype(np.float32)
    kernel = rng.normal(size=(k, 4, 5)).astype(np.float32)
    bias = rng.normal(size=5).astype(np.float32)
    got = np.asarray(temporal_conv_replicate(jnp.asarray(x), jnp.asarray(kernel), jnp.asarray(bias)))
    np.testing.assert_allclose(got, ref_temporal_conv(x, kernel, bias), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- fuser
def _hf(seed=0, b=2, t=3, h=2, w=4, c=32, cm=8):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return jax.random.normal(k1, (b, t, h, w, c)), jax.random.normal(k2, (b, t, h, w, cm))


def _perturb(params, seed=1):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [p + 0.3 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


@pytest.mark.parametrize("variant", VARIANTS)
def test_fuser_is_identity_at_init_and_not_after(variant):
    h, f = _hf()
    fuser = MotionGuidanceFuser(variant, hidden_size=32)
    params = nn.meta.unbox(jax.jit(fuser.init)(jax.random.key(0), h, f))["params"]
    np.testing.assert_array_equal(np.asarray(jax.jit(fuser.apply)({"params": params}, h, f)), np.asarray(h))
    moved = jax.jit(fuser.apply)({"params": _perturb(params)}, h, f)
    assert moved.shape == h.shape and float(jnp.abs(moved - h).max()) > 1e-2
    # The motion features matter once trained: a different f gives a different output.
    other = jax.jit(fuser.apply)({"params": _perturb(params)}, h, f + 1.0)
    assert float(jnp.abs(other - moved).max()) > 1e-3

@pytest.mark.slow

def test_adanorm_fuser_matches_numpy():
    h, f = _hf(c=8, cm=3, t=4, h=3, w=3)
    fuser = MotionGuidanceFuser("adanorm", hidden_size=8, num_groups=4)
    p = _perturb(nn.meta.unbox(jax.jit(fuser.init)(jax.random.key(0), h, f))["params"])
    got = np.asarray(jax.jit(fuser.apply)({"params": p}, h, f))
    hn, fn = np.asarray(h, np.float64), np.asarray(f, np.float64)
    b, t = hn.shape[:2]
    gn = ref_group_norm(
        hn.reshape(b * t, 3, 3, 8), 4, np.asarray(p["norm_scale"]), np.asarray(p["norm_bias"])
    )
    out = {}
    for name in ("gamma", "beta"):
        sp = p[f"{name}_spatial"]
        s = ref_conv3x3(fn.reshape(b * t, 3, 3, 3), np.asarray(sp["kernel"]), np.asarray(sp["bias"]))
        out[name] = ref_temporal_conv(
            s.reshape(b, t, 3, 3, -1),
            np.asarray(p[f"{name}_temporal_kernel"]),
            np.asarray(p[f"{name}_temporal_bias"]),
        )
    want = hn + gn.reshape(hn.shape) * out["gamma"] + out["beta"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)  # chained f32 convs over 9*3 + 3*2 terms


@pytest.mark.slow  # > 10 s on 2 cores; CI's second pass runs it
def test_channel_and_cross_attention_fusers_match_numpy():
    h, f = _hf(c=8, cm=3, t=2, h=2, w=3)
    hn, fn = np.asarray(h, np.float64), np.asarray(f, np.float64)
    gelu = lambda z: 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))
    fuser = MotionGuidanceFuser("channel", hidden_size=8)
    p = _perturb(nn.meta.unbox(jax.jit(fuser.init)(jax.random.key(0), h, f))["params"])
    z = np.concatenate([hn, fn], -1)
    z = gelu(z @ np.asarray(p["fc1"]["kernel"]) + np.asarray(p["fc1"]["bias"]))
    want = hn + z @ np.asarray(p["fc2"]["kernel"]) + np.asarray(p["fc2"]["bias"])
    np.testing.assert_allclose(
        np.asarray(jax.jit(fuser.apply)({"params": p}, h, f)), want, rtol=1e-5, atol=1e-5
    )

    fuser = MotionGuidanceFuser("cross_attention", hidden_size=8, head_dim=4)  # 2 heads of 4
    p = _perturb(nn.meta.unbox(jax.jit(fuser.init)(jax.random.key(0), h, f))["params"])
    got = np.asarray(jax.jit(fuser.apply)({"params": p}, h, f))
    b, t, hh, ww, _ = hn.shape
    want = hn.copy()
    wq, bq = np.asarray(p["q_linear"]["kernel"]), np.asarray(p["q_linear"]["bias"])
    wkv, bkv = np.asarray(p["kv_linear"]["kernel"]), np.asarray(p["kv_linear"]["bias"])
    wo, bo = np.asarray(p["proj"]["kernel"]), np.asarray(p["proj"]["bias"])
    for n in range(b):
        for i in range(t):  # each token sees the motion patches of its own frame
            q_tok = hn[n, i].reshape(-1, 8)
            m_tok = fn[n, i].reshape(-1, 3)
            for s in range(q_tok.shape[0]):
                o = np.zeros((2, 4))
                for head in range(2):
                    q = q_tok[s] @ wq[:, head] + bq[head]
                    ks = m_tok @ wkv[:, 0, head] + bkv[0, head]
                    vs = m_tok @ wkv[:, 1, head] + bkv[1, head]
                    logit = ks @ q / 2.0
                    a = np.exp(logit - logit.max())
                    o[head] = (a / a.sum()) @ vs
                y, x = divmod(s, ww)
                want[n, i, y, x] += np.einsum("nd,ndc->c", o, wo) + bo
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_fuser_errors():
    h, f = _hf()
    with pytest.raises(ValueError, match="variant must be one of"):
        MotionGuidanceFuser("film", hidden_size=32).init(jax.random.key(0), h, f)
    with pytest.raises(ValueError, match="motion_fuser must be one of"):
        STDiTConfig.tiny(motion_fuser="film", motion_channels=8)
    with pytest.raises(ValueError, match="on h's grid"):
        MotionGuidanceFuser("adanorm", hidden_size=32).init(jax.random.key(0), h, f[:, :2])
    with pytest.raises(ValueError, match=r"h of shape \[B, T, H, W, 32\]"):
        MotionGuidanceFuser("adanorm", hidden_size=32).init(jax.random.key(0), h[..., :16], f)


# ----------------------------------------------------------------------------- extractor
@pytest.mark.slow  # > 10 s on 2 cores; CI's second pass runs it
@pytest.mark.parametrize("t,h,w", [(1, 4, 4), (3, 8, 4), (5, 4, 12)])
def test_extractor_shapes_pixel_space(t, h, w):
    cfg = TrajectoryExtractorConfig(motion_vae=None, channels=8, num_levels=3, num_res_blocks=1)
    ext = TrajectoryExtractor(cfg)
    rgb = jax.random.uniform(jax.random.key(0), (2, t, h, w, 3), minval=-1, maxval=1)
    variables = jax.jit(ext.init)(jax.random.key(1), rgb)
    feats, upd = jax.jit(lambda v, r: ext.apply(v, r, True, mutable=["batch_stats"]))(variables, rgb)
    assert len(feats) == 3
    for fi in feats:
        assert fi.shape == (2, t, h // 2, w // 2, 8)
    # Levels are chained residually: consecutive features differ but stay finite.
    assert not np.allclose(feats[0], feats[1]) and all(np.isfinite(fi).all() for fi in feats)
    # Training updates the running statistics; inference uses them (deterministic, batch-independent).
    old = jax.tree.leaves(variables["batch_stats"])
    assert any(not np.allclose(a, b) for a, b in zip(old, jax.tree.leaves(upd["batch_stats"])))
    v2 = {"params": variables["params"], "batch_stats": upd["batch_stats"]}
    one = jax.jit(ext.apply)(v2, rgb[:1])[0]
    both = jax.jit(ext.apply)(v2, rgb)[0]
    np.testing.assert_allclose(np.asarray(one[0]), np.asarray(both[0]), atol=1e-5)


def test_extractor_errors():
    cfg = TrajectoryExtractorConfig(motion_vae=None, channels=8, num_levels=1, num_res_blocks=1)
    with pytest.raises(ValueError, match=r"\[B, T, H, W, 3\]"):
        TrajectoryExtractor(cfg).init(jax.random.key(0), jnp.zeros((1, 2, 4, 4, 2)))
    with pytest.raises(ValueError, match="multiples of 2"):
        TrajectoryExtractor(cfg).init(jax.random.key(0), jnp.zeros((1, 2, 5, 4, 3)))
    with pytest.raises(ValueError, match="must be positive"):
        TrajectoryExtractorConfig(num_levels=0)


@pytest.mark.parametrize("t,h,w", [(1, 16, 8), (5, 8, 16)])
def test_extractor_shapes_through_the_motion_vae(t, h, w):
    from tora.config import VAEConfig

    vae = VAEConfig.tiny()  # x2 in time, x4 in space
    cfg = TrajectoryExtractorConfig(motion_vae=vae, channels=8, num_levels=2, num_res_blocks=1)
    rgb = jax.random.uniform(jax.random.key(0), (1, t, h, w, 3), minval=-1, maxval=1)
    ext = TrajectoryExtractor(cfg)
    variables = jax.jit(ext.init)(jax.random.key(1), rgb)
    assert "motion_vae" in variables["params"]
    feats = jax.jit(ext.apply)(variables, rgb)
    grid = (1, -(-t // 2), h // 8, w // 8, 8)  # ceil(T / 2) latent frames, H / (4 * 2)
    assert len(feats) == 2 and all(f.shape == grid for f in feats)
