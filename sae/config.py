"""Configs: ``SAEConfig`` (the autoencoder: architecture, sparsity, initialisation) and ``RunConfig`` (a
training run: the model, the optimiser, steps, batch size, seed)."""

from __future__ import annotations

import dataclasses
import math

import jaxzoo

ARCHITECTURES = ("relu", "gated", "topk", "batchtopk", "jumprelu")
B_DEC_INITS = ("geometric_median", "mean", "zeros")


@dataclasses.dataclass(frozen=True)
class SAEConfig(jaxzoo.Config):
    """A sparse autoencoder x -> f(x) [d_sae] -> x_hat (the optimiser lives in ``RunConfig``).

    Architectures (see the reference note, section 1):
      - ``relu``: f = ReLU(z), loss MSE + lambda * L1 (decoder-norm weighted by default, Anthropic April 2024).
      - ``gated``: Rajamanoharan et al. 2024, paper-faithful aux loss (stop-gradient on the decoder).
      - ``topk``: Gao et al. 2024 (OpenAI), normalised MSE + AuxK/32 on dead latents.
      - ``batchtopk``: Bussmann et al. 2024, top k*B over the batch; inference uses a learned threshold.
      - ``jumprelu``: Rajamanoharan et al. 2024b (Gemma Scope), L0 loss with straight-through gradients,
        threshold parameterised directly (not as a log).
    """

    d_in: int = 256  # width of the activations being reconstructed
    d_sae: int = 4096  # number of latents (dictionary size); sharded over the "model" mesh axis
    architecture: str = "topk"  # one of ARCHITECTURES
    # --- sparsity ---
    k: int = 32  # active latents per token (topk) or on average per token (batchtopk)
    k_aux: int | None = None  # AuxK: how many dead latents reconstruct the residual; None -> d_in // 2 (DL)
    aux_coefficient: float = 1 / 32  # AuxK coefficient alpha (OpenAI; the loss is normalised, not SAELens')
    dead_tokens: int = 1_000_000  # a latent unfired for this many training tokens is dead (AuxK, resampling)
    l1_coefficient: float = 5.0  # lambda of the L1 penalty (relu: on f, gated: on ReLU(pi_gate))
    l0_coefficient: float = 1.0  # lambda of the L0 penalty sum_i H(z_i - theta_i) (jumprelu)
    l1_warmup_steps: int = 0  # the sparsity coefficient (L1 or L0) ramps linearly from 0 over these steps
    l1_decoder_norm: bool = True  # relu: weight each |f_i| by ||W_dec,i|| (decoder left unconstrained)
    jumprelu_bandwidth: float = 0.001  # epsilon of the rectangle-kernel straight-through estimator
    jumprelu_init_threshold: float = 0.001  # theta at initialisation (Gemma Scope / DL)
    batchtopk_threshold_decay: float = 0.99  # inference threshold <- d * threshold + (1 - d) * min kept act
    unit_norm_decoder: bool | None = None  # None: as the architecture's paper (all but L1-weighted relu)
    decoder_init_norm: float = 0.1  # row norm of W_dec at init when the decoder is unconstrained (SAELens)
    apply_b_dec_to_input: bool = True  # encode x - b_dec rather than x
    # --- data ---
    normalize_activations: bool = True  # train on x * s, s = sqrt(d_in) / mean ||x||; folded back afterwards
    b_dec_init: str = "geometric_median"  # one of B_DEC_INITS, computed on init_samples activations
    init_samples: int = 32768  # activations used for the norm scale and the b_dec initialisation
    resample_every: int = 0  # relu/gated: resample dead latents every this many steps (0 disables)

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"unknown SAE architecture {self.architecture!r}; expected one of {', '.join(ARCHITECTURES)}."
            )
        if self.d_in < 1 or self.d_sae < 1:
            raise ValueError(f"d_in and d_sae must be positive; got d_in={self.d_in}, d_sae={self.d_sae}.")
        if self.architecture in ("topk", "batchtopk"):
            if not 1 <= self.k <= self.d_sae:
                raise ValueError(f"k must be between 1 and d_sae={self.d_sae}; got k={self.k}.")
            if not 1 <= self.auxk_size <= self.d_sae:
                raise ValueError(f"k_aux must be between 1 and d_sae={self.d_sae}; got k_aux={self.k_aux}.")
        if self.b_dec_init not in B_DEC_INITS:
            raise ValueError(f"b_dec_init must be one of {B_DEC_INITS}; got {self.b_dec_init!r}.")
        if not 0.0 <= self.batchtopk_threshold_decay < 1.0:
            raise ValueError(
                f"batchtopk_threshold_decay must be in [0, 1); got {self.batchtopk_threshold_decay}."
            )
        if self.jumprelu_bandwidth <= 0:
            raise ValueError(f"jumprelu_bandwidth must be positive; got {self.jumprelu_bandwidth}.")
        for name in ("l1_coefficient", "l0_coefficient", "aux_coefficient", "init_samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative; got {getattr(self, name)}.")
        if self.resample_every and self.architecture not in ("relu", "gated"):
            raise ValueError(
                f"resample_every is for relu and gated SAEs (TopK/BatchTopK use AuxK); got {self.architecture!r}."
            )
        if self.dead_tokens < 1:
            raise ValueError(f"dead_tokens must be positive; got {self.dead_tokens}.")

    @property
    def auxk_size(self) -> int:
        """k_aux, defaulting to d_in // 2 (dictionary_learning, SAELens), at most d_sae."""
        return min(self.k_aux if self.k_aux is not None else max(self.d_in // 2, 1), self.d_sae)

    @property
    def constrain_decoder(self) -> bool:
        """Whether W_dec rows are kept unit-norm (with the parallel gradient component projected out)."""
        if self.unit_norm_decoder is not None:
            return self.unit_norm_decoder
        return not (self.architecture == "relu" and self.l1_decoder_norm)

    @property
    def default_learning_rate(self) -> float:
        """2e-4 / sqrt(d_sae / 2**14): dictionary_learning's TopK rule, used for every architecture."""
        return 2e-4 / math.sqrt(self.d_sae / 2**14)

    # --- presets ----------------------------------------------------------------------------------------
    @classmethod
    def tiny(cls, architecture: str = "topk") -> SAEConfig:
        """16 -> 32 latents, k 4: tests and smoke runs."""
        return cls(d_in=16, d_sae=32, architecture=architecture, k=4, init_samples=256, dead_tokens=256)

    @classmethod
    def toy(cls, architecture: str = "topk") -> SAEConfig:
        """The toy-superposition setting of examples/sae_toy_frontier.py: 256 -> 512 latents, k 5."""
        return cls(
            d_in=256, d_sae=512, architecture=architecture, k=5, init_samples=8192, dead_tokens=200_000
        )

    @classmethod
    def minilm(cls, expansion: int = 8) -> SAEConfig:
        """A TopK SAE (k 32) on MiniLM's 384-wide residual stream (examples/sae_minilm.py)."""
        return cls(d_in=384, d_sae=expansion * 384, architecture="topk", k=32, dead_tokens=200_000)

    @classmethod
    def gemmascope(cls, d_in: int = 2304, d_sae: int = 16384) -> SAEConfig:
        """A Gemma Scope JumpReLU SAE (Gemma 2 2B residual width, 16k latents), as ``load_gemmascope`` reads."""
        return cls(d_in=d_in, d_sae=d_sae, architecture="jumprelu", normalize_activations=False)


def default_optimizer(model: SAEConfig, learning_rate: float | None = None) -> jaxzoo.OptimizerConfig:
    """The SAE training recipe (SAELens / dictionary_learning): Adam (0.9, 0.999), no warm-up, constant
    rate then linear decay to 0 over the last 20% of steps ("wsd"), gradients clipped at norm 1, steps with
    NaN/inf gradients skipped. ``learning_rate`` None: ``model.default_learning_rate``."""
    lr = model.default_learning_rate if learning_rate is None else learning_rate
    return jaxzoo.OptimizerConfig(
        algorithm="adam",
        learning_rate=lr,
        schedule="wsd",
        warmup_steps=0,
        decay_fraction=0.2,
        end_lr_ratio=0.0,
        grad_clip=1.0,
        skip_nonfinite=True,
    )


@dataclasses.dataclass(frozen=True)
class RunConfig(jaxzoo.Config):
    """A training run of an SAE: what ``sae.train`` runs and ``jaxzoo.rebuild`` rebuilds from a workdir.

    ``optimizer=None`` resolves (at construction) to ``default_optimizer(model)``, whose learning rate is
    2e-4 / sqrt(d_sae / 2**14); give an ``OptimizerConfig`` (e.g. ``default_optimizer(model, 3e-3)``) to
    change it."""

    model: SAEConfig = SAEConfig()  # the autoencoder
    optimizer: jaxzoo.OptimizerConfig | None = None  # None: default_optimizer(model)
    steps: int = 1000  # optimisation steps (the schedule's length)
    batch_size: int = 4096  # activations (tokens) per step
    seed: int = 0  # initialisation and batch-order seed

    def __post_init__(self):
        if self.optimizer is None:
            object.__setattr__(self, "optimizer", default_optimizer(self.model))
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(
                f"steps and batch_size must be positive; got steps={self.steps}, batch_size={self.batch_size}."
            )

    @classmethod
    def tiny(cls, architecture: str = "topk") -> RunConfig:
        """``SAEConfig.tiny`` for 6 steps of 128 activations at lr 3e-3 (tests)."""
        model = SAEConfig.tiny(architecture)
        return cls(model=model, optimizer=default_optimizer(model, 3e-3), steps=6, batch_size=128)

    def recipe(self) -> jaxzoo.Recipe:
        """Model, init function, optimiser and extra state of this run (for ``jaxzoo.rebuild``); the
        parameters' b_dec and the input scale are placeholders here: ``sae.init_state`` sets them from data."""
        from sae import training

        return training.recipe(self)
