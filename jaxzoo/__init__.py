"""jaxzoo: the small shared runtime of the five research packages.

- ``jaxzoo.sharding``: meshes, logical-axis rules, sharded initialisation, batch placement.
- ``jaxzoo.train``: ``TrainState``, the jitted/sharded train step, and the ``fit`` loop.
- ``jaxzoo.checkpoint``: orbax checkpoints with the config saved as JSON.
- ``jaxzoo.io``: output folders and JSON results for examples.
"""

from jaxzoo.checkpoint import Checkpointer, load_config, save_config
from jaxzoo.io import output_dir, write_json
from jaxzoo.sharding import (
    DEFAULT_RULES,
    batch_sharding,
    extend_rules,
    init_sharded,
    logical_shardings,
    make_mesh,
    replicated,
    shard_batch,
)
from jaxzoo.train import TrainState, create_sharded_state, fit, make_train_step, read_metrics, shardings_of

__all__ = [
    "DEFAULT_RULES",
    "Checkpointer",
    "TrainState",
    "batch_sharding",
    "create_sharded_state",
    "extend_rules",
    "fit",
    "init_sharded",
    "load_config",
    "logical_shardings",
    "make_mesh",
    "make_train_step",
    "output_dir",
    "read_metrics",
    "replicated",
    "save_config",
    "shard_batch",
    "shardings_of",
    "write_json",
]
