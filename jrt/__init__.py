"""jrt: JRT-RNN ("Just read twice", arXiv 2407.05483) and its causal baseline Based, in JAX/Flax.

`jrt.LM(cfg)` is the language model (mixers: BaseConv, sliding-window attention, prefix linear attention
for JRT or causal linear attention for Based); the maths lives in `jrt.ops`.
"""

from jrt.config import MIXERS, JRTConfig, layer_pattern
from jrt.data import batch_iterator, mqar, recall_accuracy, repeat_context, set_disjointness
from jrt.generate import decode_token, generate, pad_prompt, prefill_cache
from jrt.losses import IGNORE, cross_entropy, eval_metrics, loss_fn, make_loss_fn, mlm_mask
from jrt.model import LM, init_params, param_count
from jrt.ops import (
    LinearAttentionState,
    decode_step,
    feature_dim,
    linear_attention,
    prefill,
    prefix_linear_attention,
    taylor_feature_map,
)
from jrt.prompt import contains_match, jrt_prompt, jrt_prompt_text, truncate_context
from jrt.train import TrainConfig, create_train_state, lr_schedule, make_optimizer, make_train_step

__all__ = [
    "contains_match",
    "create_train_state",
    "cross_entropy",
    "decode_step",
    "decode_token",
    "eval_metrics",
    "feature_dim",
    "generate",
    "IGNORE",
    "init_params",
    "jrt_prompt",
    "jrt_prompt_text",
    "JRTConfig",
    "layer_pattern",
    "linear_attention",
    "LinearAttentionState",
    "LM",
    "loss_fn",
    "lr_schedule",
    "make_loss_fn",
    "make_optimizer",
    "make_train_step",
    "MIXERS",
    "mlm_mask",
    "pad_prompt",
    "param_count",
    "prefill",
    "prefill_cache",
    "prefix_linear_attention",
    "taylor_feature_map",
    "TrainConfig",
    "truncate_context",
    "batch_iterator",
    "mqar",
    "recall_accuracy",
    "repeat_context",
    "set_disjointness",
]
