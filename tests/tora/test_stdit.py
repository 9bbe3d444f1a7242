"""STDiT3 blocks and model: numpy references in Open-Sora's own token layout [B, T*S, C], init, shapes,
masks, scan/remat equivalence and sharded == unsharded."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxzoo
from jaxzoo.sharding import init_sharded, make_mesh, rules_for_mesh, shard_batch
from tora.config import STDiTConfig
from tora.stdit import SpatialBlock, STDiT, TemporalBlock

RNG = np.random.default_rng(1)


# ----------------------------------------------------------------------------- numpy reference
def np_ln(v, eps=1e-6):
    return (v - v.mean()) / np.sqrt(v.var() + eps)


def np_gelu(v):
    return 0.5 * v * (1 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))


def np_rms(v, w, eps=1e-6):
    return w * v / np.sqrt((v**2).mean() + eps)


def np_rope(v, pos, theta=10000.0):
    out = v.copy()
    d = v.shape[-1]
    for i in range(d // 2):
        a = pos * theta ** (-2 * i / d)
        x1, x2 = v[2 * i], v[2 * i + 1]
        out[2 * i], out[2 * i + 1] = x1 * math.cos(a) - x2 * math.sin(a), x2 * math.cos(a) + x1 * math.sin(a)
    return out


def np_softmax_attend(q, ks, vs):
    s = np.array([q @ k for k in ks]) / math.sqrt(q.shape[0])
    p = np.exp(s - s.max())
    p /= p.sum()
    return sum(pi * vi for pi, vi in zip(p, vs))


def np_block(p, x, y, y_mask, t_mlp, t0_mlp, x_mask, temporal, n_heads):
    """Open-Sora's STDiT3Block.forward, token by token, in its layout [B, T*S, C] (token = t * S + s)."""
    b_, t_, h_, w_, c = x.shape
    s_ = h_ * w_
    d = c // n_heads
    x = x.reshape(b_, t_ * s_, c).astype(np.float64)
    tab = p["scale_shift_table"]
    mod = lambda tm, b: tab + tm[b].reshape(6, c)
    out = x.copy()
    for b in range(b_):
        m1, m0 = mod(t_mlp, b), mod(t0_mlp if x_mask is not None else t_mlp, b)
        mb = lambda n, b=b, m1=m1, m0=m0: m1 if x_mask is None or x_mask[b, n // s_] else m0
        # modulated norm1, then qkv, QK-norm, RoPE (temporal only)
        xm = np.stack([np_ln(x[b, n]) * (1 + mb(n)[1]) + mb(n)[0] for n in range(t_ * s_)])
        a = p["attn"]
        qkv = np.einsum("nc,cjhd->njhd", xm, a["qkv"]["kernel"]) + a["qkv"]["bias"]
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # [T*S, N, D]
        for n in range(t_ * s_):
            for h in range(n_heads):
                q[n, h] = np_rms(q[n, h], a["q_norm"]["scale"])
                k[n, h] = np_rms(k[n, h], a["k_norm"]["scale"])
                if temporal:
                    q[n, h], k[n, h] = np_rope(q[n, h], n // s_), np_rope(k[n, h], n // s_)
        att = np.zeros((t_ * s_, n_heads, d))
        for n in range(t_ * s_):
            if temporal:
                keys = [m for m in range(t_ * s_) if m % s_ == n % s_]  # same patch, every frame
            else:
                keys = [m for m in range(t_ * s_) if m // s_ == n // s_]  # same frame, every patch
            for h in range(n_heads):
                att[n, h] = np_softmax_attend(q[n, h], [k[m, h] for m in keys], [v[m, h] for m in keys])
        o = np.einsum("nhd,hdc->nc", att, a["proj"]["kernel"]) + a["proj"]["bias"]
        xb = x[b] + np.stack([mb(n)[2] * o[n] for n in range(t_ * s_)])
        # cross-attention, no norm, key mask
        ca = p["cross_attn"]
        cq = np.einsum("nc,chd->nhd", xb, ca["q_linear"]["kernel"]) + ca["q_linear"]["bias"]
        kv = np.einsum("lc,cjhd->ljhd", y[b], ca["kv_linear"]["kernel"]) + ca["kv_linear"]["bias"]
        keep = [i for i in range(y.shape[1]) if y_mask[b, i]]
        co = np.zeros((t_ * s_, n_heads, d))
        for n in range(t_ * s_):
            for h in range(n_heads):
                co[n, h] = np_softmax_attend(
                    cq[n, h], [kv[i, 0, h] for i in keep], [kv[i, 1, h] for i in keep]
                )
        xb = xb + np.einsum("nhd,hdc->nc", co, ca["proj"]["kernel"]) + ca["proj"]["bias"]
        # MLP
        ml = p["mlp"]
        for n in range(t_ * s_):
            u = np_ln(xb[n]) * (1 + mb(n)[4]) + mb(n)[3]
            u = np_gelu(u @ ml["fc1"]["kernel"] + ml["fc1"]["bias"]) @ ml["fc2"]["kernel"] + ml["fc2"]["bias"]
            xb[n] = xb[n] + mb(n)[5] * u
        out[b] = xb
    return out.reshape(b_, t_, h_, w_, c)


def randomise(params, key, scale=0.3):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(tree, [scale * jax.random.normal(k, a.shape) for k, a in zip(keys, leaves)])


_randomise = jax.jit(randomise, static_argnums=2)


@pytest.mark.parametrize("cls", [pytest.param(SpatialBlock, marks=pytest.mark.slow), TemporalBlock])
def test_block_matches_numpy(cls):
    cfg = STDiTConfig.tiny(hidden_size=16, num_heads=2, depth=1)
    b, t, h, w, c, ly = 2, 3, 2, 2, 16, 4
    x = RNG.normal(size=(b, t, h, w, c)).astype(np.float32)
    y = RNG.normal(size=(b, ly, c)).astype(np.float32)
    y_mask = np.array([[1, 1, 0, 1], [1, 0, 0, 0]], bool)
    t_mlp, t0_mlp = (RNG.normal(size=(b, 6 * c)).astype(np.float32) * 0.5 for _ in range(2))
    x_mask = np.array([[True, False, True], [False, True, True]])  # both modulations in play
    block = cls(cfg)
    args = (x, y, y_mask, t_mlp, t0_mlp, x_mask)
    params = nn.meta.unbox(jax.jit(block.init)(jax.random.key(0), *args)["params"])
    params = _randomise(params, jax.random.key(1), 0.3)  # no zero-initialised weights hiding a bug
    got = np.asarray(jax.jit(block.apply)({"params": params}, *args))
    want = np_block(jax.tree.map(np.asarray, params), *args, temporal=cls is TemporalBlock, n_heads=2)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    # without a frame mask the t=0 modulation is unused
    got = np.asarray(jax.jit(block.apply)({"params": params}, x, y, y_mask, t_mlp))
    want = np_block(
        jax.tree.map(np.asarray, params), x, y, y_mask, t_mlp, None, None, cls is TemporalBlock, 2
    )
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- full model
CFG = STDiTConfig.tiny(depth=1)
B, T, H, W, LY = 2, 2, 4, 4, 5


def inputs(b=B, t=T, h=H, w=W, ly=LY, seed=0):
    r = np.random.default_rng(seed)
    x = r.normal(size=(b, t, h, w, CFG.in_channels)).astype(np.float32)
    y = r.normal(size=(b, ly, CFG.caption_channels)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(r.uniform(size=(b,)), jnp.float32), jnp.asarray(y)


@pytest.fixture(scope="module")
def model():
    """(module, boxed variables, randomised params, fwd) with every optional input passed explicitly, so
    one compilation per shape serves the tests."""
    m = STDiT(CFG)
    variables = jax.jit(m.init)(jax.random.key(0), *inputs())
    rand = {"params": _randomise(nn.meta.unbox(variables)["params"], jax.random.key(3), 0.2)}

    @jax.jit
    def fwd(p, x, t, y, y_mask, x_mask, y_drop):
        return m.apply(p, x, t, y, y_mask, None, x_mask, None, y_drop=y_drop)

    return m, variables, rand, fwd


def defaults(x, y):
    return jnp.ones(y.shape[:2], bool), jnp.ones(x.shape[:2], bool), jnp.zeros((x.shape[0],), bool)


def test_every_parameter_has_logical_axis_names(model):
    _, variables, _, _ = model
    leaves = jax.tree.leaves(variables, is_leaf=lambda a: isinstance(a, nn.LogicallyPartitioned))
    assert leaves and all(isinstance(a, nn.LogicallyPartitioned) for a in leaves)
    assert all(len(a.names) == a.value.ndim for a in leaves)
    names = set(nn.meta.unbox(variables)["params"])
    assert {"spatial_blocks_0", "temporal_blocks_0", "t_block", "y_embedder", "final_layer"} <= names


def test_temporal_blocks_are_identity_at_init(model):
    _, variables, _, _ = model
    tb = nn.meta.unbox(variables)["params"]["temporal_blocks_0"]
    for a, b in (("attn", "proj"), ("cross_attn", "proj"), ("mlp", "fc2")):
        assert not np.any(np.asarray(tb[a][b]["kernel"]))
    x = jnp.asarray(RNG.normal(size=(2, 3, 2, 2, CFG.hidden_size)), jnp.float32)
    y = jnp.asarray(RNG.normal(size=(2, 5, CFG.hidden_size)), jnp.float32)
    tm = jnp.asarray(RNG.normal(size=(2, 6 * CFG.hidden_size)), jnp.float32)
    out = jax.jit(TemporalBlock(CFG).apply)({"params": tb}, x, y, jnp.ones((2, 5), bool), tm)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(x))


def test_forward_at_two_sizes_with_the_same_params(model):
    _, _, rand, fwd = model
    x, tt, y = inputs()
    out = fwd(rand, x, tt, y, *defaults(x, y))
    assert out.shape == x.shape and out.dtype == jnp.float32 and bool(jnp.isfinite(out).all())
    x2, _, _ = inputs(t=3, h=5, w=3)  # other length and aspect ratio, odd sizes padded to the patch
    out2 = fwd(rand, x2, tt, y, *defaults(x2, y))
    assert out2.shape == x2.shape and bool(jnp.isfinite(out2).all())
    # frame 0 of the longer clip differs from frame 0 alone: the temporal blocks mix frames
    one = fwd(rand, x2[:, :1], tt, y, *defaults(x2[:, :1], y))
    assert not np.allclose(out2[:, :1], one, atol=1e-4)


def test_caption_mask_null_caption_and_neutral_defaults(model):
    m, _, rand, fwd = model
    x, tt, y = inputs()
    ym, xm, drop = defaults(x, y)
    base = fwd(rand, x, tt, y, ym, xm, drop)
    # defaults (no masks, no drop, no motion) are exactly the explicit neutral values
    np.testing.assert_array_equal(jax.jit(m.apply)(rand, x, tt, y), base)
    # masked caption tokens are ignored: garbage behind the mask == no garbage (same length)
    mask = ym.at[:, 3:].set(False)
    a = fwd(rand, x, tt, y.at[:, 3:].set(100.0), mask, xm, drop)
    b = fwd(rand, x, tt, y.at[:, 3:].set(-7.0), mask, xm, drop)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert not np.allclose(a, base, atol=1e-4)
    # the learned null caption replaces y entirely
    a = fwd(rand, x, tt, y, ym, xm, ~drop)
    b = fwd(rand, x, tt, y + 3.0, ym, xm, ~drop)
    np.testing.assert_array_equal(a, b)

@pytest.mark.slow

def test_frame_mask_uses_t0_modulation(model):
    _, _, rand, fwd = model
    x, tt, y = inputs()
    ym, xm, drop = defaults(x, y)
    a = fwd(rand, x, tt, y, ym, xm.at[:, 1].set(False), drop)
    b = fwd(rand, x, tt, y, ym, xm, drop)
    assert not np.allclose(a[:, 1], b[:, 1], atol=1e-5)
    # with every frame masked the whole clip runs at t = 0, except in the final layer, which (as Open-Sora's
    # T2IFinalLayer) re-normalises and modulates the t-modulated x on masked frames; without that switch
    # the identity is exact
    plain = STDiT(CFG.replace(final_t0_on_modulated=False))
    c = plain.apply(rand, x, tt, y, ym, None, ~xm, None, y_drop=drop)
    d = plain.apply(rand, x, jnp.zeros_like(tt), y, ym, None, xm, None, y_drop=drop)
    np.testing.assert_allclose(c, d, atol=1e-5)
    assert not np.allclose(fwd(rand, x, tt, y, ym, ~xm, drop), c, atol=1e-5)


def loop_to_scan(params, depth):
    """Stack spatial_blocks_{i} / temporal_blocks_{i} into blocks/{spatial_block,temporal_block}[i]."""
    stacked = {
        "spatial_block": jax.tree.map(
            lambda *a: jnp.stack(a), *[params[f"spatial_blocks_{i}"] for i in range(depth)]
        ),
        "temporal_block": jax.tree.map(
            lambda *a: jnp.stack(a), *[params[f"temporal_blocks_{i}"] for i in range(depth)]
        ),
    }
    rest = {k: v for k, v in params.items() if "_blocks_" not in k}
    return {**rest, "blocks": stacked}


@pytest.mark.slow
def test_scan_and_remat_match_the_python_loop():
    cfg = STDiTConfig.tiny(depth=2, hidden_size=16)
    x, tt, _ = inputs()
    y = jnp.asarray(RNG.normal(size=(2, 5, cfg.caption_channels)), jnp.float32)
    m = STDiT(cfg)
    p = randomise(
        nn.meta.unbox(jax.jit(m.init)(jax.random.key(0), x, tt, y))["params"], jax.random.key(5), 0.2
    )
    want = jax.jit(m.apply)({"params": p}, x, tt, y)
    scan = STDiT(STDiTConfig.tiny(depth=2, hidden_size=16, scan=True, remat=True))
    got = jax.jit(scan.apply)({"params": loop_to_scan(p, 2)}, x, tt, y)
    np.testing.assert_allclose(got, want, atol=1e-5)
    shapes = jax.eval_shape(scan.init, jax.random.key(0), x, tt, y)["params"]["blocks"]
    assert shapes["spatial_block"]["scale_shift_table"].names == ("layers", None, "embed")

@pytest.mark.slow

def test_sharded_forward_equals_single_device(model):
    """Batch over "data", heads and MLP over "model", spatial tokens ("length") too: same numbers."""
    _, variables, _, _ = model
    x, tt, y = inputs(b=4)
    want = jax.jit(STDiT(CFG).apply)(variables, x, tt, y)
    scfg = STDiTConfig.tiny(depth=1, shard_sequence=True)
    sm = STDiT(scfg)
    mesh = make_mesh({"data": 4, "model": 2})
    rules = scfg.rules
    assert ("length", "model") in rules
    params, shardings = init_sharded(sm, jax.random.key(0), x, tt, y, mesh=mesh, rules=rules)
    assert shardings["params"]["spatial_blocks_0"]["attn"]["qkv"]["kernel"].spec[2] == "model"
    jax.tree.map(np.testing.assert_array_equal, params, nn.meta.unbox(variables))  # same init, sharded
    xs, ts, ys = shard_batch((x, tt, y), mesh)

    def fwd(p, x, t, y):
        with nn.logical_axis_rules(rules_for_mesh(rules, mesh)):
            return sm.apply(p, x, t, y)

    with jax.set_mesh(mesh):
        got = jax.jit(fwd)(params, xs, ts, ys)
    assert got.sharding.spec[0] == "data"
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_xl_preset_has_stdit3_xl_size():
    cfg = STDiTConfig.xl()
    assert (cfg.hidden_size, cfg.depth, cfg.num_heads, cfg.head_dim, cfg.patch_size) == (
        1152,
        28,
        16,
        72,
        (1, 2, 2),
    )
    x = jnp.zeros((1, 1, 4, 4, 4))
    shapes = jax.eval_shape(STDiT(cfg).init, jax.random.key(0), x, jnp.zeros(1), jnp.zeros((1, 4, 4096)))
    n = sum(math.prod(a.shape) for a in jax.tree.leaves(nn.meta.unbox(shapes)))
    # 56 blocks x 16 C^2 (qkv 3, proj 1, cross q 1, kv 2, proj 1, mlp 8) plus embedders: Open-Sora's "1.1B"
    assert 1.15e9 < n < 1.25e9


def test_bfloat16_compute_is_close_to_float32(model):
    _, variables, _, _ = model
    x, tt, y = inputs()
    want = jax.jit(STDiT(CFG).apply)(variables, x, tt, y)
    got = jax.jit(STDiT(STDiTConfig.tiny(depth=1, precision=jaxzoo.Precision.bf16())).apply)(variables, x, tt, y)
    assert got.dtype == jnp.float32
    # bf16 has an 8-bit mantissa (relative error ~4e-3 per op); a few such errors through one block pair.
    np.testing.assert_allclose(got, want, atol=0.1, rtol=0.05)


def test_token_text_encoder_masks_padding():
    from tora.text import TextConfig, TokenTextEncoder, tokenize

    tc = TextConfig(vocab_size=64, max_length=6, width=16, num_heads=2)
    ids, mask = tokenize(["a red ball moves left", "a dog"], tc)
    assert ids.shape == (2, 6) and mask.sum(1).tolist() == [5, 2]
    assert tokenize(["A  red"], tc)[0][0, :2].tolist() == ids[0, :2].tolist()  # case and spaces ignored
    enc = TokenTextEncoder(tc)
    v = jax.jit(enc.init)(jax.random.key(0), ids, mask)
    out = jax.jit(enc.apply)(v, ids, mask)
    assert out.shape == (2, 6, 16) and not np.any(np.asarray(out)[1, 2:])
    changed = ids.copy()
    changed[1, 3:] = 7  # ids behind the mask do not reach the real tokens
    np.testing.assert_allclose(jax.jit(enc.apply)(v, changed, mask)[1, :2], out[1, :2], atol=1e-6)
