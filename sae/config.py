"""Configs: ``SAEConfig`` (the autoencoder: architecture, sparsity, initialisation) and ``RunConfig`` (a
training run: the model, the optimiser, steps, batch size, seed)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

import jaxzoo

ARCHITECTURES = ("relu", "gated", "topk", "batchtopk", "jumprelu", "matryoshka")
TOPK_FAMILY = ("topk", "batchtopk", "matryoshka")  # k-sparse codes; AuxK on dead latents
THRESHOLD_ARCHITECTURES = ("jumprelu", "batchtopk", "matryoshka")  # inference: z * 1[z > threshold]
B_DEC_INITS = ("geometric_median", "mean", "zeros")
JUMPRELU_SPARSITY = ("step", "tanh")
# Learning rates of the references (Adam, activations normalised to mean norm sqrt(d_in)):
#   relu  5e-5  SAELens training docs / Anthropic April 2024 update;
#   gated 5e-5  Rajamanoharan et al. 2024 and dictionary_learning's GatedSAETrainer;
#   jumprelu 7e-5  Rajamanoharan et al. 2024b (Gemma Scope) and dictionary_learning's JumpReluTrainer;
#   topk / batchtopk / matryoshka  2e-4 / sqrt(d_sae / 2**14)  Gao et al. 2024 (dictionary_learning's rule).
FIXED_LEARNING_RATES = {"relu": 5e-5, "gated": 5e-5, "jumprelu": 7e-5}


@dataclasses.dataclass(frozen=True)
class SAEConfig(jaxzoo.Config):
    """A sparse autoencoder x -> f(x) [d_sae] -> x_hat (the optimiser lives in ``RunConfig``).

    Architectures:
      - ``relu``: f = ReLU(z), loss MSE + lambda * L1 (decoder-norm weighted by default, Anthropic April 2024).
      - ``gated``: Rajamanoharan et al. 2024, paper-faithful aux loss (stop-gradient on the decoder).
      - ``topk``: Gao et al. 2024 (OpenAI), normalised MSE + AuxK/32 on dead latents. By default the decoder
        is free and pre-activations are rescaled by the decoder row norms before the top-k (SAELens'
        ``rescale_acts_by_decoder_norm``); ``unit_norm_decoder=True`` keeps OpenAI's unit-norm decoder.
      - ``batchtopk``: Bussmann et al. 2024, top k*B over the batch; inference uses a learned threshold.
      - ``matryoshka``: Bussmann et al. 2025 / Nabeshima 2024, BatchTopK whose nested prefixes
        ``matryoshka_widths`` (and the whole dictionary) must each reconstruct x.
      - ``jumprelu``: Rajamanoharan et al. 2024b (Gemma Scope), L0 loss with straight-through gradients,
        threshold parameterised directly (not as a log); ``jumprelu_sparsity="tanh"``: Anthropic's
        tanh-smoothed L0 (Jan 2025), optionally with the pre-activation loss ``pre_act_coefficient``.
    Field meanings are listed under "Fields" below (``help(sae.SAEConfig)``).
    """

    d_in: int = 256  # width of the activations being reconstructed
    d_sae: int = 4096  # number of latents (dictionary size); sharded over the "model" mesh axis
    architecture: str = "topk"  # one of ARCHITECTURES
    # --- sparsity ---
    k: int = 32  # active latents per token (topk) or on average per token (batchtopk, matryoshka); an integer
    k_aux: int | None = None  # AuxK: how many dead latents reconstruct the residual; None -> d_in // 2 (DL)
    aux_coefficient: float = 1 / 32  # AuxK coefficient alpha (OpenAI; the loss is normalised, not SAELens')
    dead_tokens: int = 10_000_000  # a latent unfired for this many training tokens is dead (Gao et al.: 10M)
    l1_coefficient: float = 5.0  # lambda of the L1 penalty (relu: on f, gated: on ReLU(pi_gate))
    l0_coefficient: float = 1.0  # lambda of the L0 penalty sum_i H(z_i - theta_i) (jumprelu)
    l1_warmup_steps: int = 0  # the sparsity coefficient (L1 or L0) ramps linearly from 0 over these steps
    l1_decoder_norm: bool = True  # relu: weight each |f_i| by ||W_dec,i|| (decoder left unconstrained)
    jumprelu_bandwidth: float = 0.1  # epsilon of the rectangle-kernel STE (SAELens: step 0.05, tanh 2.0)
    jumprelu_init_threshold: float = 0.01  # theta at initialisation (SAELens step mode; tanh: 0.1)
    threshold_lr_scale: float | None = (
        None  # jumprelu: theta's lr over the optimiser's; None: sqrt(d_in) if normalised
    )
    jumprelu_sparsity: str = "step"  # "step": Rajamanoharan L0 sum H(z - theta); "tanh": Anthropic 2025
    jumprelu_tanh_scale: float = 4.0  # c of the tanh loss sum_i tanh(c * f_i * ||W_dec,i||)
    pre_act_coefficient: float = 0.0  # Anthropic's pre-activation loss on dead latents (they use 3e-6); 0 off
    matryoshka_widths: tuple[int, ...] = ()  # nested prefix widths m_1 < ... (d_sae is always the last level)
    batchtopk_threshold_decay: float = 0.99  # inference threshold <- d * threshold + (1 - d) * min kept act
    unit_norm_decoder: bool | None = None  # None: unit-norm for gated and jumprelu; free (rescaled) otherwise
    decoder_init_norm: float = 0.1  # row norm of W_dec at init when the decoder is unconstrained (SAELens)
    apply_b_dec_to_input: bool = True  # encode x - b_dec rather than x
    # --- data ---
    normalize_activations: bool = True  # train on x * s, s = sqrt(d_in) / mean ||x||; folded back afterwards
    b_dec_init: str = "geometric_median"  # one of B_DEC_INITS, computed on init_samples activations
    init_samples: int = 32768  # activations used for the norm scale and the b_dec initialisation
    resample_every: int = 0  # relu/gated: resample dead latents every this many steps (0 disables)
    max_bad_fraction: float = 0.05  # NaN/inf rows are dropped; train raises past this fraction of rows
    # --- precision ---
    precision: jaxzoo.Precision = jaxzoo.Precision()  # Precision.bf16_params(): bf16 weights and activations; threshold, losses, optimizer float32

    def __post_init__(self):
        self._check_types()
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"unknown SAE architecture {self.architecture!r}; expected one of {', '.join(ARCHITECTURES)}."
            )
        if self.d_in < 1 or self.d_sae < 1:
            raise ValueError(f"d_in and d_sae must be positive; got d_in={self.d_in}, d_sae={self.d_sae}.")
        if self.architecture in TOPK_FAMILY:
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
        if self.threshold_lr_scale is not None and not (
            isinstance(self.threshold_lr_scale, int | float)
            and not isinstance(self.threshold_lr_scale, bool)
            and 0 < self.threshold_lr_scale < math.inf
        ):
            raise ValueError(
                f"threshold_lr_scale must be a positive number or None; got {self.threshold_lr_scale!r}."
            )
        for name in ("jumprelu_bandwidth", "jumprelu_tanh_scale", "decoder_init_norm"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}.")
        if self.jumprelu_sparsity not in JUMPRELU_SPARSITY:
            raise ValueError(
                f"jumprelu_sparsity must be one of {JUMPRELU_SPARSITY}; got {self.jumprelu_sparsity!r}."
            )
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1]; got {self.max_bad_fraction}.")
        widths = self.matryoshka_widths
        if widths and (list(widths) != sorted(set(widths)) or widths[0] < 1 or widths[-1] > self.d_sae):
            raise ValueError(
                f"matryoshka_widths must be strictly increasing widths in [1, d_sae={self.d_sae}]; got {widths}."
            )
        for name in (
            "l1_coefficient",
            "l0_coefficient",
            "aux_coefficient",
            "init_samples",
            "jumprelu_init_threshold",
            "pre_act_coefficient",
            "l1_warmup_steps",
            "resample_every",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative; got {getattr(self, name)}.")
        if self.resample_every and self.architecture not in ("relu", "gated"):
            raise ValueError(
                f"resample_every is for relu and gated SAEs (TopK/BatchTopK use AuxK); got {self.architecture!r}."
            )
        if self.dead_tokens < 1:
            raise ValueError(f"dead_tokens must be positive; got {self.dead_tokens}.")
        if not isinstance(self.precision, jaxzoo.Precision):
            raise ValueError(f"precision must be a jaxzoo.Precision; got {self.precision!r}.")
        if self.precision.param_dtype == "float16" or self.precision.compute_dtype == "float16":
            raise ValueError("float16 SAEs are not supported (no loss scaling); use bfloat16 or float32.")

    def _check_types(self):
        """Integers where integers are meant (k=2.5 must not reach lax.top_k), finite numbers elsewhere."""
        ints = ("d_in", "d_sae", "k", "dead_tokens", "l1_warmup_steps", "init_samples", "resample_every")
        for name in ints + (() if self.k_aux is None else ("k_aux",)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"{name} must be an integer; got {value!r} ({type(value).__name__}).")
            object.__setattr__(self, name, int(value))
        floats = (
            "aux_coefficient", "l1_coefficient", "l0_coefficient", "jumprelu_bandwidth",
            "jumprelu_init_threshold", "jumprelu_tanh_scale", "pre_act_coefficient",
            "batchtopk_threshold_decay", "decoder_init_norm", "max_bad_fraction",
        )  # fmt: skip
        for name in floats:
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float | np.number)
                or not math.isfinite(value)
            ):
                raise ValueError(f"{name} must be a finite number; got {value!r}.")
        widths = self.matryoshka_widths
        if not isinstance(widths, tuple | list) or any(
            isinstance(w, bool) or not isinstance(w, int | np.integer) for w in widths
        ):
            raise ValueError(f"matryoshka_widths must be a tuple of integers; got {widths!r}.")
        object.__setattr__(self, "matryoshka_widths", tuple(int(w) for w in widths))

    @property
    def levels(self) -> tuple[int, ...]:
        """Matryoshka prefix widths including the whole dictionary: (m_1, ..., d_sae)."""
        widths = tuple(w for w in self.matryoshka_widths if w < self.d_sae)
        return widths + (self.d_sae,)

    @property
    def rescale_by_decoder_norm(self) -> bool:
        """TopK family with a free decoder: the top-k runs on z_i * ||W_dec,i|| and decoding divides by the
        norm (SAELens' ``rescale_acts_by_decoder_norm``), i.e. the code of a unit-norm decoder; the norms are
        folded into the encoder by ``final_params``."""
        return self.architecture in TOPK_FAMILY and not self.constrain_decoder

    @property
    def threshold_lr_multiplier(self) -> float:
        """How much faster than the other parameters the JumpReLU threshold learns (``threshold_lr_scale``).

        Adam moves a parameter by about lr per step whatever its gradient's size. Training on activations of
        mean norm sqrt(d_in) makes the pre-activations, and so the thresholds that matter, sqrt(d_in) times
        larger than on the unit-norm activations the JumpReLU recipes were tuned on (Gemma Scope,
        dictionary_learning), while every weight's relative step is unchanged; theta is the one parameter
        whose absolute step must grow by sqrt(d_in) to keep up (without it L0 hardly responds to the L0
        coefficient in a few thousand steps)."""
        if self.threshold_lr_scale is not None:
            return float(self.threshold_lr_scale)
        return math.sqrt(self.d_in) if self.normalize_activations else 1.0

    @property
    def auxk_size(self) -> int:
        """k_aux, defaulting to d_in // 2 (dictionary_learning, SAELens), at most d_sae."""
        return min(self.k_aux if self.k_aux is not None else max(self.d_in // 2, 1), self.d_sae)

    @property
    def constrain_decoder(self) -> bool:
        """Whether W_dec rows are kept unit-norm (with the parallel gradient component projected out)."""
        if self.unit_norm_decoder is not None:
            return self.unit_norm_decoder
        if self.architecture == "relu":
            return not self.l1_decoder_norm
        return self.architecture in ("gated", "jumprelu")

    @property
    def default_learning_rate(self) -> float:
        """The architecture's reference learning rate (FIXED_LEARNING_RATES; TopK family: 2e-4 / sqrt(d_sae /
        2**14), Gao et al. 2024 as dictionary_learning applies it)."""
        if self.architecture in FIXED_LEARNING_RATES:
            return FIXED_LEARNING_RATES[self.architecture]
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
        return cls(
            d_in=d_in,
            d_sae=d_sae,
            architecture="jumprelu",
            normalize_activations=False,
            apply_b_dec_to_input=False,  # Gemma Scope encodes x, not x - b_dec
        )


def default_optimizer(model: SAEConfig, learning_rate: float | None = None) -> jaxzoo.OptimizerConfig:
    """The SAE training recipe (SAELens / dictionary_learning): Adam (0.9, 0.999), no warm-up, constant
    rate then linear decay to 0 over the last 20% of steps ("wsd"), gradients clipped at norm 1, steps with
    NaN/inf gradients skipped; for low-precision parameters (``model.precision``) float32 master weights.
    ``learning_rate`` None: ``model.default_learning_rate``."""
    lr = model.default_learning_rate if learning_rate is None else learning_rate
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0 or not math.isfinite(lr):
        raise ValueError(f"learning_rate must be a positive number; got {lr!r}.")
    return jaxzoo.OptimizerConfig(
        algorithm="adam",
        learning_rate=lr,
        schedule="wsd",
        warmup_steps=0,
        decay_fraction=0.2,
        end_lr_ratio=0.0,
        grad_clip=1.0,
        skip_nonfinite=True,
        # bf16 parameters: Adam steps float32 master weights (small updates do not round away)
        master_dtype=None if model.precision.param == np.float32 else "float32",
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
        lr = self.optimizer.learning_rate
        if not (isinstance(lr, int | float) and lr > 0 and math.isfinite(lr)):
            raise ValueError(f"the optimizer's learning_rate must be a positive number; got {lr!r}.")
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
