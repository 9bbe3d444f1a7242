"""Analytic FLOPs of tora's models (issue 14's cost accounting), for `jaxzoo.fit`'s FLOP/s and MFU.

Counted: every matmul and convolution with weights and every attention product (QK^T and PV), a
multiply-add = 2 FLOPs. Not counted: norms, softmax, activations, modulation, RoPE, BatchNorm and other
elementwise work (a few percent at these widths), and the frozen motion VAE's encoder (Tora with
`extractor.motion_vae` set). A training step is 3x the forward (forward + backward of activations and of
weights): model FLOPs, the convention of MFU. Rematerialisation (`STDiTConfig.remat` "block", the default)
runs the forward once more, so XLA's count of a step is about 4x the forward there. Tora with a frozen
backbone skips the backbone's weight gradients, so for it 3x is an upper bound.
"""

from __future__ import annotations

from tora.config import RunConfig, STDiTConfig, ToraConfig

__all__ = ["forward_flops", "flops_per_example"]


def _grid(cfg: STDiTConfig, latent_shape: tuple[int, int, int]) -> tuple[int, int]:
    t, h, w = latent_shape
    pt, ph, pw = cfg.patch_size
    return -(-t // pt), (-(-h // ph)) * (-(-w // pw))


def _stdit_forward(cfg: STDiTConfig, latent_shape: tuple[int, int, int], caption_len: int) -> float:
    tq, s = _grid(cfg, latent_shape)
    n, c, m, ly = tq * s, cfg.hidden_size, cfg.mlp_dim, caption_len
    # per block: qkv 3C^2, attn proj C^2, cross q C^2, cross proj C^2, MLP 2CM per token; cross kv 2C^2 per
    # caption token; cross-attention scores + values 4 Ly C per token
    linear = 2 * n * (6 * c * c + 2 * c * m) + 2 * ly * c * 2 * c + 4 * n * ly * c
    spatial = linear + 4 * tq * s * s * c  # self-attention among the S patches of each frame
    temporal = linear + 4 * s * tq * tq * c  # self-attention among the T' frames of each patch
    p = cfg.patch_size[0] * cfg.patch_size[1] * cfg.patch_size[2]
    embed = 2 * n * p * cfg.in_channels * c + 2 * n * c * p * cfg.out_channels  # patch embed + final linear
    caption = 2 * ly * (cfg.caption_channels * c + c * c)  # caption MLP
    cond = 2 * (256 * c + c * c) * 2 + 2 * c * 6 * c  # t and fps embedders, t_block
    return cfg.depth * (spatial + temporal) + embed + caption + cond


def _motion_forward(cfg: ToraConfig, latent_shape: tuple[int, int, int]) -> float:
    s_cfg, e = cfg.stdit, cfg.extractor
    tq, s = _grid(s_cfg, latent_shape)
    n, c, cm = tq * s, s_cfg.hidden_size, e.channels
    in_ch = (e.motion_vae.latent_channels if e.motion_vae is not None else 3) * e.unshuffle**2
    extractor = 2 * n * 9 * in_ch * cm + e.num_levels * e.num_res_blocks * 2 * (2 * n * 9 * cm * cm)
    fuser = s_cfg.motion_fuser
    if fuser == "adanorm":  # gamma and beta: conv3x3 Cm -> C/4, temporal conv k3 C/4 -> C
        mid = max(c // 4, 1)
        per = 2 * (2 * n * 9 * cm * mid + 2 * n * 3 * mid * c)
    elif fuser == "channel":  # fc1 (C + Cm) -> C, fc2 C -> C (mlp_ratio 1)
        per = 2 * n * (c + cm) * c + 2 * n * c * c
    else:  # cross-attention per frame: q C^2, kv 2 Cm C, scores + values 4 S C, proj C^2
        per = 2 * n * c * c + 2 * n * cm * 2 * c + 4 * tq * s * s * c + 2 * n * c * c
    return extractor + s_cfg.depth * per


def forward_flops(
    config: STDiTConfig | ToraConfig | RunConfig, latent_shape: tuple[int, int, int], caption_len: int | None = None
) -> float:
    """FLOPs of one forward pass for one clip of latents (T, H, W) with a caption of `caption_len` tokens
    (default the model's `model_max_length`). See the module docstring for what is counted."""
    if isinstance(config, RunConfig):
        config = config.model
    if not isinstance(config, STDiTConfig | ToraConfig):
        raise ValueError(
            f"flops_per_example counts ST-DiT and Tora models (an STDiTConfig, ToraConfig or a RunConfig of one); "
            f"got {type(config).__name__}."
        )
    if len(tuple(latent_shape)) != 3 or min(latent_shape) < 1:
        raise ValueError(f"latent_shape must be three positive sizes (T, H, W); got {latent_shape!r}.")
    stdit = config.stdit if isinstance(config, ToraConfig) else config
    ly = stdit.model_max_length if caption_len is None else int(caption_len)
    total = _stdit_forward(stdit, tuple(latent_shape), ly)
    if isinstance(config, ToraConfig):
        total += _motion_forward(config, tuple(latent_shape))
    return float(total)


def flops_per_example(
    config: STDiTConfig | ToraConfig | RunConfig, latent_shape: tuple[int, int, int], caption_len: int | None = None
) -> float:
    """Training FLOPs per clip: 3x `forward_flops` (forward + backward; a multiply-add = 2 FLOPs). Pass
    `batch_size * flops_per_example(...)` as `jaxzoo.fit`'s `flops_per_step` (`tora.train` does)."""
    return 3.0 * forward_flops(config, latent_shape, caption_len)
