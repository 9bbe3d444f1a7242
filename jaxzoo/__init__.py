"""jaxzoo: the one runtime of the five research packages.

- ``jaxzoo.sharding``: meshes, the logical axis vocabulary ``AXES``, rules, sharded init, batch placement.
- ``jaxzoo.state``: the state planner (``plan_state``), bytes per device, ``rebuild`` from a work directory.
- ``jaxzoo.train``: ``TrainState``, the jitted/sharded train step, and the ``fit`` loop.
- ``jaxzoo.optim``: ``OptimizerConfig`` and ``make_optimizer`` (schedules, warm-up, decay, clipping, EMA, float32 master weights).
- ``jaxzoo.config``: ``Config``, the frozen-dataclass base whose instances round-trip through JSON.
- ``jaxzoo.precision``: ``Precision`` (mixed-precision policy) and ``parse_dtype``.
- ``jaxzoo.nn``: the layer kit (DenseGeneral, attention, norms, RoPE, parameter counting).
- ``jaxzoo.checkpoint``: orbax checkpoints with the config saved as JSON.
- ``jaxzoo.data``: grain input pipelines over on-disk array shards, sharded by process, resumable.
- ``jaxzoo.distributed``: ``initialize`` for multi-process runs (clusters, pods).
- ``jaxzoo.script``: the harness of examples and benchmarks (flags, devices, timing, tables, results).
"""

from jaxzoo import data, flops
from jaxzoo.checkpoint import Checkpointer
from jaxzoo.config import Config, check_resume_config, load_config, save_config
from jaxzoo.distributed import initialize
from jaxzoo.nn import (
    Conv,
    DenseGeneral,
    GroupNorm,
    LayerNorm,
    RMSNorm,
    dot_product_attention,
    group_norm,
    layer_norm,
    param_count,
    rms_norm,
    rope,
)
from jaxzoo.optim import OptimizerConfig, ema_params, lr_schedule, make_optimizer, master_weights
from jaxzoo.precision import Precision, parse_dtype
from jaxzoo.sharding import (
    AXES,
    DEFAULT_RULES,
    batch_sharding,
    check_axis_names,
    extend_rules,
    init_sharded,
    logical_shardings,
    make_mesh,
    replicated,
    rules_for_mesh,
    shard_batch,
)
from jaxzoo.state import Recipe, Run, StatePlan, bytes_per_device, module_init, plan_state, rebuild
from jaxzoo.train import TrainState, evaluate, fit, make_train_step, read_metrics, shardings_of

__all__ = [
    "AXES",
    "DEFAULT_RULES",
    "Checkpointer",
    "Config",
    "Conv",
    "DenseGeneral",
    "GroupNorm",
    "LayerNorm",
    "OptimizerConfig",
    "Precision",
    "RMSNorm",
    "Recipe",
    "Run",
    "StatePlan",
    "TrainState",
    "batch_sharding",
    "bytes_per_device",
    "check_axis_names",
    "check_resume_config",
    "data",
    "flops",
    "dot_product_attention",
    "ema_params",
    "extend_rules",
    "evaluate",
    "fit",
    "group_norm",
    "initialize",
    "init_sharded",
    "layer_norm",
    "load_config",
    "logical_shardings",
    "lr_schedule",
    "make_mesh",
    "make_optimizer",
    "master_weights",
    "make_train_step",
    "module_init",
    "param_count",
    "parse_dtype",
    "plan_state",
    "read_metrics",
    "rebuild",
    "replicated",
    "rms_norm",
    "rope",
    "rules_for_mesh",
    "save_config",
    "shard_batch",
    "shardings_of",
]
