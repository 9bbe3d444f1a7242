"""Text conditioning for the examples: a small learned token encoder and a hashing word tokenizer.

In the real setting STDiT takes T5-v1.1-XXL features [B, Ly, 4096] (transformers' `FlaxT5EncoderModel`
produces them in JAX) through its caption MLP; any encoder's features [B, Ly, Dy] work the same way. This
module gives a network-free stand-in: token ids -> embedding + learned positions -> a pre-LN self-attention
layer with a key mask -> features [B, Ly, width], trained jointly with the DiT.
"""

from __future__ import annotations

import dataclasses
import zlib

import flax.linen as nn
import numpy as np

from tora import ops
from tora.stdit import Linear


@dataclasses.dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 1024  # token ids in [0, vocab_size); id 0 is padding
    max_length: int = 16  # longest caption in tokens
    width: int = 64  # feature width Dy (set STDiTConfig.caption_channels to this)
    num_heads: int = 4  # heads of the one self-attention layer

    def __post_init__(self):
        if self.vocab_size < 2 or self.max_length < 1 or self.width % self.num_heads:
            raise ValueError(
                "TextConfig needs vocab_size >= 2, max_length >= 1 and width divisible by num_heads; got "
                f"{self.vocab_size}, {self.max_length}, {self.width}, {self.num_heads}."
            )


def tokenize(captions: list[str], cfg: TextConfig) -> tuple[np.ndarray, np.ndarray]:
    """Lower-cased words hashed (crc32) to ids 1..vocab_size-1, truncated/padded to max_length.
    Returns (ids [B, max_length] int32, mask [B, max_length] bool)."""
    ids = np.zeros((len(captions), cfg.max_length), np.int32)
    for i, text in enumerate(captions):
        words = text.lower().split()[: cfg.max_length]
        ids[i, : len(words)] = [1 + zlib.crc32(w.encode()) % (cfg.vocab_size - 1) for w in words]
    return ids, ids != 0


class TokenTextEncoder(nn.Module):
    """ids [B, L] int, mask [B, L] bool -> features [B, L, width]."""

    cfg: TextConfig

    @nn.compact
    def __call__(self, ids, mask):
        cfg = self.cfg
        if ids.ndim != 2 or ids.shape[1] > cfg.max_length:
            raise ValueError(
                f"ids must have shape [B, L] with L <= {cfg.max_length}; got {tuple(ids.shape)}."
            )
        emb = nn.Embed(
            cfg.vocab_size,
            cfg.width,
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "caption")),
            name="embed",
        )(ids)
        pos = self.param(
            "pos",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "caption")),
            (cfg.max_length, cfg.width),
        )
        h = emb + pos[None, : ids.shape[1]]
        n, d = cfg.num_heads, cfg.width // cfg.num_heads
        a = ops.layer_norm(h, 1e-5)
        qkv = Linear((3, n, d), ("caption", None, "heads", "head_dim"), name="qkv")(a)  # [B, L, 3, N, D]
        o = ops.attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], mask.astype(bool))
        h = h + nn.DenseGeneral(cfg.width, axis=(-2, -1), name="proj")(o)
        m = nn.Dense(cfg.width, name="mlp_out")(
            nn.gelu(nn.Dense(4 * cfg.width, name="mlp_in")(ops.layer_norm(h, 1e-5)))
        )
        h = h + m
        return ops.layer_norm(h, 1e-5) * mask[..., None].astype(h.dtype)
