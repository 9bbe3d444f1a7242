"""Test-wide setup: eight fake CPU devices, so sharded code runs on a laptop or CI.

XLA reads XLA_FLAGS once, when jax is first imported, so this must run before any test imports jax.
"""

import os

_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
