"""A small classifier (MLP) to explain: the model of the two-phase example and the sharding tests."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class MLPConfig:
    """A ReLU MLP on flat features."""

    num_features: int = 64  # input width (8x8 digits: 64)
    hidden: tuple[int, ...] = (128, 128)  # hidden widths
    num_classes: int = 10  # output logits
    dtype: str = "float32"  # compute and parameter dtype

    def __post_init__(self):
        if self.num_features < 1 or self.num_classes < 1:
            raise ValueError(
                f"num_features and num_classes must be positive; got {self.num_features} and {self.num_classes}."
            )
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"Every hidden width must be positive; got {self.hidden}.")


class MLP(nn.Module):
    """x [..., num_features] -> logits [..., num_classes]. Hidden axes alternate "mlp" (sharded over "model") and "embed"."""

    config: MLPConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        if x.shape[-1] != cfg.num_features:
            raise ValueError(f"MLP expects inputs [..., {cfg.num_features}]; got shape {x.shape}.")
        dtype = jnp.dtype(cfg.dtype)
        h = x.astype(dtype)
        axes_in = "features"
        for i, width in enumerate(cfg.hidden):
            # Alternate sharded / replicated hidden axes, so no kernel names the "model" mesh axis twice.
            axis_out = "mlp" if i % 2 == 0 else "embed"
            h = nn.Dense(
                width,
                dtype=dtype,
                param_dtype=dtype,
                kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), (axes_in, axis_out)),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axis_out,)),
                name=f"dense_{i}",
            )(h)  # [..., width]
            h = nn.relu(h)
            axes_in = axis_out
        return nn.Dense(
            cfg.num_classes,
            dtype=dtype,
            param_dtype=dtype,
            kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), (axes_in, "classes")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("classes",)),
            name="head",
        )(h)  # [..., num_classes]
