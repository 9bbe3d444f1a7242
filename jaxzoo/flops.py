"""Cost accounting: FLOPs of a compiled function from XLA, device peaks, and model FLOPs utilisation.

Every package gives an analytic ``flops_per_example(config, ...)`` (training: forward + backward = 3x the
forward's matmul FLOPs, counting a multiply-add as 2); its tests compare it with XLA's cost analysis
(``xla_flops``). ``jaxzoo.fit(..., examples_per_step=B, flops_per_step=B * f)`` then logs examples/s,
FLOP/s and MFU against ``peak_flops()`` of the device (unknown peaks, e.g. CPUs, give no MFU).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

# Dense bf16 peak FLOP/s per device (vendor figures, without sparsity).
PEAK_BF16 = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L4": 121e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
}


def peak_flops(device: Any = None) -> float | None:
    """Dense bf16 peak FLOP/s of ``device`` (default: the first device), or None when unknown (CPUs)."""
    device = jax.devices()[0] if device is None else device
    kind = getattr(device, "device_kind", "")
    for name, peak in PEAK_BF16.items():
        if name.lower() in kind.lower():
            return peak
    return None


def xla_flops(fn: Callable, *args: Any, **kwargs: Any) -> float:
    """FLOPs XLA counts for one call of ``jax.jit(fn)(*args, **kwargs)`` (its cost analysis)."""
    compiled = jax.jit(fn).lower(*args, **kwargs).compile()
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):
        cost = cost[0]
    if not cost or "flops" not in cost:
        raise ValueError("XLA's cost analysis reports no FLOPs for this function on this backend")
    return float(cost["flops"])


def mfu(flops_per_second: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: achieved / peak (None without a peak)."""
    if peak is None or peak <= 0:
        return None
    return flops_per_second / peak
