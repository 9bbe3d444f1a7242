"""Analytic training FLOPs of a JRT-RNN / Based language model (issue 14's cost accounting)."""

from __future__ import annotations

from jrt.config import JRTConfig

__all__ = ["flops_per_example", "forward_flops"]


def _attention_flops(cfg: JRTConfig, n: int, prefix: bool) -> float:
    """LA/PLA mixing FLOPs of one layer over one sequence of n tokens (all heads), as `jrt.ops` computes."""
    h, f, dv, c = cfg.heads, cfg.feature_dim, cfg.head_dim, cfg.chunk_size
    m = min(cfg.prefix_len, n) if prefix else 0
    if c is None:  # quadratic form: the [L, L] (and [L, M]) kernels, then their products with v
        return 2.0 * h * (n * n + n * m) * (f + dv)
    chunks = -(-n // c)
    padded = chunks * c
    intra = 2.0 * padded * c * (f + dv)  # q k^T and a v inside each chunk (full C x C blocks)
    sums = 2.0 * padded * (f * f * dv + f * dv + f * f)  # `feature_sums` of every chunk
    readout = 2.0 * padded * (f * f * dv + f * dv + f * f)  # `feature_readout` of every query
    enc = 2.0 * m * (f * f * dv + f * dv + f * f)  # PLA's encoder sums
    return h * (intra + sums + readout + enc)


def forward_flops(cfg: JRTConfig, seq_len: int) -> float:
    """Matmul FLOPs (a multiply-add = 2) of one forward pass over one sequence of `seq_len` tokens."""
    n, d = seq_len, cfg.d_model
    h, hd, f = cfg.heads, cfg.head_dim, cfg.feature_dim
    total = 0.0
    for mixer in cfg.mixers:
        if mixer == "conv":
            inner = cfg.conv_expand * d // 2
            total += n * (2.0 * d * 2 * inner + 2.0 * cfg.conv_kernel * inner + 2.0 * inner * d)
        elif mixer == "swa":  # dense masked [L, L] scores, as `ops.sliding_window_attention` computes them
            total += n * 2.0 * d * 3 * h * hd + 2.0 * 2 * n * n * h * hd + n * 2.0 * h * hd * d
        else:
            prefix = mixer == "pla"
            total += n * 2.0 * d * h * (2 * f + hd) + n * 2.0 * h * hd * d  # q, k, v and out projections
            if prefix:
                total += min(cfg.prefix_len, n) * 2.0 * d * h * (f + hd)  # k_enc, v_enc over the prefix
            total += _attention_flops(cfg, n, prefix)
        total += n * (2.0 * d * 2 * cfg.mlp_hidden + 2.0 * cfg.mlp_hidden * d)  # SwiGLU fc1, fc2
    return total + n * 2.0 * d * cfg.vocab_size  # LM head


def flops_per_example(cfg: JRTConfig, seq_len: int) -> float:
    """Training FLOPs of one sequence of `seq_len` tokens: 3x the forward's matmul FLOPs (forward + a
    backward of twice the forward), counting a multiply-add as 2 FLOPs.

    Counted: every dense projection (mixers, SwiGLU, the LM head), BaseConv's depthwise convolution,
    SWA's scores and weighted sums over the dense masked [L, L] grid (what `jrt.ops` computes, not only the
    window), and LA/PLA as implemented: the quadratic form's [L, L] (+ [L, M]) kernels, or the chunked
    form's intra-chunk blocks, per-chunk feature sums, readouts and PLA's encoder sums. Not counted: norms,
    activations, the Taylor kernel's elementwise terms, softmax, the loss, the optimizer, the embedding
    gather (all O(L d) or smaller). The MLM loss adds no model FLOPs (the same forward, masked inputs).
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be a positive number of tokens, but got {seq_len}.")
    return 3.0 * forward_flops(cfg, seq_len)
