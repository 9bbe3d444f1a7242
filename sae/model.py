"""The SAE as a Linen module: parameters with logical axis names, encode / decode / __call__ calling ops.

Parameter tree (float32; with ``SAEConfig.precision = Precision.bf16_params()`` all but the threshold bfloat16)::

    W_enc [d_in, d_sae]   ("embed", "latent")      W_dec [d_sae, d_in]   ("latent", "embed")
    b_enc [d_sae]         ("latent",)              b_dec [d_in]          ("embed",)
    gated:      b_gate, r_mag, b_mag [d_sae] instead of b_enc (as SAELens)
    jumprelu:   threshold [d_sae] (trained);  batchtopk, matryoshka: threshold [d_sae] (the training EMA)

TopK-family SAEs with a free decoder (``cfg.rescale_by_decoder_norm``) run the top-k (or threshold) on
z_i * ||W_dec,i|| and decode f_i / ||W_dec,i||, as SAELens' ``rescale_acts_by_decoder_norm``; after
``sae.final_params`` the norms are folded in (unit rows), where both rescalings are the identity.

"latent" maps to the "model" mesh axis in jaxzoo's default rules, so d_sae shards across it.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

import jaxzoo
from sae import ops
from sae.config import ARCHITECTURES, THRESHOLD_ARCHITECTURES, SAEConfig

EMBED, LATENT = "embed", "latent"


def init_decoder(rng, cfg: SAEConfig):
    """W_dec [d_sae, d_in]: Kaiming-uniform, rows rescaled to unit norm (constrained decoder) or to
    ``decoder_init_norm`` (SAELens' heuristic init)."""
    bound = math.sqrt(6.0 / cfg.d_sae)  # kaiming_uniform on the [d_sae, d_in] weight (fan_in = d_sae)
    w = jax.random.uniform(rng, (cfg.d_sae, cfg.d_in), jnp.float32, -bound, bound)
    norm = 1.0 if cfg.constrain_decoder else cfg.decoder_init_norm
    return ops.normalize_rows(w) * norm


def low_precision(cfg: SAEConfig) -> bool:
    """Whether the SAE computes in a dtype narrower than float32 (``cfg.precision.compute_dtype``)."""
    return cfg.precision.compute_dtype not in ("float32", "float64")


def cast_input(x, cfg: SAEConfig):
    """Activations in the compute dtype (bfloat16 under a bf16 policy); unchanged in float32/float64."""
    return x.astype(cfg.precision.compute) if low_precision(cfg) else x


def cast_params(params, cfg: SAEConfig) -> dict:
    """The weights in the compute dtype for a low-precision policy; the threshold stays float32 (a JumpReLU
    threshold compares against bf16 pre-activations in float32, and its gradient is summed in float32)."""
    if not low_precision(cfg):
        return params
    return {k: v if k == "threshold" else v.astype(cfg.precision.compute) for k, v in params.items()}


def check_input(x, cfg: SAEConfig, name: str = "activations") -> None:
    """Raise ValueError unless x has at least one axis and a last axis of size d_in."""
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) < 1 or shape[-1] != cfg.d_in:
        raise ValueError(
            f"{name} must have shape [..., d_in={cfg.d_in}]; got shape {None if shape is None else tuple(shape)}."
        )


