"""The whole training pipeline (jrt.data -> JRTConfig/LM -> loss -> jrt.train on jaxzoo) learns MQAR.

A regression guard, not a benchmark: a 2-layer JRT-RNN (BaseConv + PLA, the context as the prefix)
trained for a few hundred steps on 4 key-value pairs must recall far above chance (1/32). Measured on a
2-core CPU: test accuracy about 0.9 after 300 steps, ~60 s.
"""

import jax
import pytest

import jrt
from jrt.data import mqar

VOCAB, SEQ_LEN, PAIRS = 64, 32, 4


@pytest.mark.slow
def test_jrt_rnn_learns_mqar():
    cfg = jrt.JRTConfig.synthetic(VOCAB, seq_len=SEQ_LEN, context_len=2 * PAIRS, attn="pla", feature_dim=8)
    assert cfg.mask_id == VOCAB and cfg.vocab_size == VOCAB + 1  # [MASK] reserved beyond MQAR's values
    run = jrt.RunConfig.synthetic(cfg, steps=300, batch_size=32)
    assert run.optimizer.warmup(run.steps) == 30
    # Filler tokens 0 (zoology's ICLR figure-2 setting) so that 300 steps suffice on a CPU.
    train = mqar(
        4096, seq_len=SEQ_LEN, num_kv_pairs=PAIRS, vocab_size=VOCAB, random_non_queries=False, seed=0
    )
    test = mqar(256, seq_len=SEQ_LEN, num_kv_pairs=PAIRS, vocab_size=VOCAB, random_non_queries=False, seed=1)

    before = jrt.evaluate(jrt.init_state(run).state.params, test, cfg)["example_accuracy"]
    state, history = jrt.train(run, train, rng=jax.random.key(1), log_every=1, progress=False)
    after = jrt.evaluate(state.params, test, cfg)
    chance = 1 / (VOCAB // 2)
    assert len(history) == run.steps  # log_every=1: one record per step
    assert before < 3 * chance
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert after["example_accuracy"] > 0.5, after  # chance is 1/32
