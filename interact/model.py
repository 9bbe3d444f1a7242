"""A small classifier (MLP) to explain: the model of the two-phase example and the sharding tests."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax

import jaxzoo


@dataclasses.dataclass(frozen=True)
class MLPConfig(jaxzoo.Config):
    """A ReLU MLP on flat features."""

    num_features: int = 64  # input width (8x8 digits: 64)
    hidden: tuple[int, ...] = (128, 128)  # hidden widths
    num_classes: int = 10  # output logits
    precision: jaxzoo.Precision = jaxzoo.Precision()  # parameter and compute dtypes

    def __post_init__(self):
        if self.num_features < 1 or self.num_classes < 1:
            raise ValueError(
                f"num_features and num_classes must be positive; got {self.num_features} and {self.num_classes}."
            )
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"Every hidden width must be positive; got {self.hidden}.")
        object.__setattr__(self, "hidden", tuple(self.hidden))

    @classmethod
    def tiny(cls) -> MLPConfig:
        """8 features, two hidden layers of 16, 4 classes: tests and smoke runs."""
        return cls(num_features=8, hidden=(16, 16), num_classes=4)

    @classmethod
    def digits(cls) -> MLPConfig:
        """The two-phase example's model: 8x8 digits (64 features), two hidden layers of 256, 10 classes."""
        return cls(num_features=64, hidden=(256, 256), num_classes=10)


class MLP(nn.Module):
    """x [..., num_features] -> logits [..., num_classes].

    Logical names: input "embed"; hidden axes alternate "mlp" (sharded over "model") and "embed", so no
    kernel names the "model" mesh axis twice; the logits "out". Layers are ``dense_0``, ``dense_1``, ...,
    ``head``.
    """

    config: MLPConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        if x.shape[-1] != cfg.num_features:
            raise ValueError(f"MLP expects inputs [..., {cfg.num_features}]; got shape {x.shape}.")
        prec = cfg.precision
        h = prec.cast(x)  # [..., F]
        axis_in = "embed"
        for i, width in enumerate(cfg.hidden):
            axis_out = "mlp" if i % 2 == 0 else "embed"
            h = jaxzoo.DenseGeneral(
                (width,), (axis_in, axis_out), dtype=prec.compute, param_dtype=prec.param, name=f"dense_{i}"
            )(h)  # [..., width]
            h = nn.relu(h)
            axis_in = axis_out
        logits = jaxzoo.DenseGeneral(
            (cfg.num_classes,), (axis_in, "out"), dtype=prec.compute, param_dtype=prec.param, name="head"
        )(h)  # [..., num_classes]
        return logits.astype(prec.dtype_for("logits"))
