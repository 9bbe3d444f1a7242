"""Dtypes by name, and one mixed-precision policy that every package accepts the same way.

Every model config has a ``precision: jaxzoo.Precision`` field. ``Precision()`` is float32 throughout;
``Precision.bf16()`` keeps parameters (and so the optimizer) in float32, computes matmuls in bfloat16, and
keeps the parts named in ``float32`` in float32 (norm statistics, softmax, the residual stream, losses,
logits, recurrent sums). ``Precision.bf16_params()`` also stores the parameters in bfloat16; pair it with
``OptimizerConfig(master_dtype="float32")`` (float32 master weights and optimizer state). A module asks ``precision.dtype_for("softmax")`` instead of deciding by itself.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxzoo.config import Config

_ALIASES = {
    "f32": "float32", "fp32": "float32", "float": "float32",
    "bf16": "bfloat16",
    "f16": "float16", "fp16": "float16", "half": "float16",
    "f64": "float64", "fp64": "float64", "double": "float64",
}
FLOAT_DTYPES = ("float32", "bfloat16", "float16", "float64")
PARTS = ("norm", "softmax", "residual", "loss", "logits", "state")


def parse_dtype(value: Any) -> jnp.dtype:
    """A floating dtype from a name ("bfloat16", "bf16", "float32", ...), a numpy/jax dtype or scalar type.

    Raises ``ValueError`` for anything that is not one of float32, bfloat16, float16 or float64.
    """
    if isinstance(value, str):
        name = _ALIASES.get(value.lower(), value.lower())
    else:
        try:
            name = jnp.dtype(value).name
        except TypeError:
            raise ValueError(f"expected a float dtype or its name {FLOAT_DTYPES}; got {value!r}") from None
    if name not in FLOAT_DTYPES:
        raise ValueError(f"expected a float dtype or its name {FLOAT_DTYPES}; got {value!r}")
    return jnp.dtype(name)


@dataclasses.dataclass(frozen=True)
class Precision(Config):
    """Mixed-precision policy: parameter dtype, compute dtype, and which parts stay float32."""

    param_dtype: str = "float32"  # dtype parameters (and optimizer moments) are stored in
    compute_dtype: str = "float32"  # dtype of activations and matmuls
    float32: tuple[str, ...] = PARTS  # parts computed in float32 whatever compute_dtype is (see PARTS)

    def __post_init__(self):
        for name in ("param_dtype", "compute_dtype"):
            value = getattr(self, name)
            canonical = parse_dtype(value).name
            if canonical != value:
                object.__setattr__(self, name, canonical)
        unknown = sorted(set(self.float32) - set(PARTS))
        if unknown:
            raise ValueError(f"Precision.float32 names unknown parts {unknown}; known parts are {PARTS}")
        object.__setattr__(self, "float32", tuple(self.float32))

    @classmethod
    def bf16(cls) -> Precision:
        """float32 parameters, bfloat16 compute, float32 norms/softmax/residual/loss/logits/state."""
        return cls(compute_dtype="bfloat16")

    @classmethod
    def bf16_params(cls) -> Precision:
        """bfloat16 parameters and compute (float32 parts as ``bf16``); train it with
        ``OptimizerConfig(master_dtype="float32")`` so the optimizer keeps float32 master weights and state."""
        return cls(param_dtype="bfloat16", compute_dtype="bfloat16")

    @classmethod
    def of(cls, value: Any) -> Precision:
        """A policy from a ``Precision``, ``None`` (float32) or a compute-dtype name ("bfloat16")."""
        if value is None:
            return cls()
        if isinstance(value, Precision):
            return value
        return cls(compute_dtype=parse_dtype(value).name)

    @property
    def param(self) -> jnp.dtype:
        return jnp.dtype(self.param_dtype)

    @property
    def compute(self) -> jnp.dtype:
        return jnp.dtype(self.compute_dtype)

    def dtype_for(self, part: str) -> jnp.dtype:
        """float32 (or float64 when computing in float64) for a part kept in full precision, else compute."""
        if part not in PARTS:
            raise ValueError(f"unknown precision part {part!r}; known parts are {PARTS}")
        if part in self.float32:
            return jnp.promote_types(self.compute, jnp.float32)
        return self.compute

    def cast(self, x: Any, part: str | None = None) -> Any:
        """``x`` in the compute dtype (or ``dtype_for(part)``), leaving integer arrays alone."""
        dtype = self.compute if part is None else self.dtype_for(part)
        x = jnp.asarray(x)
        return x.astype(dtype) if np.issubdtype(x.dtype, np.floating) else x
