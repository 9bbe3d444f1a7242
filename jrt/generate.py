"""Recurrent generation with a constant-size cache.

The prompt runs through the parallel form once ("prefill"), which leaves per layer: the LA/PLA state
(kv [B, H, F, dv], k_sum [B, H, F], the encoder sums folded in), the SWA rolling window of the last
`window` keys/values, and the BaseConv state (the last K-1 conv inputs). Each new token then costs one
"decode" step and the cache keeps its size, so memory does not grow with the number of generated tokens.

JRT prompts shorter than M = cfg.encoder_len are left-padded with cfg.pad_token_id up to M and masked
(the reference's `default_left_pad`); the mask keeps padded tokens out of every sum. A ragged batch is
left-padded ([B, L] prompt and mask); each row's encoder prefix is its own first M real tokens, so a row
generates what it generates alone (prompts shorter than, equal to or longer than M). The prefix is fixed
at prefill: a prompt with fewer than M real tokens keeps them as its whole prefix, and generated tokens
never join it (the reference's decode refuses encoder inputs after prefill).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jrt.config import JRTConfig
from jrt.model import LM, check_mask, check_token_ids


def pad_prompt(cfg: JRTConfig, prompt, mask=None):
    """Checks a concrete prompt and left-pads it to M for JRT. Returns (prompt [B, L'], mask [B, L'])."""
    prompt = np.asarray(prompt)
    if prompt.ndim == 1:
        prompt = prompt[None]
    if prompt.ndim != 2:
        raise ValueError(f"prompt must be [L] or [B, L] token ids, but got shape {prompt.shape}.")
    if not np.issubdtype(prompt.dtype, np.integer):
        raise ValueError(f"prompt must hold integer token ids, but got dtype {prompt.dtype}.")
    if prompt.shape[1] == 0:
        raise ValueError("prompt must hold at least one token, but got length 0.")
    check_token_ids(prompt, cfg.vocab_size, "prompt")
    if mask is None:
        mask = np.ones(prompt.shape, bool)
    else:
        mask = np.asarray(mask)
        if mask.ndim == 1 and prompt.shape[0] == 1:
            mask = mask[None]
        check_mask(mask, prompt.shape)
        mask = mask.astype(bool)
    short = cfg.prefix_len - prompt.shape[1]
    if short > 0:
        prompt = np.pad(prompt, ((0, 0), (short, 0)), constant_values=cfg.pad_token_id)
        mask = np.pad(mask, ((0, 0), (short, 0)), constant_values=False)
    return prompt.astype(np.int32), mask


def prefill_cache(params, cfg: JRTConfig, prompt, mask=None):
    """Run the prompt [B, L] in parallel; returns (logits [B, L, V], cache)."""
    logits, variables = LM(config=cfg).apply(
        {"params": params}, prompt, mask, mode="prefill", mutable=["cache"]
    )
    return logits, variables["cache"]


def decode_token(params, cfg: JRTConfig, cache, token):
    """One recurrent step: token [B] -> (logits [B, V], new cache of the same shapes)."""
    logits, variables = LM(config=cfg).apply(
        {"params": params, "cache": cache}, token[:, None], mode="decode", mutable=["cache"]
    )
    return logits[:, 0], variables["cache"]


def _sample(logits, rng, temperature):
    """Greedy where temperature == 0, else a draw from softmax(logits / temperature); temperature is traced."""
    greedy = jnp.argmax(logits, axis=-1)
    drawn = jax.random.categorical(rng, logits / jnp.maximum(temperature, 1e-6), axis=-1)
    return jnp.where(temperature > 0, drawn, greedy).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("cfg", "max_new_tokens"))
def _generate(params, cfg, prompt, mask, rng, max_new_tokens, temperature):
    logits, cache = prefill_cache(params, cfg, prompt, mask)
    keys = jax.random.split(rng, max_new_tokens)
    first = _sample(logits[:, -1], keys[0], temperature)

    def body(carry, key):
        cache, token = carry
        step_logits, cache = decode_token(params, cfg, cache, token)
        nxt = _sample(step_logits, key, temperature)
        return (cache, nxt), (nxt, step_logits)

    _, (rest, rest_logits) = jax.lax.scan(body, (cache, first), keys[1:])
    tokens = jnp.concatenate([first[:, None], rest.T], axis=1)  # [B, T]
    step_logits = jnp.concatenate([logits[:, -1:], jnp.swapaxes(rest_logits, 0, 1)], axis=1)  # [B, T, V]
    return tokens, step_logits


def generate(
    params,
    cfg: JRTConfig,
    prompt,
    max_new_tokens: int,
    rng=None,
    *,
    temperature: float = 0.0,
    mask=None,
    return_logits: bool = False,
):
    """Generate `max_new_tokens` tokens after `prompt` ([L] or [B, L] token ids, left-padded if ragged).

    temperature 0 is greedy decoding; otherwise tokens are sampled from softmax(logits / temperature).
    Returns tokens [B, max_new_tokens] int32 (and, with return_logits, the logits [B, T, V] each token
    was chosen from). The prompt plus the new tokens must fit in cfg.max_len.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, but got {max_new_tokens}.")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, but got {temperature}.")
    prompt, mask = pad_prompt(cfg, prompt, mask)
    total = prompt.shape[1] + max_new_tokens
    if total > cfg.max_len:
        raise ValueError(
            f"The prompt ({prompt.shape[1]} tokens after padding) plus {max_new_tokens} new tokens is "
            f"{total} tokens, longer than the configured context max_len={cfg.max_len}."
        )
    rng = jax.random.key(0) if rng is None else rng
    tokens, logits = _generate(params, cfg, prompt, mask, rng, int(max_new_tokens), jnp.float32(temperature))
    return (tokens, logits) if return_logits else tokens
