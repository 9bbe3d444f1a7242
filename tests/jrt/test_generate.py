"""Recurrent generation: greedy tokens equal the argmax of the full parallel forward at every step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrt
from jrt.model import apply_fn

CFG = jrt.JRTConfig.tiny(init_std=0.3)
BASED = jrt.JRTConfig.tiny_based(init_std=0.3)


@pytest.mark.parametrize("which", ["jrt", pytest.param("based", marks=pytest.mark.slow)])
def test_greedy_generation_equals_parallel_argmax(which):
    cfg = CFG if which == "jrt" else BASED
    params = jrt.init_params(cfg, jax.random.key(2))
    # A ragged batch: the second row is left-padded by 3 and keeps 9 >= M = 8 real tokens, so its JRT
    # prefix lies inside the prompt (a shorter prompt's prefix is the prompt alone, which the parallel
    # forward of prompt + generated tokens would not reproduce; tests/jrt/test_ragged.py covers it).
    prompt = np.random.default_rng(0).integers(1, cfg.vocab_size - 1, (2, 12))
    mask = np.ones((2, 12), bool)
    mask[1, :3] = False
    new = 12
    tokens, step_logits = jrt.generate(
        params, cfg, prompt, new, jax.random.key(0), mask=mask, return_logits=True
    )
    assert tokens.shape == (2, new) and tokens.dtype == jnp.int32
    padded, pmask = jrt.pad_prompt(cfg, prompt, mask)
    full_ids = jnp.concatenate([padded, tokens], axis=1)
    full_mask = jnp.concatenate([pmask, np.ones((2, new), bool)], axis=1)  # 24 tokens <= max_len 64
    logits = apply_fn(cfg)(params, full_ids, full_mask)
    n = padded.shape[1]
    ref = logits[:, n - 1 : n - 1 + new]  # the logits each generated token was chosen from
    np.testing.assert_allclose(step_logits, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(tokens, jnp.argmax(ref, axis=-1))

    # Sampling (the same compiled function: temperature is traced) is reproducible from its key.
    a = jrt.generate(params, cfg, prompt, new, jax.random.key(1), mask=mask, temperature=1.0)
    b = jrt.generate(params, cfg, prompt, new, jax.random.key(1), mask=mask, temperature=1.0)
    np.testing.assert_array_equal(a, b)
    assert int(a.min()) >= 0 and int(a.max()) < cfg.vocab_size and not np.array_equal(a, tokens)


def test_short_prompts_are_left_padded_to_m_and_cache_is_constant_size():
    padded, mask = jrt.pad_prompt(CFG, [3, 4, 5])
    assert padded.tolist() == [[CFG.pad_token_id] * 5 + [3, 4, 5]] and mask.tolist() == [
        [False] * 5 + [True] * 3
    ]
    params = jax.eval_shape(lambda: jrt.init_params(CFG, jax.random.key(0)))
    _, cache = jax.eval_shape(lambda p: jrt.prefill_cache(p, CFG, padded, mask), params)
    _, after = jax.eval_shape(
        lambda p, c: jrt.decode_token(p, CFG, c, jnp.zeros((1,), jnp.int32)), params, cache
    )
    assert jax.tree.map(lambda x: (x.shape, x.dtype), after) == jax.tree.map(
        lambda x: (x.shape, x.dtype), cache
    )
    kv = cache["layer_1"]["pla"]["kv"]
    assert kv.shape == (1, CFG.heads, 1 + CFG.feature_dim**2 + CFG.feature_dim, CFG.head_dim)
    assert cache["layer_2"]["swa"]["k"].shape == (1, CFG.window, CFG.heads, CFG.head_dim)
