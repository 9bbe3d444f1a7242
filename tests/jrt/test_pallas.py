"""The Pallas kernel of chunked (prefix) linear attention (`jrt.pallas`), interpreted on the CPU, against
the XLA chunked form; the factored state sums against the explicit Taylor feature map; kernel selection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrt
from jrt import ops
from jrt.pallas import chunked_linear_attention


def _inputs(b=2, n=10, h=2, f=2, dv=4, m=3, seed=0):
    ks = jax.random.split(jax.random.key(seed), 5)
    q, k = (jax.random.normal(x, (b, n, h, f)) for x in ks[:2])
    v = jax.random.normal(ks[2], (b, n, h, dv))
    k_enc, v_enc = jax.random.normal(ks[3], (b, m, h, f)), jax.random.normal(ks[4], (b, m, h, dv))
    w = jnp.asarray(np.random.default_rng(seed).random((b, n)) > 0.3, jnp.float32)
    return q, k, v, w, k_enc, v_enc


@pytest.mark.parametrize("prefix", [pytest.param(False, marks=pytest.mark.slow), True])
def test_pallas_interpret_equals_xla_chunked(prefix):
    q, k, v, w, k_enc, v_enc = _inputs()
    state = ops._encoder_state(k_enc, v_enc, jnp.ones(k_enc.shape[:2])) if prefix else None
    ref = ops._chunked(q, k, v, w, state, 4, 1e-12)  # L=10 is not a multiple of C=4: padding path too
    out = chunked_linear_attention(q, k, v, w, state, chunk_size=4, eps=1e-12, interpret=True)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)

@pytest.mark.slow

def test_pallas_gradient_is_the_xla_forms():
    q, k, v, w, k_enc, v_enc = _inputs(n=8)
    state = ops._encoder_state(k_enc, v_enc, jnp.ones(k_enc.shape[:2]))

    def loss(fn):
        return lambda q, k, v: jnp.sum(fn(q, k, v) ** 2)

    pallas = loss(
        lambda q, k, v: chunked_linear_attention(q, k, v, w, state, chunk_size=4, eps=1e-12, interpret=True)
    )
    xla = loss(lambda q, k, v: ops._chunked(q, k, v, w, state, 4, 1e-12))
    for a, b in zip(jax.grad(pallas, (0, 1, 2))(q, k, v), jax.grad(xla, (0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_public_ops_select_the_interpreted_kernel():
    q, k, v, w, k_enc, v_enc = _inputs()
    mask = w.astype(bool)
    ref = ops.prefix_linear_attention(q, k, v, k_enc, v_enc, mask=mask, chunk_size=4)
    out = ops.prefix_linear_attention(q, k, v, k_enc, v_enc, mask=mask, chunk_size=4, kernel="interpret")
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)


def test_feature_sums_equal_the_explicit_feature_map():
    _, k, v, w, _, _ = _inputs(f=3)
    pk = ops.taylor_feature_map(k) * w[..., None, None]
    kv, ks = ops.feature_sums(k, v, w)
    np.testing.assert_allclose(kv, jnp.einsum("blhF,blhd->bhFd", pk, v), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(ks, jnp.einsum("blhF->bhF", pk), atol=1e-5, rtol=1e-5)
    q = k[:, :4]
    num, den = ops.feature_readout(q, kv, ks)
    pq = ops.taylor_feature_map(q)
    np.testing.assert_allclose(num, jnp.einsum("bchF,bhFd->bchd", pq, kv), atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(den, jnp.einsum("bchF,bhF->bch", pq, ks), atol=1e-4, rtol=1e-5)


def test_auto_kernel_is_xla_on_cpu_and_bad_names_raise():
    assert jax.default_backend() == "cpu"
    assert ops.resolve_kernel("auto") == "xla"
    with pytest.raises(ValueError, match="kernel must be one of"):
        ops.resolve_kernel("triton")
    with pytest.raises(ValueError, match="kernel must be"):
        jrt.JRTConfig.tiny(kernel="cuda")
