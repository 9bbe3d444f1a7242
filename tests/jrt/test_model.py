"""The LM: layer maths against numpy, recurrent vs parallel, padding, presets, sharded == unsharded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxzoo
import jrt
from jrt.model import apply_fn

# A larger init than the reference's 0.02 so that logits vary by O(1) and 1e-5 comparisons mean something.
CFG = jrt.JRTConfig.tiny(init_std=0.3)
BASED = jrt.JRTConfig.tiny_based(init_std=0.3)


@pytest.fixture(scope="module")
def params():
    return jrt.init_params(CFG, jax.random.key(0))


@pytest.fixture(scope="module")
def based_params():
    return jrt.init_params(BASED, jax.random.key(1))


def forward(cfg):
    """Jitted parallel forward (params, input_ids, mask=None) -> logits, shared across test files."""
    f = apply_fn(cfg)
    return lambda p, x, mask=None: f(p, x, jnp.ones(x.shape, bool) if mask is None else mask)


def ids(seed, b, n, vocab=CFG.vocab_size):
    return jnp.asarray(np.random.default_rng(seed).integers(0, vocab - 1, (b, n)), jnp.int32)


def test_presets_match_reference_layer_mix_and_size():
    jrt360, based360 = jrt.JRTConfig.jrt_360m(), jrt.JRTConfig.based_360m()
    assert jrt360.n_layers == 26 and based360.n_layers == 27
    assert [i for i, m in enumerate(jrt360.mixers) if m == "pla"] == [1, 6, 11, 16, 21]
    assert [i for i, m in enumerate(based360.mixers) if m == "swa"] == [2, 7, 12, 17, 22]
    assert jrt360.window == 128 and jrt360.encoder_len == 1024 and jrt360.mask_id == 50263
    assert based360.prefix_len == 0 and jrt360.prefix_len == 1024
    big = jrt.JRTConfig.jrt_1b3()
    assert big.n_layers == 36 and big.mixers[27] == "pla" and big.mixers[34] == "swa" and big.head_dim == 112
    # Parameter count from shapes only (no allocation): the note derives ~356M (JRT) and ~362M (Based).
    for cfg, want in ((jrt360, 356e6), (based360, 362e6)):
        shapes = jax.eval_shape(
            lambda c=cfg: jrt.LM(c).init(jax.random.key(0), jnp.zeros((1, 1024), jnp.int32))
        )
        n = jaxzoo.param_count(shapes["params"])
        assert abs(n - want) / want < 0.01, n


def test_swiglu_and_baseconv_layer_vs_numpy(params):
    """Layer 0 (conv) of the tiny model recomputed in numpy from its parameters, loops over positions."""
    x = ids(0, 2, 9)
    apply = jax.jit(lambda p, a: jrt.LM(CFG).apply({"params": p}, a, mutable=["intermediates"]))
    _, state = apply(params, x)
    got = np.asarray(state["intermediates"]["layer_0"]["resid_post"][0])
    p = jax.tree.map(np.asarray, params)
    emb = p["embedding"][np.asarray(x)].astype(np.float64)

    def rms(h, scale):
        return h / np.sqrt((h**2).mean(-1, keepdims=True) + CFG.norm_eps) * scale

    def silu(z):
        return z / (1 + np.exp(-z))

    lp = p["layer_0"]
    h = rms(emb, lp["mixer_norm"]["scale"])
    u = np.einsum("bld,dge->blge", h, lp["conv"]["in_proj"]["kernel"]) + lp["conv"]["in_proj"]["bias"]
    u1, u2 = u[..., 0, :], u[..., 1, :]
    k = lp["conv"]["conv_kernel"]
    conv = np.zeros_like(u1)
    for t in range(u1.shape[1]):
        for i in range(3):
            if t - 2 + i >= 0:
                conv[:, t] += k[i] * u1[:, t - 2 + i]
    y = silu(conv) * u2
    x1 = emb + y @ lp["conv"]["out_proj"]["kernel"] + lp["conv"]["out_proj"]["bias"]
    h = rms(x1, lp["mlp_norm"]["scale"])
    yg = np.einsum("bld,dgh->blgh", h, lp["mlp"]["fc1"]["kernel"])
    want = x1 + (yg[..., 0, :] * silu(yg[..., 1, :])) @ lp["mlp"]["fc2"]["kernel"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_scaled_residual_init(params):
    """N(0, std) weights, out_proj / fc2 at std / sqrt(2 n_layers), zero biases (CFG has std 0.3)."""
    out_std = CFG.init_std / np.sqrt(2 * CFG.n_layers)
    fc2 = np.concatenate([np.ravel(params[f"layer_{i}"]["mlp"]["fc2"]["kernel"]) for i in range(3)])
    fc1 = np.concatenate([np.ravel(params[f"layer_{i}"]["mlp"]["fc1"]["kernel"]) for i in range(3)])
    # 6144 / 12288 samples: the sample std is within ~1% of the true one; 5% cannot pass by accident
    # for a wrong scale (the two differ by sqrt(6)).
    assert abs(fc2.std() / out_std - 1) < 0.05 and abs(fc1.std() / CFG.init_std - 1) < 0.05
    assert np.all(np.asarray(params["layer_0"]["conv"]["out_proj"]["bias"]) == 0)


def test_pla_prefix_is_noncausal_and_suffix_causal(params, based_params):
    """Changing a prefix token changes earlier positions in JRT, never in Based; suffix tokens stay causal."""
    x = ids(1, 1, 16)
    m = CFG.encoder_len
    y = x.at[0, m - 2].set((x[0, m - 2] + 1) % 60)
    z = x.at[0, m + 3].set((x[0, m + 3] + 1) % 60)
    f, fb = forward(CFG), forward(BASED)
    assert not np.allclose(f(params, x)[0, : m - 2], f(params, y)[0, : m - 2], atol=1e-4)
    np.testing.assert_allclose(fb(based_params, x)[0, : m - 2], fb(based_params, y)[0, : m - 2], atol=1e-6)
    np.testing.assert_allclose(f(params, x)[0, : m + 3], f(params, z)[0, : m + 3], atol=1e-6)


def test_padding_contributes_nothing(params):
    """Left padding: whatever the padded tokens are, real positions get the same logits."""
    x = ids(3, 2, 12)
    mask = jnp.asarray(np.arange(12)[None] >= np.array([[4], [2]]))
    y = jnp.where(mask, x, ids(4, 2, 12))
    f = forward(CFG)
    np.testing.assert_allclose(
        f(params, x, mask) * mask[..., None], f(params, y, mask) * mask[..., None], rtol=1e-5, atol=1e-5
    )


def test_bfloat16_compute_is_close_and_float32_out(params):
    cfg = CFG.replace(precision=jaxzoo.Precision.bf16())
    x = ids(5, 2, 12)
    lo = forward(cfg)(params, x)
    hi = forward(CFG)(params, x)
    assert lo.dtype == jnp.float32
    # bf16 matmuls (8-bit mantissa) through 3 blocks: agreement to ~5% of the logit scale, not 1e-5.
    assert float(jnp.max(jnp.abs(lo - hi))) < 0.05 * float(jnp.max(jnp.abs(hi)))

@pytest.mark.slow

def test_sharded_forward_equals_unsharded(params):
    """The forward on (data=4, model=2)-sharded parameters and batch equals the single-device forward
    (the sharded train step is checked in test_runtime_contract.py)."""
    mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
    plan = jrt.init_state(jrt.RunConfig(model=CFG, steps=10), jax.random.key(0), mesh=mesh)
    q_proj = plan.state.params["layer_1"]["pla"]["q_proj"]["kernel"]  # [d, H, f]: heads on "model"
    assert tuple(q_proj.sharding.spec)[:2] == (None, "model")
    sharded = jax.device_put(params, plan.shardings.params)
    x = ids(6, 8, 16)
    with jax.set_mesh(mesh):
        logits = forward(CFG)(sharded, jaxzoo.shard_batch(x, mesh))
    np.testing.assert_allclose(logits, forward(CFG)(params, x), rtol=1e-5, atol=1e-5)
