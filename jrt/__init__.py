"""jrt: JRT-RNN ("Just read twice", arXiv 2407.05483) and its causal baseline Based, in JAX/Flax."""

from jrt.ops import (
    LinearAttentionState,
    decode_step,
    linear_attention,
    prefill,
    prefix_linear_attention,
    taylor_feature_map,
)

__all__ = [
    "LinearAttentionState",
    "decode_step",
    "linear_attention",
    "prefill",
    "prefix_linear_attention",
    "taylor_feature_map",
]
