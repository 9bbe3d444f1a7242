"""The one frozen config of a JRT-RNN / Based language model, with the reference's presets."""

from __future__ import annotations

import dataclasses

import jaxzoo

MIXERS = (
    "conv",
    "swa",
    "pla",
    "la",
)  # BaseConv, sliding-window attention, prefix LA (JRT), causal LA (Based)


def layer_pattern(n_layers: int, attn_layers, swa_layers, attn: str = "pla") -> tuple[str, ...]:
    """The reference's layer mix: `attn` at attn_layers, "swa" at swa_layers, "conv" everywhere else."""
    pattern = ["conv"] * n_layers
    for i in swa_layers:
        pattern[i] = "swa"
    for i in attn_layers:
        pattern[i] = attn
    return tuple(pattern)


# alt_mixer_layers / alt_mixer_2_layers of train/configs/experiment/baselines/*.yaml
_ATTN_360M, _SWA_360M = (1, 6, 11, 16, 21), (2, 7, 12, 17, 22)
_ATTN_1B3, _SWA_1B3 = _ATTN_360M + (27, 33), _SWA_360M + (28, 34)


@dataclasses.dataclass(frozen=True)
class JRTConfig(jaxzoo.Config):
    """A JRT-RNN (mixers contain "pla") or Based (mixers contain "la", encoder_len 0) language model.

    Defaults are the reference's JRT-360M (`JRTConfig.jrt_360m()` spells it out).
    """

    vocab_size: int = 50264  # GPT-2's 50257 padded to a multiple of 8; the last id is [MASK]
    d_model: int = 1024  # residual width
    mixers: tuple[str, ...] = layer_pattern(26, _ATTN_360M, _SWA_360M)  # one of MIXERS per layer
    heads: int = 16  # heads of the LA/PLA and SWA mixers; the LA value head dim is d_model // heads
    feature_dim: int = 16  # f: q/k dim per head of LA/PLA; Taylor feature dim F = 1 + f + f^2
    window: int = 128  # SWA: each query sees itself + `window` previous tokens. The reference config
    # says window_size 256 but passes flash-attn window=(256 // 2, 0), so its effective window is 128.
    encoder_len: int = 1024  # M: the first M tokens are the non-causal prefix of PLA layers (0: Based)
    max_len: int = 2048  # training / prompt context length (RoPE needs no table; this bounds prompts)
    mlp_hidden: int = 2048  # SwiGLU inner width h (reference: n_inner = 2 * d_model)
    conv_kernel: int = 3  # BaseConv depthwise kernel (the reference's default; its config value is ignored)
    conv_expand: int = 4  # BaseConv in_proj d -> expand * d, split in two halves
    rope_base: float = 10000.0  # SWA rotary base (full head dim, non-interleaved)
    norm_eps: float = 1e-5  # RMSNorm epsilon (GPT2Config's layer_norm_epsilon)
    attn_eps: float = 1e-12  # LA/PLA denominator epsilon
    chunk_size: int | None = 64  # LA/PLA chunk length of the O(L) form; None: quadratic form
    kernel: str = "auto"  # chunked LA/PLA: "auto" (the Pallas kernel of jrt.pallas on GPU/TPU, XLA on
    # CPU), "xla", "pallas", or "interpret" (the Pallas kernel interpreted: CPU tests only, slow)
    mlm_prob: float = 0.15  # JRT: probability of masking each prefix token for the MLM loss (0: off)
    mlm_weight: float = 0.25  # JRT: loss = NTP + mlm_weight * MLM
    mask_token_id: int = -1  # [MASK] id of the MLM loss; -1 means vocab_size - 1 (the reference's 50263,
    # the last padded GPT-2 slot, which text never uses). It must be an id the data never holds: MQAR's
    # values fill [V/2, V), so a task vocabulary V = vocab_size collides; `synthetic()` reserves an extra id
    # and the loss refuses batches that contain it while MLM is on.
    pad_token_id: int = 220  # left padding of short JRT prompts (the reference pads with " " = 220)
    padding: str = "exact"  # "exact": padded tokens contribute nothing anywhere, and a row's prefix is
    # its own first M real tokens. "reference": the authors' harness numerics for converted checkpoints:
    # BaseConv and SWA see pads as tokens, LA ignores the mask, PLA zeroes padded keys *before* the feature
    # map (phi(0) = e0, so each pad still adds weight 1 and its value) when L <= M and else ignores the
    # mask, and the prefix is the first M columns.
    tie_embeddings: bool = True  # LM head = embedding^T
    init_std: float = 0.02  # N(0, std) init; out_proj / fc2 use std / sqrt(2 * n_layers)
    precision: jaxzoo.Precision = jaxzoo.Precision()  # dtypes: Precision.bf16() computes matmuls in
    # bfloat16; the residual stream, norms, LA/PLA sums ("state"), softmax and logits stay float32
    remat: bool = False  # rematerialise each block in the backward pass (memory for compute)

    def __post_init__(self):
        object.__setattr__(self, "mixers", tuple(self.mixers))
        try:
            object.__setattr__(self, "precision", jaxzoo.Precision.of(self.precision))
        except ValueError as e:
            raise ValueError(f"precision must be a jaxzoo.Precision or a dtype name; {e}") from None
        if self.kernel not in ("auto", "xla", "pallas", "interpret"):
            raise ValueError(
                f"kernel must be 'auto', 'xla', 'pallas' or 'interpret', but got {self.kernel!r}."
            )
        if self.padding not in ("exact", "reference"):
            raise ValueError(f"padding must be 'exact' or 'reference', but got {self.padding!r}.")
        if not self.mixers:
            raise ValueError("mixers must name at least one layer, but got an empty pattern.")
        bad = [m for m in self.mixers if m not in MIXERS]
        if bad:
            raise ValueError(f"Every mixer must be one of {MIXERS}, but got {bad[0]!r}.")
        if "pla" in self.mixers and "la" in self.mixers:
            raise ValueError("A model is either JRT ('pla' layers) or Based ('la' layers), not both.")
        for name in ("vocab_size", "d_model", "heads", "feature_dim", "max_len", "mlp_hidden", "conv_kernel"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, but got {getattr(self, name)}.")
        if self.d_model % self.heads:
            raise ValueError(
                f"heads must divide d_model, but got d_model={self.d_model} and heads={self.heads}."
            )
        if "swa" in self.mixers and self.head_dim % 2:
            raise ValueError(f"SWA applies RoPE, which needs an even head dim, but got {self.head_dim}.")
        if self.window < 0:
            raise ValueError(f"window must be >= 0, but got {self.window}.")
        if not 0 <= self.encoder_len <= self.max_len:
            raise ValueError(
                f"encoder_len M must be in [0, max_len={self.max_len}], but got {self.encoder_len}."
            )
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be positive or None, but got {self.chunk_size}.")
        if not 0.0 <= self.mlm_prob < 1.0:
            raise ValueError(f"mlm_prob must be in [0, 1), but got {self.mlm_prob}.")
        if not -1 <= self.mask_token_id < self.vocab_size:
            raise ValueError(
                f"mask_token_id must be -1 or in [0, {self.vocab_size}), got {self.mask_token_id}."
            )
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id must be in [0, {self.vocab_size}), but got {self.pad_token_id}.")

    # --- derived -----------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.mixers)

    @property
    def head_dim(self) -> int:
        """Value head dim dv of LA/PLA and the head dim of SWA."""
        return self.d_model // self.heads

    @property
    def is_jrt(self) -> bool:
        """True when the model has PLA layers (and so a non-causal prefix and the MLM loss)."""
        return "pla" in self.mixers

    @property
    def prefix_len(self) -> int:
        """M as used by the model and loss: encoder_len for JRT, 0 for Based."""
        return self.encoder_len if self.is_jrt else 0

    @property
    def mask_id(self) -> int:
        return self.vocab_size - 1 if self.mask_token_id < 0 else self.mask_token_id

    # --- presets -----------------------------------------------------------------------------------
    @classmethod
    def jrt_360m(cls, **kw) -> JRTConfig:
        """JRT-360M: 26 layers, PLA at [1,6,11,16,21], SWA at [2,7,12,17,22], BaseConv elsewhere."""
        return cls(**{"mixers": layer_pattern(26, _ATTN_360M, _SWA_360M, "pla"), **kw})

    @classmethod
    def based_360m(cls, **kw) -> JRTConfig:
        """Based-360M: 27 layers, LA at [1,6,11,16,21], SWA at [2,7,12,17,22], no encoder."""
        return cls(**{"mixers": layer_pattern(27, _ATTN_360M, _SWA_360M, "la"), "encoder_len": 0, **kw})

    @classmethod
    def jrt_1b3(cls, **kw) -> JRTConfig:
        """JRT-1.3B: d_model 1792, 36 layers, PLA at [1,6,11,16,21,27,33], SWA at [2,7,...,28,34]."""
        base = {"d_model": 1792, "mlp_hidden": 3584, "mixers": layer_pattern(36, _ATTN_1B3, _SWA_1B3, "pla")}
        return cls(**{**base, **kw})

    @classmethod
    def based_1b3(cls, **kw) -> JRTConfig:
        base = {"d_model": 1792, "mlp_hidden": 3584, "mixers": layer_pattern(36, _ATTN_1B3, _SWA_1B3, "la")}
        return cls(**{**base, "encoder_len": 0, **kw})

    @classmethod
    def synthetic(
        cls,
        task_vocab: int = 64,
        *,
        seq_len: int = 64,
        context_len: int = 8,
        attn: str = "pla",
        layers: int = 2,
        d_model: int = 64,
        heads: int = 1,
        feature_dim: int = 8,
        **kw,
    ) -> JRTConfig:
        """The small-task recipe (MQAR, set disjointness) that learns in a few hundred CPU steps with
        `RunConfig.synthetic`: zoology's 2-layer conv/LA (attn="la", Based) or conv/PLA (attn="pla",
        JRT-RNN, the task context of `context_len` tokens as the non-causal prefix), an untied LM head (a
        tied head at init std 0.02 learns these tasks several times slower), no MLM, the quadratic LA form
        (short sequences), and one id beyond the task's vocabulary reserved as [MASK], so MQAR's values
        (which reach task_vocab - 1) never collide with it.

        Measured (tests/jrt/test_mqar_learns.py): MQAR with 4 pairs, L=32, vocab 64 reaches ~0.9 accuracy
        after 300 steps; with the package defaults (tied head, lr 8e-4, 1% warm-up) a tiny JRT-RNN was measured
        at 0.08 after 400 steps (issue 17).
        """
        if attn not in ("pla", "la"):
            raise ValueError(f"attn must be 'pla' (JRT-RNN) or 'la' (Based), but got {attn!r}.")
        base = dict(
            vocab_size=task_vocab + 1,
            mask_token_id=task_vocab,
            d_model=d_model,
            mixers=tuple("conv" if i % 2 == 0 else attn for i in range(layers)),
            heads=heads,
            feature_dim=feature_dim,
            encoder_len=context_len if attn == "pla" else 0,
            max_len=seq_len,
            mlp_hidden=2 * d_model,
            chunk_size=None,
            mlm_prob=0.0,
            pad_token_id=0,
            tie_embeddings=False,
        )
        return cls(**{**base, **kw})

    @classmethod
    def tiny(cls, **kw) -> JRTConfig:
        """A 3-layer JRT (conv, pla, swa) of width 32 for tests and CPU examples."""
        base = dict(
            vocab_size=64,
            d_model=32,
            mixers=("conv", "pla", "swa"),
            heads=2,
            feature_dim=4,
            window=4,
            encoder_len=8,
            max_len=64,
            mlp_hidden=64,
            chunk_size=8,
            pad_token_id=0,
        )
        return cls(**{**base, **kw})

    @classmethod
    def tiny_based(cls, **kw) -> JRTConfig:
        """The tiny config's causal twin: the same layers with LA instead of PLA and no encoder."""
        return cls.tiny(**{"mixers": ("conv", "la", "swa"), "encoder_len": 0, **kw})
