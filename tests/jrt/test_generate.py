"""Recurrent generation: greedy tokens equal the argmax of the full parallel forward at every step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrt

CFG = jrt.JRTConfig.tiny(init_std=0.3)
BASED = jrt.JRTConfig.tiny_based(init_std=0.3)


@pytest.mark.parametrize("which", ["jrt", "based"])
def test_greedy_generation_equals_parallel_argmax(which):
    cfg = CFG if which == "jrt" else BASED
    params = jrt.init_params(cfg, jax.random.key(2))
    # JRT: a 5-token prompt is shorter than M = 8, so it is left-padded to M and masked; the second row
    # is itself left-padded (mask) to test ragged batches.
    prompt = np.random.default_rng(0).integers(1, cfg.vocab_size - 1, (2, 5))
    mask = np.ones((2, 5), bool)
    mask[1, :2] = False
    new = 12
    tokens, step_logits = jrt.generate(
        params, cfg, prompt, new, jax.random.key(0), mask=mask, return_logits=True
    )
    assert tokens.shape == (2, new) and tokens.dtype == jnp.int32
    padded, pmask = jrt.pad_prompt(cfg, prompt, mask)
    assert padded.shape[1] == max(5, cfg.prefix_len)
    full_ids = jnp.concatenate([padded, tokens], axis=1)
    full_mask = jnp.concatenate([pmask, np.ones((2, new), bool)], axis=1)
    logits = jax.jit(lambda p, x, m: jrt.LM(cfg).apply({"params": p}, x, m))(params, full_ids, full_mask)
    n = padded.shape[1]
    ref = logits[:, n - 1 : n - 1 + new]  # the logits each generated token was chosen from
    np.testing.assert_allclose(step_logits, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(tokens, jnp.argmax(ref, axis=-1))

    # Sampling (the same compiled function: temperature is traced) is reproducible from its key.
    a = jrt.generate(params, cfg, prompt, new, jax.random.key(1), mask=mask, temperature=1.0)
    b = jrt.generate(params, cfg, prompt, new, jax.random.key(1), mask=mask, temperature=1.0)
    np.testing.assert_array_equal(a, b)
    assert int(a.min()) >= 0 and int(a.max()) < cfg.vocab_size and not np.array_equal(a, tokens)
