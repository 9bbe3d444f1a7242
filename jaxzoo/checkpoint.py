"""Orbax checkpoints: save (async), keep the last K, restore into a sharded target, config as JSON.

Any pytree can be saved (a ``TrainState``, a params dict). It is stored through its flax state dict, so
dataclasses and optax's named tuples round-trip. Restoring checks the saved tree against the target
first and raises ``ValueError`` naming the first key whose structure or shape differs.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization
from flax.traverse_util import flatten_dict

from jaxzoo.config import save_config


def _flat_shapes(state_dict: Any) -> dict[str, tuple[int, ...]]:
    flat = flatten_dict(state_dict, sep="/") if isinstance(state_dict, dict) else {"": state_dict}
    return {k: tuple(getattr(v, "shape", np.shape(v))) for k, v in flat.items()}


def _abstract(x: Any) -> Any:
    sharding = getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)


class Checkpointer:
    """Save and restore pytrees under ``directory/<step>`` with orbax, keeping the last ``keep``.

    >>> ckpt = Checkpointer("/tmp/run/checkpoints", keep=3)
    >>> ckpt.save(100, state, config=cfg)
    >>> state = ckpt.restore(state)          # latest step, with the target's shardings
    """

    def __init__(self, directory: str | pathlib.Path, *, keep: int = 3, async_save: bool = True):
        if keep < 1:
            raise ValueError(f"keep must be at least 1 checkpoint; got {keep}")
        self.directory = pathlib.Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
        )

    def save(self, step: int, state: Any, *, config: Any = None) -> None:
        """Save ``state`` as ``step`` (asynchronously when enabled); also write ``config.json`` if given."""
        if config is not None:
            save_config(self.directory, config)
        self._manager.save(int(step), args=ocp.args.StandardSave(serialization.to_state_dict(state)))

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def restore(self, target: Any, step: int | None = None) -> Any:
        """Restore into the structure, dtypes and shardings of ``target`` (arrays or ShapeDtypeStructs).

        Raises ``FileNotFoundError`` when there is no checkpoint and ``ValueError`` naming the first
        mismatching key when the saved tree differs from ``target``.
        """
        self._manager.wait_until_finished()
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"no checkpoint found in {self.directory}")
        elif step not in self.all_steps():
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.directory}; saved: {self.all_steps()}"
            )
        target_dict = serialization.to_state_dict(target)
        metadata = self._manager.item_metadata(step)
        saved = _flat_shapes(getattr(metadata, "tree", metadata))
        wanted = _flat_shapes(target_dict)
        for key in sorted(set(saved) | set(wanted)):
            if key not in saved:
                raise ValueError(f"checkpoint step {step} has no key {key!r} that the target expects")
            if key not in wanted:
                raise ValueError(f"checkpoint step {step} has key {key!r} that the target does not have")
            if saved[key] != wanted[key]:
                raise ValueError(
                    f"checkpoint step {step}: key {key!r} has shape {saved[key]}, the target expects {wanted[key]}"
                )
        abstract = jax.tree.map(_abstract, target_dict)
        restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        return serialization.from_state_dict(target, restored)

    def wait(self) -> None:
        """Block until asynchronous saves have finished."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
