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
