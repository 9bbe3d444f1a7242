"""colbert.bert: the Flax BERT + ColBERT head against a naive numpy BERT, finite differences, a mesh."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colbert.bert import BertConfig, BertModel, ColBERT, ColBERTConfig, colbert_project, gelu, l2_normalize
from jaxzoo import Precision
from jaxzoo.nn import dot_product_attention, layer_norm
from jaxzoo.sharding import DEFAULT_RULES, init_sharded, make_mesh

F64 = Precision(compute_dtype="float64")

TINY = BertConfig(
    vocab_size=64,
    hidden_size=16,
    num_layers=2,
    num_heads=4,
    intermediate_size=32,
    max_position_embeddings=24,
    hidden_dropout=0.0,
    attention_dropout=0.0,
)


def tiny(**changes):
    return BertConfig(**{**TINY.__dict__, **changes})


# ---------------------------------------------------------------------------------------------------
# A naive numpy BERT: loops over batch rows, positions and heads, float64.


def np_layer_norm(x, scale, bias, eps):
    out = np.empty_like(x, dtype=np.float64)
    for idx in np.ndindex(x.shape[:-1]):
        v = x[idx].astype(np.float64)
        mean = sum(v) / len(v)
        var = sum((a - mean) ** 2 for a in v) / len(v)
        out[idx] = (v - mean) / math.sqrt(var + eps) * scale + bias
    return out


def np_gelu(x):
    return np.vectorize(lambda a: 0.5 * a * (1.0 + math.erf(a / math.sqrt(2.0))))(x)


def np_attention(q, k, v, mask):
    # q, k, v [B, L, H, Dh]; mask [B, L]
    b_, l_, h_, d_ = q.shape
    out = np.zeros_like(q, dtype=np.float64)
    for b in range(b_):
        for h in range(h_):
            for i in range(l_):
                logits = [
                    (q[b, i, h] @ k[b, j, h]) / math.sqrt(d_) if mask[b, j] else -np.inf for j in range(l_)
                ]
                if all(s == -np.inf for s in logits):  # no key to attend to: zeros (jaxzoo's convention;
                    continue  # Hugging Face would average every value uniformly)
                m = max(logits)
                w = np.array([math.exp(s - m) for s in logits])
                w /= w.sum()
                out[b, i, h] = sum(w[j] * v[b, j, h] for j in range(l_))
    return out


def np_bert(p, cfg, ids, mask, types):
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), p)
    e = p["embed"]
    b_, l_ = ids.shape
    h = np.zeros((b_, l_, cfg.hidden_size))
    for b in range(b_):
        for i in range(l_):
            h[b, i] = (
                e["word_embeddings"][ids[b, i]]
                + e["position_embeddings"][i]
                + e["token_type_embeddings"][types[b, i]]
            )
    h = np_layer_norm(h, e["ln"]["scale"], e["ln"]["bias"], cfg.layer_norm_eps)
    for n in range(cfg.num_layers):
        lp = p[f"layer_{n}"]
        qkv = [
            np.einsum("ble,ehd->blhd", h, lp[x]["kernel"]) + lp[x]["bias"] for x in ("query", "key", "value")
        ]
        ctx = np_attention(*qkv, mask)
        out = np.einsum("blhd,hde->ble", ctx, lp["out"]["kernel"]) + lp["out"]["bias"]
        h = np_layer_norm(h + out, lp["attn_ln"]["scale"], lp["attn_ln"]["bias"], cfg.layer_norm_eps)
        m = np_gelu(h @ lp["mlp_in"]["kernel"] + lp["mlp_in"]["bias"])
        m = m @ lp["mlp_out"]["kernel"] + lp["mlp_out"]["bias"]
        h = np_layer_norm(h + m, lp["mlp_ln"]["scale"], lp["mlp_ln"]["bias"], cfg.layer_norm_eps)
    return h


def random_params(module, ids, key=0, scale=0.3):
    """Init, then perturb every parameter (biases and LayerNorm too) so no term is trivially zero/one."""
    params = nn.meta.unbox(module.init(jax.random.key(key), ids, jnp.ones_like(ids))["params"])
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(key + 1), len(leaves))
    leaves = [x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    return jax.tree.unflatten(tree, leaves)


def random_inputs(rng, b, l, cfg, all_masked_row=False):
    ids = rng.integers(0, cfg.vocab_size, (b, l)).astype(np.int32)
    lengths = rng.integers(1, l + 1, b)
    mask = (np.arange(l)[None] < lengths[:, None]).astype(np.int32)
    types = rng.integers(0, cfg.type_vocab_size, (b, l)).astype(np.int32)
    if all_masked_row:
        mask[0] = 0
    return ids, mask, types


def apply_jit(module, *args, **kwargs):
    return jax.jit(lambda v, *a: module.apply(v, *a, **kwargs))(*args)


# ---------------------------------------------------------------------------------------------------
# Pure functions.


@pytest.mark.parametrize("shape", [(3, 8), (2, 5, 16)])
def test_layer_norm_and_gelu_match_numpy(shape):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32) * 3
    scale = rng.normal(size=shape[-1]).astype(np.float32)
    bias = rng.normal(size=shape[-1]).astype(np.float32)
    for eps in (1e-12, 1e-5):
        want = np_layer_norm(x, scale, bias, eps)
        np.testing.assert_allclose(layer_norm(jnp.asarray(x), scale, bias, eps), want, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(gelu(jnp.asarray(x)), np_gelu(x.astype(np.float64)), atol=1e-5, rtol=1e-5)
    tanh_form = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(gelu(jnp.asarray(x), "gelu_new"), tanh_form, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("b,l,h,d", [(1, 1, 1, 4), (3, 5, 2, 8)])
def test_attention_matches_numpy(b, l, h, d):
    rng = np.random.default_rng(b * 100 + l)
    q, k, v = (rng.normal(size=(b, l, h, d)).astype(np.float32) for _ in range(3))
    mask = (rng.random((b, l)) < 0.7).astype(np.int32)
    mask[:, 0] = 1
    if b > 2:
        mask[1] = 0  # a fully masked row returns zeros, never NaN
    got = dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), mask=jnp.asarray(mask, bool))
    want = np_attention(*(x.astype(np.float64) for x in (q, k, v)), mask)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_attention_dropout_needs_rate_and_changes_output():
    rng = np.random.default_rng(1)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 6, 2, 4)), jnp.float32) for _ in range(3))
    mask = jnp.ones((2, 6), bool)
    plain = dot_product_attention(q, k, v, mask=mask)
    same = dot_product_attention(q, k, v, mask=mask, dropout_rate=0.0, dropout_rng=jax.random.key(0))
    np.testing.assert_array_equal(plain, same)
    assert not np.allclose(
        plain, dot_product_attention(q, k, v, mask=mask, dropout_rate=0.5, dropout_rng=jax.random.key(0))
    )


def test_l2_normalize_and_project_match_numpy():
    rng = np.random.default_rng(2)
    h = rng.normal(size=(2, 5, 16)).astype(np.float32)
    h[0, 0] = 0.0  # a zero vector stays zero (eps clamp), as torch.nn.functional.normalize
    w = rng.normal(size=(16, 8)).astype(np.float32)
    want = np.zeros((2, 5, 8))
    for b in range(2):
        for i in range(5):
            y = h[b, i].astype(np.float64) @ w
            want[b, i] = y / max(math.sqrt(sum(y**2)), 1e-12)
    np.testing.assert_allclose(colbert_project(jnp.asarray(h), jnp.asarray(w)), want, atol=1e-5, rtol=1e-5)
    norms = np.linalg.norm(w, axis=-1, keepdims=True)
    np.testing.assert_allclose(l2_normalize(jnp.asarray(w)), w / norms, atol=1e-6)
    # A zero (padding) vector that the loss masks out gets a zero gradient, not NaN (0 * inf).
    keep = np.ones((2, 5, 1), np.float32)
    keep[0, 0] = 0.0
    g = jax.grad(lambda x: jnp.sum(colbert_project(x, jnp.asarray(w)) * keep))(jnp.asarray(h))
    assert np.isfinite(np.asarray(g)).all() and float(jnp.abs(g[0, 0]).max()) == 0.0


# ---------------------------------------------------------------------------------------------------
# Modules.


@pytest.mark.parametrize("b,l,masked", [(2, 9, False), (3, 5, True)])
def test_bert_matches_numpy(b, l, masked):
    rng = np.random.default_rng(l)
    ids, mask, types = random_inputs(rng, b, l, TINY, all_masked_row=masked)
    module = BertModel(TINY)
    params = random_params(module, jnp.asarray(ids))
    got = apply_jit(module, {"params": params}, ids, mask, types)
    want = np_bert(params, TINY, ids, mask, types)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_bert_defaults_token_types_to_zero_and_mask_to_ones():
    ids = np.array([[1, 2, 3]], np.int32)
    module = BertModel(TINY)
    params = random_params(module, jnp.asarray(ids))
    a = module.apply({"params": params}, ids)
    b = module.apply({"params": params}, ids, np.ones_like(ids), np.zeros_like(ids))
    np.testing.assert_array_equal(a, b)


def test_intermediates_are_sown_per_layer():
    rng = np.random.default_rng(0)
    ids, mask, types = random_inputs(rng, 2, 6, TINY)
    module = BertModel(TINY)
    params = random_params(module, jnp.asarray(ids))
    out, state = apply_jit(module, {"params": params}, ids, mask, types, mutable=["intermediates"])
    inter = state["intermediates"]
    assert set(inter) == {"embeddings", "layer_0", "layer_1"}
    np.testing.assert_array_equal(inter["layer_1"]["resid_post"][0], out)
    want_emb = np_bert(params, tiny(num_layers=0), ids, mask, types)  # a 0-layer BERT = the embeddings
    np.testing.assert_allclose(inter["embeddings"][0], want_emb, atol=1e-5, rtol=1e-5)
    want_l0 = np_bert(params, tiny(num_layers=1), ids, mask, types)
    np.testing.assert_allclose(inter["layer_0"]["resid_post"][0], want_l0, atol=1e-5, rtol=1e-5)


def test_colbert_module_is_projected_normalised_bert():
    rng = np.random.default_rng(3)
    cfg = ColBERTConfig(bert=TINY, dim=8, query_maxlen=8, doc_maxlen=16)
    ids, mask, types = random_inputs(rng, 2, 7, TINY)
    module = ColBERT(cfg)
    params = random_params(module, jnp.asarray(ids))
    got = apply_jit(module, {"params": params}, ids, mask, types)
    h = np_bert(params["bert"], TINY, ids, mask, types)
    y = h @ np.asarray(params["linear"]["kernel"], np.float64)
    np.testing.assert_allclose(got, y / np.linalg.norm(y, axis=-1, keepdims=True), atol=1e-5, rtol=1e-5)
    hidden = apply_jit(module, {"params": params}, ids, mask, types, method=ColBERT.hidden_states)
    np.testing.assert_allclose(hidden, h, atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # > 10 s on 2 cores; CI's second pass runs it
def test_gradient_matches_finite_differences_with_remat():
    """Directional derivative of a scalar of the ColBERT output (remat on, so its backward is the one
    checked), in float64, vs central differences; and remat leaves the forward unchanged."""
    cfg = ColBERTConfig(
        bert=tiny(precision=F64, num_layers=1, remat=True), dim=8, query_maxlen=8, doc_maxlen=16
    )
    rng = np.random.default_rng(4)
    ids, mask, types = random_inputs(rng, 2, 5, TINY)
    target = rng.normal(size=(2, 5, 8))
    with jax.enable_x64(True):
        module = ColBERT(cfg)
        params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), random_params(module, jnp.asarray(ids)))
        f = lambda p: jnp.sum(module.apply({"params": p}, ids, mask, types) * target)
        direction = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape)), params)
        eps = 1e-6

        @jax.jit
        def both(p, d):
            g = jax.grad(f)(p)
            analytic = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(d)))
            plus = f(jax.tree.map(lambda x, y: x + eps * y, p, d))
            minus = f(jax.tree.map(lambda x, y: x - eps * y, p, d))
            return analytic, (plus - minus) / (2 * eps)

        analytic, numeric = both(params, direction)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6)
        plain = ColBERT(
            ColBERTConfig(bert=tiny(precision=F64, num_layers=1), dim=8, query_maxlen=8, doc_maxlen=16)
        )
        np.testing.assert_allclose(
            module.apply({"params": params}, ids, mask, types),
            plain.apply({"params": params}, ids, mask, types),
            rtol=1e-12,
            atol=1e-12,
        )


def test_dropout_is_active_only_when_not_deterministic():
    module = BertModel(tiny(hidden_dropout=0.2, attention_dropout=0.2))
    ids = jnp.arange(12, dtype=jnp.int32).reshape(2, 6)
    params = random_params(module, ids)
    run = jax.jit(
        lambda key: module.apply({"params": params}, ids, deterministic=False, rngs={"dropout": key})
    )
    a = module.apply({"params": params}, ids)
    b, c = run(jax.random.key(1)), run(jax.random.key(1))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(b, c)


def test_sharded_forward_equals_single_device():
    cfg = ColBERTConfig(bert=TINY, dim=8, query_maxlen=8, doc_maxlen=16)
    rng = np.random.default_rng(6)
    ids, mask, types = random_inputs(rng, 8, 6, TINY)
    module = ColBERT(cfg)
    mesh = make_mesh({"data": 4, "model": 2})
    variables, shardings = init_sharded(module, jax.random.key(0), ids, mask, mesh=mesh, rules=DEFAULT_RULES)
    P = jax.sharding.PartitionSpec
    assert shardings["params"]["bert"]["layer_0"]["query"]["kernel"].spec == P(None, "model", None)  # heads
    assert shardings["params"]["bert"]["layer_0"]["mlp_in"]["kernel"].spec == P(None, "model")  # mlp
    assert shardings["params"]["bert"]["embed"]["word_embeddings"].spec == P("model", None)  # vocab
    want = apply_jit(module, jax.device_get(variables), ids, mask, types)
    with jax.set_mesh(mesh):
        batch = jax.device_put((ids, mask, types), jax.sharding.NamedSharding(mesh, P("data")))
        got = apply_jit(module, variables, *batch)
    assert got.sharding.spec[0] == "data"
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------
# Errors.


def test_config_rejects_heads_not_dividing_width():
    with pytest.raises(ValueError, match="must be divisible by num_heads"):
        BertConfig(hidden_size=10, num_heads=4)


def test_config_rejects_unknown_activation():
    with pytest.raises(ValueError, match="hidden_act must be one of"):
        BertConfig(hidden_act="swish")


def test_config_rejects_bad_precision():
    with pytest.raises(ValueError, match="precision must be a jaxzoo.Precision"):
        BertConfig(precision="float32")
    with pytest.raises(ValueError, match="expected a float dtype"):
        BertConfig(precision=Precision(compute_dtype="int8"))


def test_config_rejects_bad_dropout():
    with pytest.raises(ValueError, match="dropout rates"):
        BertConfig(hidden_dropout=1.0)


def test_config_rejects_bad_sizes():
    with pytest.raises(ValueError, match="hidden_size must be positive"):
        BertConfig(hidden_size=0)
    with pytest.raises(ValueError, match="num_layers must be >= 0"):
        BertConfig(num_layers=-1)


def test_colbert_config_rejects_bad_lengths_and_dim():
    with pytest.raises(ValueError, match="query_maxlen must lie in"):
        ColBERTConfig(bert=TINY, query_maxlen=3)
    with pytest.raises(ValueError, match="doc_maxlen must lie in"):
        ColBERTConfig(bert=TINY, query_maxlen=8, doc_maxlen=25)
    with pytest.raises(ValueError, match="dim must be positive"):
        ColBERTConfig(dim=0)


def test_from_hf_rejects_relative_positions():
    with pytest.raises(ValueError, match="Only absolute position embeddings"):
        BertConfig.from_hf({"position_embedding_type": "relative_key"})


def test_bert_rejects_bad_input_shapes():
    module = BertModel(TINY)
    ids = jnp.zeros((2, 4), jnp.int32)
    params = random_params(module, ids)
    with pytest.raises(ValueError, match=r"input_ids must be \[batch, length\]"):
        module.apply({"params": params}, jnp.zeros((4,), jnp.int32))
    with pytest.raises(ValueError, match="must have the shape of input_ids"):
        module.apply({"params": params}, ids, jnp.ones((2, 5), jnp.int32))
    with pytest.raises(ValueError, match="at most 24 tokens"):
        module.apply({"params": params}, jnp.zeros((1, 25), jnp.int32))


def test_gelu_rejects_unknown_kind():
    with pytest.raises(ValueError, match="Unknown activation"):
        gelu(jnp.zeros(3), "swish")