class SAE(nn.Module):
    """Sparse autoencoder. ``encode``: x [..., d_in] -> f [..., d_sae]; ``decode``: f -> x_hat [..., d_in];
    ``__call__``: x -> (x_hat, f). ``train=True`` only matters for BatchTopK (batch top-k instead of the
    inference threshold; x must then be [B, d_in])."""

    config: SAEConfig

    def setup(self):
        cfg = self.config
        dtype = cfg.precision.param  # every weight but the threshold (float32 always)

        def zeros(rng, shape):
            return jnp.zeros(shape, dtype)

        self.W_dec = self.param(
            "W_dec",
            nn.with_logical_partitioning(lambda rng, _: init_decoder(rng, cfg).astype(dtype), (LATENT, EMBED)),
            None,
        )
        W_dec = self.W_dec
        self.W_enc = self.param(
            "W_enc", nn.with_logical_partitioning(lambda rng, _: jnp.asarray(W_dec).T, (EMBED, LATENT)), None
        )
        self.b_dec = self.param("b_dec", nn.with_logical_partitioning(zeros, (EMBED,)), (cfg.d_in,))
        if cfg.architecture == "gated":
            self.b_gate = self.param("b_gate", nn.with_logical_partitioning(zeros, (LATENT,)), (cfg.d_sae,))
            self.r_mag = self.param("r_mag", nn.with_logical_partitioning(zeros, (LATENT,)), (cfg.d_sae,))
            self.b_mag = self.param("b_mag", nn.with_logical_partitioning(zeros, (LATENT,)), (cfg.d_sae,))
        else:
            self.b_enc = self.param("b_enc", nn.with_logical_partitioning(zeros, (LATENT,)), (cfg.d_sae,))
        if cfg.architecture in THRESHOLD_ARCHITECTURES:
            theta0 = cfg.jumprelu_init_threshold if cfg.architecture == "jumprelu" else 0.0
            init = lambda rng, shape: jnp.full(shape, theta0, jnp.float32)
            self.threshold = self.param(
                "threshold", nn.with_logical_partitioning(init, (LATENT,)), (cfg.d_sae,)
            )

    def _p(self, name):
        """Parameter ``name`` as the losses see it (``cast_params``)."""
        return cast_params({name: getattr(self, name)}, self.config)[name]

    def _centre(self, x):
        x = cast_input(x, self.config)
        return x - self._p("b_dec") if self.config.apply_b_dec_to_input else x

    def pre_activation(self, x):
        """z [..., d_sae] (for gated: pi_gate)."""
        check_input(x, self.config)
        if self.config.architecture == "gated":
            return ops.gated_pre_activations(
                self._centre(x), self._p("W_enc"), self._p("b_gate"), self._p("r_mag"), self._p("b_mag")
            )[0]
        return ops.pre_activation(self._centre(x), self._p("W_enc"), self._p("b_enc"))

    def encode(self, x, train: bool = False):
        """f [..., d_sae] for x [..., d_in] (in the compute dtype)."""
        cfg = self.config
        check_input(x, cfg)
        x = self._centre(x)
        if cfg.architecture == "gated":
            return ops.gated_activation(
                *ops.gated_pre_activations(x, self._p("W_enc"), self._p("b_gate"), self._p("r_mag"),
                                           self._p("b_mag"))
            )
        z = ops.pre_activation(x, self._p("W_enc"), self._p("b_enc"))
        if cfg.rescale_by_decoder_norm:
            z = z * ops.row_norms(self._p("W_dec"))
        if cfg.architecture == "relu":
            return jax.nn.relu(z)
        if cfg.architecture == "topk":
            return ops.topk_activation(z, cfg.k)
        if cfg.architecture == "jumprelu":
            return ops.jumprelu(z, self.threshold, cfg.jumprelu_bandwidth)
        if train:  # batchtopk, matryoshka
            if z.ndim != 2:
                raise ValueError(f"BatchTopK training needs activations [B, d_in]; got shape {x.shape}.")
            return ops.batch_topk_activation(z, cfg.k)
        return ops.threshold_activation(z, jax.lax.stop_gradient(self.threshold))

    def decode(self, f):
        """x_hat [..., d_in] for f [..., d_sae] (in the compute dtype)."""
        if f.ndim < 1 or f.shape[-1] != self.config.d_sae:
            raise ValueError(
                f"latents must have shape [..., d_sae={self.config.d_sae}]; got shape {tuple(f.shape)}."
            )
        f = cast_input(f, self.config)
        W_dec = self._p("W_dec")
        if self.config.rescale_by_decoder_norm:
            f = f / ops.row_norms(W_dec)
        return ops.decode(f, W_dec, self._p("b_dec"))

    def __call__(self, x, train: bool = False):
        f = self.encode(x, train=train)
        return self.decode(f), f


def init_params(cfg: SAEConfig, rng, *, mesh=None, rules=None):
    """Fresh SAE parameters (plain arrays), sharded on ``mesh`` when given. Returns (params, shardings)."""
    module = SAE(cfg)
    x = jnp.zeros((1, cfg.d_in), cfg.precision.compute)
    if mesh is None:
        return nn.meta.unbox(module.init(rng, x)["params"]), None
    rules = jaxzoo.DEFAULT_RULES if rules is None else rules
    variables, shardings = jaxzoo.init_sharded(module, rng, x, mesh=mesh, rules=rules)
    return variables["params"], shardings["params"]


def sharding_examples() -> list[tuple[str, nn.Module, tuple]]:
    """One tiny SAE per architecture with a sample batch, for the repository's sharding test on a
    (data=4, model=2) mesh: d_sae 32 splits over "model", the batch of 8 over "data"."""
    x = jnp.zeros((8, 16), jnp.float32)
    return [(f"SAE/{arch}", SAE(SAEConfig.tiny(arch)), (x,)) for arch in ARCHITECTURES]


def apply(cfg: SAEConfig, params, x, method: str = "__call__", **kwargs):
    """Run a method of SAE(cfg) with ``params``: ``apply(cfg, params, x, "encode")``."""
    module = SAE(cfg, parent=None)  # top-level even when called inside another module (splice, steer)
    return module.apply({"params": params}, x, method=method, **kwargs)


def decoder_directions(params):
    """Unit-norm feature directions: the rows of W_dec normalised, [d_sae, d_in]."""
    return ops.normalize_rows(jnp.asarray(params["W_dec"]))
