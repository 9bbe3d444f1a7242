"""The one frozen config of a sparse autoencoder: architecture, sparsity, initialisation, optimiser."""

from __future__ import annotations

import dataclasses
import math

ARCHITECTURES = ("relu", "gated", "topk", "batchtopk", "jumprelu")
B_DEC_INITS = ("geometric_median", "mean", "zeros")


@dataclasses.dataclass(frozen=True)
class SAEConfig:
    """A sparse autoencoder x -> f(x) [d_sae] -> x_hat, and how to train it.

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
    batchtopk_threshold_decay: float = (
        0.99  # inference threshold <- d * threshold + (1 - d) * min positive act
    )
    unit_norm_decoder: bool | None = (
        None  # None: as the architecture's paper (everything but L1-weighted relu)
    )
    decoder_init_norm: float = 0.1  # row norm of W_dec at init when the decoder is unconstrained (SAELens)
    apply_b_dec_to_input: bool = True  # encode x - b_dec rather than x
    # --- data ---
    normalize_activations: bool = True  # train on x * s, s = sqrt(d_in) / mean ||x||; folded back afterwards
    b_dec_init: str = "geometric_median"  # one of B_DEC_INITS, computed on init_samples activations
    init_samples: int = 32768  # activations used for the norm scale and the b_dec initialisation
    # --- optimiser ---
    learning_rate: float | None = None  # None -> 2e-4 / sqrt(d_sae / 2**14) (DL's TopK rule, used for all)
    lr_warmup_steps: int = 0  # linear learning-rate warm-up from 0
    lr_decay_fraction: float = 0.2  # the learning rate decays linearly to 0 over this last fraction of steps
    grad_clip: float = 1.0  # global gradient-norm clip (0 disables)
    adam_b1: float = 0.9  # Adam beta1
    adam_b2: float = 0.999  # Adam beta2
    adam_eps: float = 1e-8  # Adam epsilon
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
        if not 0.0 <= self.lr_decay_fraction <= 1.0:
            raise ValueError(f"lr_decay_fraction must be in [0, 1]; got {self.lr_decay_fraction}.")
        if self.jumprelu_bandwidth <= 0:
            raise ValueError(f"jumprelu_bandwidth must be positive; got {self.jumprelu_bandwidth}.")
        for name in ("l1_coefficient", "l0_coefficient", "aux_coefficient", "grad_clip", "init_samples"):
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
    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 2e-4 / math.sqrt(self.d_sae / 2**14)

    def replace(self, **changes) -> SAEConfig:
        return dataclasses.replace(self, **changes)
