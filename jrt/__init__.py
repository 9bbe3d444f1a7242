"""jrt: JRT-RNN ("Just read twice", arXiv 2407.05483) and its causal baseline Based, in JAX/Flax.

`jrt.LM(config=cfg)` is the language model (mixers: BaseConv, sliding-window attention, prefix linear
attention for JRT or causal linear attention for Based); the maths lives in `jrt.ops`. Training runs on the
jaxzoo runtime: `jrt.RunConfig` (model + optimizer + steps) -> `jrt.init_state` / `jrt.make_train_step` /
`jrt.train`, and `jaxzoo.rebuild(workdir)` brings a run back from its folder. Small synthetic tasks:
`jrt.JRTConfig.synthetic(...)` + `jrt.RunConfig.synthetic(model)`. Released PyTorch checkpoints:
`jrt.from_torch_state_dict` / `jrt.to_torch_state_dict` (and `JRTConfig(padding="reference")` to score
left-padded prompts as the authors' harness does).
"""

from jrt.config import MIXERS, JRTConfig, layer_pattern
from jrt.convert import from_torch_state_dict, to_torch_state_dict
from jrt.data import batch_iterator, mqar, recall_accuracy, repeat_context, set_disjointness
from jrt.flops import flops_per_example
from jrt.generate import decode_token, generate, pad_prompt, prefill_cache
from jrt.losses import IGNORE, check_batch, cross_entropy, eval_metrics, loss_fn, make_loss_fn, mlm_mask
from jrt.model import LM, init_params, sharding_examples
from jrt.ops import (
    LinearAttentionState,
    decode_step,
    feature_dim,
    linear_attention,
    prefill,
    prefix_linear_attention,
    prefix_positions,
    taylor_feature_map,
)
from jrt.prompt import contains_match, jrt_prompt, jrt_prompt_text, truncate_context, truncate_context_text
from jrt.train import (
    REFERENCE_OPTIMIZER,
    RunConfig,
    decay_mask,
    evaluate,
    init_state,
    make_optimizer,
    make_train_step,
    train,
)

__all__ = [
    "IGNORE",
    "LM",
    "MIXERS",
    "REFERENCE_OPTIMIZER",
    "JRTConfig",
    "LinearAttentionState",
    "RunConfig",
    "batch_iterator",
    "check_batch",
    "contains_match",
    "cross_entropy",
    "decay_mask",
    "decode_step",
    "decode_token",
    "eval_metrics",
    "evaluate",
    "feature_dim",
    "flops_per_example",
    "from_torch_state_dict",
    "generate",
    "init_params",
    "init_state",
    "jrt_prompt",
    "jrt_prompt_text",
    "layer_pattern",
    "linear_attention",
    "loss_fn",
    "make_loss_fn",
    "make_optimizer",
    "make_train_step",
    "mlm_mask",
    "mqar",
    "pad_prompt",
    "prefill",
    "prefill_cache",
    "prefix_linear_attention",
    "prefix_positions",
    "recall_accuracy",
    "repeat_context",
    "set_disjointness",
    "sharding_examples",
    "taylor_feature_map",
    "to_torch_state_dict",
    "train",
    "truncate_context",
    "truncate_context_text",
]
