"""`jrt.flops_per_example` against XLA's count of the loss + gradient (issue 14)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxzoo
import jrt


@pytest.mark.parametrize(
    "cfg",
    [
        jrt.JRTConfig.tiny(mlm_prob=0.0, d_model=64, mlp_hidden=128, heads=2),
        jrt.JRTConfig.tiny_based(d_model=64, mlp_hidden=128, heads=2),
        jrt.JRTConfig.tiny(mlm_prob=0.0, chunk_size=None, d_model=64, mlp_hidden=128, heads=2),
    ],
    ids=["jrt", "based", "jrt-quadratic"],
)
def test_flops_per_example_matches_xla_within_20_percent(cfg):
    b, n = 2, 32
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size - 1, (b, n + 1))
    batch = {"input_ids": jnp.asarray(ids[:, :-1], jnp.int32), "labels": jnp.asarray(ids[:, 1:], jnp.int32)}
    params = jax.eval_shape(lambda r: jrt.init_params(cfg, r, seq_len=n), jax.random.key(0))
    grad = jax.value_and_grad(functools.partial(jrt.loss_fn, cfg=cfg), has_aux=True)
    xla = jaxzoo.flops.xla_flops(grad, params, batch, jax.random.key(1))
    ours = b * jrt.flops_per_example(cfg, n)
    assert abs(ours / xla - 1) < 0.2, (ours, xla)


def test_flops_per_example_rejects_empty_sequences():
    with pytest.raises(ValueError, match="seq_len must be a positive"):
        jrt.flops_per_example(jrt.JRTConfig.tiny(), 0)
