"""Text conditioning for the examples: a small learned token encoder and a hashing word tokenizer.

In the real setting STDiT takes T5-v1.1-XXL features [B, Ly, 4096] (transformers' `FlaxT5EncoderModel`
produces them in JAX) through its caption MLP; any encoder's features [B, Ly, Dy] work the same way. This
module gives a network-free stand-in: token ids -> embedding + learned positions -> a pre-LN self-attention
layer with a key mask -> features [B, Ly, width], trained jointly with the DiT.
"""

from __future__ import annotations

import zlib

import flax.linen as nn
import numpy as np

import jaxzoo
from tora.config import TextConfig
from tora.stdit import Linear

__all__ = ["TextConfig", "TokenTextEncoder", "tokenize"]


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

    config: TextConfig

    @nn.compact
    def __call__(self, ids, mask):
        cfg = self.config
        if ids.ndim != 2 or ids.shape[1] > cfg.max_length:
            raise ValueError(
                f"ids must have shape [B, L] with L <= {cfg.max_length}; got {tuple(ids.shape)}."
            )
        emb = nn.Embed(
            cfg.vocab_size,
            cfg.width,
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed")),
            name="embed",
        )(ids)
        pos = self.param(
            "pos",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed")),
            (cfg.max_length, cfg.width),
        )
        h = emb + pos[None, : ids.shape[1]]
        n, d = cfg.num_heads, cfg.width // cfg.num_heads
        a = jaxzoo.layer_norm(h, eps=1e-5)
        qkv = Linear((3, n, d), ("embed", None, "heads", "head_dim"), name="qkv")(a)  # [B, L, 3, N, D]
        o = jaxzoo.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], mask=mask.astype(bool))
        h = h + Linear((cfg.width,), ("heads", "head_dim", "embed"), n_in=2, name="proj")(o)
        m = Linear((4 * cfg.width,), ("embed", "mlp"), name="mlp_in")(jaxzoo.layer_norm(h, eps=1e-5))
        h = h + Linear((cfg.width,), ("mlp", "embed"), name="mlp_out")(nn.gelu(m))
        return jaxzoo.layer_norm(h, eps=1e-5) * mask[..., None].astype(h.dtype)
