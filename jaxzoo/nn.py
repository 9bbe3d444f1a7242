"""Layers every package needs and Flax does not give in a shardable form.

``DenseGeneral``: Flax's ``nn.DenseGeneral`` initialises its kernel flat ([prod(in), prod(out)]) and
reshapes it, so logical axis names for a multi-axis kernel (``("embed", "heads", "head_dim")``) do not fit
it and sharded initialisation fails. Here the kernel is created at its real shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Initializer = Callable[[jax.Array, tuple[int, ...], Any], jax.Array]


def flat_init(init: Initializer, n_in: int) -> Initializer:
    """Run a 2-D initializer on the flattened (fan_in, fan_out) view of an ``n_in``-input kernel and reshape,
    as a torch ``nn.Linear`` of the flattened sizes would (e.g. xavier-uniform over the flat matrix)."""

    def init_flat(key, shape, dtype=jnp.float32):
        flat = (math.prod(shape[:n_in]), math.prod(shape[n_in:]))
        return init(key, flat, dtype).reshape(shape)

    return init_flat


class DenseGeneral(nn.Module):
    """y = x . kernel (+ bias), contracting the last ``n_in`` axes of x.

    x [..., *in] -> y [..., *features]; kernel [*in, *features] with logical names ``axes`` (one per kernel
    axis); bias [*features] named by the last ``len(features)`` of ``axes``. Parameter names are
    ``kernel`` and ``bias``, as in Flax's Dense.
    """

    features: tuple[int, ...]
    axes: tuple[str | None, ...]
    n_in: int = 1
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros
    dtype: Any = jnp.float32  # computation dtype
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = tuple(self.features)
        if x.ndim < self.n_in:
            raise ValueError(
                f"DenseGeneral contracts the last {self.n_in} axes; got an input of shape {x.shape}"
            )
        shape = tuple(x.shape[x.ndim - self.n_in :]) + features
        if len(self.axes) != len(shape):
            raise ValueError(
                f"DenseGeneral kernel has shape {shape} but {len(self.axes)} logical axis names {self.axes}"
            )
        init = nn.with_logical_partitioning(self.kernel_init, tuple(self.axes))
        kernel = self.param("kernel", init, shape, self.param_dtype)
        y = jnp.tensordot(x.astype(self.dtype), kernel.astype(self.dtype), axes=self.n_in)
        if self.use_bias:
            bias_axes = tuple(self.axes[self.n_in :])
            bias = self.param(
                "bias", nn.with_logical_partitioning(self.bias_init, bias_axes), features, self.param_dtype
            )
            y = y + bias.astype(self.dtype)
        return y
