"""Starting JAX's distributed runtime: one call for a laptop, a multi-node GPU cluster or a TPU pod.

``jaxzoo.initialize()`` is a no-op in a single process. With several processes it wraps
``jax.distributed.initialize`` from its arguments or the environment:

- explicit: ``initialize("10.0.0.1:1234", num_processes=4, process_id=i)``;
- environment: ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` (and optionally
  ``JAX_LOCAL_DEVICE_IDS``, comma-separated), as a launcher script sets them;
- SLURM (``SLURM_JOB_ID`` with more than one task) and Cloud TPU pods: JAX detects the cluster itself.

After it, ``jax.devices()`` lists every process's devices, so ``jaxzoo.make_mesh`` builds one global mesh;
``jaxzoo.shard_batch`` assembles global batches from each process's rows; ``jaxzoo.fit`` writes metrics
and progress from process 0 only while every process writes its checkpoint shards.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax

_STARTED = False


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: Sequence[int] | None = None,
) -> tuple[int, int]:
    """Start the distributed runtime if this is a multi-process run; returns ``(process_index, count)``.

    Must run before anything touches a JAX backend (array creation, ``jax.devices()``). Calling it twice
    is harmless.
    """
    global _STARTED
    env = os.environ
    coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = _int_env("JAX_NUM_PROCESSES")
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = _int_env("JAX_PROCESS_ID")
    if local_device_ids is None and env.get("JAX_LOCAL_DEVICE_IDS"):
        local_device_ids = [int(i) for i in env["JAX_LOCAL_DEVICE_IDS"].split(",")]
    if _STARTED:
        return jax.process_index(), jax.process_count()
    explicit = coordinator_address is not None or num_processes not in (None, 1)
    cluster = int(env.get("SLURM_NTASKS", "1") or 1) > 1 or "TPU_WORKER_HOSTNAMES" in env
    if explicit:
        if coordinator_address is None or num_processes is None or process_id is None:
            raise ValueError(
                "a multi-process run needs coordinator_address, num_processes and process_id (or the "
                f"JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID variables); got "
                f"{coordinator_address!r}, {num_processes!r}, {process_id!r}"
            )
        if not 0 <= process_id < num_processes:
            raise ValueError(f"process_id must lie in [0, {num_processes}); got {process_id}")
        jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                   local_device_ids=local_device_ids)
        _STARTED = True
    elif cluster:
        jax.distributed.initialize()
        _STARTED = True
    return jax.process_index(), jax.process_count()


def _int_env(name: str) -> int:
    try:
        return int(os.environ[name])
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer; got {os.environ[name]!r}") from None
