"""A ragged (left-padded) batch gives each row exactly what that row gives alone: forward logits, loss,
prefill state and generated tokens, for prompts shorter than, equal to and longer than M (issue 17.1).

JRT's non-causal prefix is each row's own first M real tokens (`jrt.ops.prefix_positions`), not the first
M columns of the padded batch.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrt
from jrt.model import apply_fn

CFG = jrt.JRTConfig.tiny(init_std=0.3)  # M = 8, chunk 8
BASED = jrt.JRTConfig.tiny_based(init_std=0.3)
LENGTHS = (5, 8, 13)  # shorter than, equal to and longer than M


def ragged(lengths, vocab, seed=0):
    """Left-padded [B, Lmax] prompts (padding = token 0, as a real id would be) and their masks."""
    rng = np.random.default_rng(seed)
    rows = [rng.integers(1, vocab - 1, n) for n in lengths]
    width = max(max(lengths), CFG.encoder_len)
    ids = np.zeros((len(rows), width), np.int32)
    mask = np.zeros((len(rows), width), bool)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = r
        mask[i, width - len(r) :] = True
    return rows, ids, mask


def test_prefix_positions_are_each_rows_first_m_real_tokens():
    mask = jnp.asarray([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1]], bool)
    index, valid = jrt.ops.prefix_positions(mask, 3)
    assert index[:2].tolist() == [[2, 3, 4], [0, 1, 2]] and index[2, 0] == 5
    assert valid.tolist() == [[True] * 3, [True] * 3, [True, False, False]]


@pytest.mark.parametrize("which", [pytest.param("jrt", marks=pytest.mark.slow), pytest.param("based", marks=pytest.mark.slow)])
def test_ragged_batch_equals_each_row_alone(which):
    """Generation (prefill state + decode) and the parallel forward; Based (causal only) is the control."""
    cfg = CFG if which == "jrt" else BASED
    params = jrt.init_params(cfg, jax.random.key(3))
    rows, ids, mask = ragged(LENGTHS, cfg.vocab_size)
    new = 4
    tokens, logits = jrt.generate(params, cfg, ids, new, mask=mask, return_logits=True)
    batch_fwd = apply_fn(cfg)(params, jnp.asarray(ids), jnp.asarray(mask))
    for i, row in enumerate(rows):
        alone_tokens, alone_logits = jrt.generate(params, cfg, row, new, return_logits=True)
        np.testing.assert_array_equal(tokens[i], alone_tokens[0])
        np.testing.assert_allclose(logits[i], alone_logits[0], rtol=1e-5, atol=1e-5)
        # The parallel forward at the row's real positions.
        p, pm = jrt.pad_prompt(cfg, row)
        alone = apply_fn(cfg)(params, jnp.asarray(p), jnp.asarray(pm))[0][pm[0]]
        np.testing.assert_allclose(batch_fwd[i][mask[i]], alone, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # > 10 s on 2 cores; CI's second pass runs it
def test_ragged_loss_equals_rows_alone():
    """eval loss and the MLM-free training loss of a ragged batch: the token-weighted mean of the rows'."""
    cfg = CFG.replace(mlm_prob=0.0)
    params = jrt.init_params(cfg, jax.random.key(5))
    lengths = (10, 16)
    rows, ids, mask = ragged(lengths, cfg.vocab_size, seed=2)
    labels = np.where(mask, np.roll(ids, -1, axis=1), jrt.IGNORE).astype(np.int32)
    labels[:, -1] = jrt.IGNORE
    batch = {"input_ids": jnp.asarray(ids), "labels": jnp.asarray(labels), "mask": jnp.asarray(mask)}
    loss, metrics = jrt.loss_fn(params, batch, jax.random.key(0), cfg)
    sums, counts = 0.0, 0.0
    for i, n in enumerate(lengths):
        one = {k: v[i : i + 1, -n:] for k, v in batch.items()}  # the row alone, no padding
        _, m = jrt.loss_fn(params, {k: v for k, v in one.items() if k != "mask"}, jax.random.key(0), cfg)
        sums += float(m["ntp_loss"]) * float(m["ntp_tokens"])
        counts += float(m["ntp_tokens"])
    assert float(metrics["ntp_tokens"]) == counts
    np.testing.assert_allclose(float(loss), sums / counts, rtol=1e-5)
