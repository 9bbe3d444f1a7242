"""Every documented bad input raises ValueError with a sentence, before anything is traced."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrt
from jrt.losses import loss_fn
from jrt.ops import sliding_window_attention

CFG = jrt.JRTConfig.tiny()
Z = np.zeros


def test_encoder_longer_than_sequence():
    q = Z((1, 4, 2, 3), np.float32)
    with pytest.raises(ValueError, match="M must be at most the sequence length L.*M=5 > L=4"):
        jrt.prefix_linear_attention(q, q, q, Z((1, 5, 2, 3)), Z((1, 5, 2, 3)))
    with pytest.raises(ValueError, match="M=8 must be at most the sequence length L=5"):
        jrt.LM(CFG).apply({"params": {}}, jnp.zeros((1, 5), jnp.int32))


def test_feature_dim_must_match_feature_map():
    state = jrt.LinearAttentionState(kv=Z((1, 2, 10, 4)), k_sum=Z((1, 2, 10)))  # F=10 is not 1+f+f^2 for f=4
    with pytest.raises(ValueError, match=r"does not match the feature map: f=4 gives F=1\+f\+f\^2=21"):
        jrt.decode_step(state, Z((1, 2, 4)), Z((1, 2, 4)), Z((1, 2, 4)))
    with pytest.raises(ValueError, match="q and k must have the same shape"):
        jrt.linear_attention(Z((1, 4, 2, 3)), Z((1, 4, 2, 5)), Z((1, 4, 2, 3)))


def test_heads_must_divide_d_model():
    with pytest.raises(ValueError, match="heads must divide d_model, but got d_model=30 and heads=4"):
        jrt.JRTConfig.tiny(d_model=30, heads=4)


def test_unknown_mixer_name():
    with pytest.raises(ValueError, match=r"Every mixer must be one of .* but got 'mamba'"):
        jrt.JRTConfig.tiny(mixers=("conv", "mamba"))
    with pytest.raises(ValueError, match="either JRT .* or Based"):
        jrt.JRTConfig.tiny(mixers=("pla", "la"))


def test_prompt_longer_than_context():
    with pytest.raises(ValueError, match="longer than the configured context max_len=64"):
        jrt.generate({}, CFG, np.ones((1, 60), np.int32), 10)
    with pytest.raises(ValueError, match="The sequence has 65 tokens, longer than the configured context 64"):
        jrt.LM(CFG).apply({"params": {}}, jnp.zeros((1, 65), jnp.int32))


def test_token_ids_outside_vocab():
    with pytest.raises(
        ValueError, match=r"prompt must be token ids in \[0, 64\), but got values in \[1, 64\]"
    ):
        jrt.generate({}, CFG, np.array([[1, 64]]), 2)
    with pytest.raises(ValueError, match=r"input_ids must be token ids in \[0, 64\)"):
        jrt.LM(CFG).apply({"params": {}}, -jnp.ones((1, 9), jnp.int32))


def test_wrong_ranks_and_shapes():
    with pytest.raises(ValueError, match=r"q must have rank 4 \(\[B, L, H, f\]\), but got shape \(4, 2, 3\)"):
        jrt.linear_attention(Z((4, 2, 3)), Z((1, 4, 2, 3)), Z((1, 4, 2, 3)))
    with pytest.raises(ValueError, match="v must share"):
        jrt.linear_attention(Z((1, 4, 2, 3)), Z((1, 4, 2, 3)), Z((1, 5, 2, 3)))
    with pytest.raises(ValueError, match="mask must have shape"):
        jrt.linear_attention(Z((1, 4, 2, 3)), Z((1, 4, 2, 3)), Z((1, 4, 2, 3)), mask=Z((1, 3), bool))
    with pytest.raises(ValueError, match="k_enc must have shape"):
        q = Z((1, 4, 2, 3))
        jrt.prefix_linear_attention(q, q, q, Z((1, 2, 1, 3)), Z((1, 2, 2, 3)))
    with pytest.raises(ValueError, match="input_ids must have rank 2"):
        jrt.LM(CFG).apply({"params": {}}, jnp.zeros((9,), jnp.int32))
    with pytest.raises(ValueError, match="decode mode takes one token"):
        jrt.LM(CFG).apply({"params": {}}, jnp.zeros((1, 2), jnp.int32), mode="decode")
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        jrt.linear_attention(Z((1, 4, 2, 3)), Z((1, 4, 2, 3)), Z((1, 4, 2, 3)), chunk_size=0)
    with pytest.raises(ValueError, match="rank 4"):
        sliding_window_attention(Z((4, 2, 3)), Z((4, 2, 3)), Z((4, 2, 3)), window=2)


def test_bad_batch_and_configs():
    with pytest.raises(ValueError, match="The batch needs 'labels'"):
        loss_fn({}, {"input_ids": jnp.zeros((1, 9), jnp.int32)}, jax.random.key(0), CFG)
    with pytest.raises(ValueError, match="encoder_len M must be in"):
        jrt.JRTConfig.tiny(encoder_len=100)
    with pytest.raises(ValueError, match="mlm_prob must be in"):
        jrt.JRTConfig.tiny(mlm_prob=1.5)
    with pytest.raises(ValueError, match=r"warmup_steps must be in \[0, steps=5\], but got 10"):
        jrt.RunConfig(model=CFG, optimizer=jrt.REFERENCE_OPTIMIZER.replace(warmup_steps=10), steps=5)
    with pytest.raises(ValueError, match="RunConfig.model must be a JRTConfig"):
        jrt.RunConfig(model={"d_model": 32})
    with pytest.raises(ValueError, match="precision must be a jaxzoo.Precision or a dtype name"):
        jrt.JRTConfig.tiny(precision="int8")
    with pytest.raises(ValueError, match="max_new_tokens must be at least 1"):
        jrt.generate({}, CFG, np.ones((1, 9), np.int32), 0)


def _batch(**kw):
    x = np.ones((2, 10), np.int32)
    return {"input_ids": x, "labels": x.copy(), **kw}


def test_generate_mask_errors():
    prompt = np.ones((2, 10), np.int32)
    right = np.ones((2, 10), bool)
    right[1, 7:] = False
    with pytest.raises(ValueError, match="must be left padding .* row 1 has a padded position after a real"):
        jrt.generate({}, CFG, prompt, 2, mask=right)
    empty = np.ones((2, 10), bool)
    empty[0] = False
    with pytest.raises(ValueError, match="row 0 is all padding"):
        jrt.generate({}, CFG, prompt, 2, mask=empty)
    with pytest.raises(
        ValueError, match=r"must have the shape \[B, L\] = \(2, 10\) of the token ids, but got \(4, 5\)"
    ):
        jrt.generate({}, CFG, prompt, 2, mask=np.ones((4, 5), bool))  # same size: reshaped silently before


def test_loss_batch_errors():
    key = jax.random.key(0)
    with pytest.raises(
        ValueError, match=r"labels must be token ids in \[0, 64\) or the ignore index -100, but got 64"
    ):
        loss_fn({}, _batch(labels=np.full((2, 10), 64, np.int32)), key, CFG)
    with pytest.raises(ValueError, match="or the ignore index -100, but got -1"):
        loss_fn({}, _batch(labels=-np.ones((2, 10), np.int32)), key, CFG)
    with pytest.raises(ValueError, match="labels must be integer token ids .* but got dtype float32"):
        loss_fn({}, _batch(labels=np.ones((2, 10), np.float32)), key, CFG)
    right = np.ones((2, 10), bool)
    right[0, -2:] = False
    with pytest.raises(ValueError, match=r"batch\['mask'\] must be left padding"):
        loss_fn({}, _batch(mask=right), key, CFG)
    with pytest.raises(ValueError, match=r"batch\['mask'\] row 1 is all padding"):
        loss_fn({}, _batch(mask=np.array([[True] * 10, [False] * 10])), key, CFG)
    with pytest.raises(ValueError, match=r"must have the shape \[B, L\] = \(2, 10\)"):
        loss_fn({}, _batch(mask=np.ones((1, 20), bool)), key, CFG)
    # jrt.train checks each batch on the host, before the jitted step (where a bad label gives NaN).
    run = jrt.RunConfig(model=CFG, steps=2, batch_size=2)
    with pytest.raises(ValueError, match="labels must be token ids"):
        jrt.train(
            run,
            {"input_ids": np.ones((2, 10), np.int32), "labels": np.full((2, 10), 99, np.int32)},
            progress=False,
        )


def test_mask_token_collision_is_refused():
    """The default [MASK] id (vocab_size - 1) is a valid MQAR value token: refuse it while MLM is on."""
    data = jrt.mqar(8, seq_len=16, num_kv_pairs=4, vocab_size=CFG.vocab_size, seed=0)
    x = data["input_ids"].copy()
    x[0, 1] = CFG.mask_id
    with pytest.raises(
        ValueError, match=r"input_ids contain the \[MASK\] id 63 \(mask_token_id\) while the MLM"
    ):
        loss_fn({}, {"input_ids": x, "labels": data["labels"]}, jax.random.key(0), CFG)
    syn = jrt.JRTConfig.synthetic(64, seq_len=16, context_len=8, mlm_prob=0.15)
    assert syn.mask_id == 64 and syn.vocab_size == 65  # reserved beyond the task's ids
    with pytest.raises(ValueError, match="attn must be 'pla'"):
        jrt.JRTConfig.synthetic(64, attn="mamba")
