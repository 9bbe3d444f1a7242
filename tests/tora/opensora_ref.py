"""A PyTorch transcription of Open-Sora 1.2's STDiT3 and rectified-flow timestep transform, for tests.

Transcribed from hpcaitech/Open-Sora, branch opensora/v1.2, commit bde3c420a19e7f84a4f3144e01eeb132b9e33a06:
`opensora/models/stdit/stdit3.py` (STDiT3Block, STDiT3), `opensora/models/layers/blocks.py` (Attention,
MultiHeadCrossAttention, PatchEmbed3D, PositionEmbedding2D, TimestepEmbedder, SizeEmbedder, CaptionEmbedder,
T2IFinalLayer, t2i_modulate), `opensora/schedulers/rf/rectified_flow.py` (timestep_transform). Module and
attribute names are Open-Sora's, so `state_dict()` has the released checkpoint's keys and shapes.
Replacements of dependencies: xformers' BlockDiagonalMask attention -> a per-clip key mask (the same maths);
rotary_embedding_torch.RotaryEmbedding(dim) -> its `rotate_queries_or_keys` with interleaved pairs and its
`freqs` parameter (the key `rope.freqs`); timm's Mlp -> fc1, GELU(tanh), fc2; no flash attention, no
sequence parallelism, no drop path.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

approx_gelu = lambda: nn.GELU(approximate="tanh")  # noqa: E731


def t2i_modulate(x, shift, scale):
    return x * (1 + scale) + shift


def timestep_transform(t, model_kwargs, base_resolution=512 * 512, base_num_frames=1, scale=1.0, num_timesteps=1):
    t = t / num_timesteps
    resolution = model_kwargs["height"] * model_kwargs["width"]
    ratio_space = (resolution / base_resolution).sqrt()
    if model_kwargs["num_frames"][0] == 1:
        num_frames = torch.ones_like(model_kwargs["num_frames"])
    else:
        num_frames = model_kwargs["num_frames"] // 17 * 5
    ratio_time = (num_frames / base_num_frames).sqrt()
    ratio = ratio_space * ratio_time * scale
    new_t = ratio * t / (1 + (ratio - 1) * t)
    return new_t * num_timesteps


class LlamaRMSNorm(nn.Module):
    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


class RotaryEmbedding(nn.Module):
    """rotary_embedding_torch.RotaryEmbedding(dim) as STDiT3 uses it (theta 1e4, interleaved pairs, seq_dim -2)."""

    def __init__(self, dim, theta=10000):
        super().__init__()
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: (dim // 2)].float() / dim))
        self.freqs = nn.Parameter(freqs, requires_grad=False)

    def rotate_queries_or_keys(self, t, seq_dim=-2):
        n = t.shape[seq_dim]
        pos = torch.arange(n, dtype=self.freqs.dtype)
        freqs = torch.einsum("i,j->ij", pos, self.freqs).repeat_interleave(2, dim=-1)  # "... n -> ... (n r)"
        x = t.unflatten(-1, (-1, 2))
        x1, x2 = x.unbind(-1)
        rot = torch.stack((-x2, x1), dim=-1).flatten(-2)
        return t * freqs.cos() + rot * freqs.sin()


class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features, out_features=None):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = approx_gelu()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim, num_heads, qkv_bias=True, qk_norm=True, rope=None):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = LlamaRMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = LlamaRMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.rope = rope is not None
        if self.rope:
            self.rotary_emb = rope

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope:
            q, k = self.rotary_emb(q), self.rotary_emb(k)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).float().softmax(-1).to(q.dtype)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class MultiHeadCrossAttention(nn.Module):
    def __init__(self, d_model, num_heads):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.q_linear = nn.Linear(d_model, d_model)
        self.kv_linear = nn.Linear(d_model, d_model * 2)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x, cond, mask):
        """x [B, N, C]; cond [B, L, C] padded (xformers packs the real tokens; the key mask is the same)."""
        B, N, C = x.shape
        q = self.q_linear(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        kv = self.kv_linear(cond).view(B, cond.shape[1], 2, self.num_heads, self.head_dim)
        k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
        s = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        s = s.masked_fill(~mask[:, None, None, :].bool(), float("-inf"))
        x = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class PatchEmbed3D(nn.Module):
    def __init__(self, patch_size, in_chans, embed_dim):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        _, _, D, H, W = x.size()
        p = self.patch_size
        if W % p[2]:
            x = nn.functional.pad(x, (0, p[2] - W % p[2]))
        if H % p[1]:
            x = nn.functional.pad(x, (0, 0, 0, p[1] - H % p[1]))
        if D % p[0]:
            x = nn.functional.pad(x, (0, 0, 0, 0, 0, p[0] - D % p[0]))
        return self.proj(x).flatten(2).transpose(1, 2)


class PositionEmbedding2D(nn.Module):
    def __init__(self, dim):
        super().__init__()
        half_dim = dim // 2
        inv_freq = 1.0 / (10000 ** (torch.arange(0, half_dim, 2).float() / half_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def _get_sin_cos_emb(self, t):
        out = torch.einsum("i,d->id", t, self.inv_freq)
        return torch.cat((torch.sin(out), torch.cos(out)), dim=-1)

    def forward(self, h, w, scale=1.0, base_size=None):
        grid_h = torch.arange(h) / scale
        grid_w = torch.arange(w) / scale
        if base_size is not None:
            grid_h *= base_size / h
            grid_w *= base_size / w
        grid_h, grid_w = torch.meshgrid(grid_w, grid_h, indexing="ij")  # here w goes first
        grid_h = grid_h.t().reshape(-1)
        grid_w = grid_w.t().reshape(-1)
        return torch.concat([self._get_sin_cos_emb(grid_h), self._get_sin_cos_emb(grid_w)], dim=-1).unsqueeze(0)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size, frequency_embedding_size=256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t, dim, max_period=10000):
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float32) / half)
        args = t[:, None].float() * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t):
        return self.mlp(self.timestep_embedding(t, self.frequency_embedding_size))


class CaptionEmbedder(nn.Module):
    def __init__(self, in_channels, hidden_size, token_num):
        super().__init__()
        self.y_proj = Mlp(in_channels, hidden_size, hidden_size)
        self.register_buffer("y_embedding", torch.randn(token_num, in_channels) / in_channels**0.5)

    def forward(self, caption, force_drop_ids=None):
        if force_drop_ids is not None:
            caption = torch.where(force_drop_ids[:, None, None, None] == 1, self.y_embedding, caption)
        return self.y_proj(caption)


class T2IFinalLayer(nn.Module):
    def __init__(self, hidden_size, num_patch, out_channels):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, num_patch * out_channels, bias=True)
        self.scale_shift_table = nn.Parameter(torch.randn(2, hidden_size) / hidden_size**0.5)

    @staticmethod
    def t_mask_select(x_mask, x, masked_x, T, S):
        # x: [B, (T, S), C], mased_x: [B, (T, S), C], x_mask: [B, T]
        x = x.view(x.shape[0], T, S, x.shape[-1])
        masked_x = masked_x.view(masked_x.shape[0], T, S, masked_x.shape[-1])
        x = torch.where(x_mask[:, :, None, None], x, masked_x)
        return x.view(x.shape[0], T * S, x.shape[-1])

    def forward(self, x, t, x_mask=None, t0=None, T=None, S=None):
        shift, scale = (self.scale_shift_table[None] + t[:, None]).chunk(2, dim=1)
        x = t2i_modulate(self.norm_final(x), shift, scale)
        if x_mask is not None:  # Open-Sora 1.2: the t0 branch norms and modulates the modulated x again
            shift_zero, scale_zero = (self.scale_shift_table[None] + t0[:, None]).chunk(2, dim=1)
            x_zero = t2i_modulate(self.norm_final(x), shift_zero, scale_zero)
            x = self.t_mask_select(x_mask, x, x_zero, T, S)
        return self.linear(x)


class STDiT3Block(nn.Module):
    def __init__(self, hidden_size, num_heads, mlp_ratio=4.0, rope=None, qk_norm=True, temporal=False):
        super().__init__()
        self.temporal = temporal
        self.norm1 = nn.LayerNorm(hidden_size, eps=1e-6, elementwise_affine=False)
        self.attn = Attention(hidden_size, num_heads, qkv_bias=True, qk_norm=qk_norm, rope=rope)
        self.cross_attn = MultiHeadCrossAttention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, eps=1e-6, elementwise_affine=False)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.scale_shift_table = nn.Parameter(torch.randn(6, hidden_size) / hidden_size**0.5)

    def forward(self, x, y, t, mask, T, S):
        B, N, C = x.shape
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + t.reshape(B, 6, -1)
        ).chunk(6, dim=1)
        x_m = t2i_modulate(self.norm1(x), shift_msa, scale_msa)
        if self.temporal:
            x_m = x_m.view(B, T, S, C).transpose(1, 2).reshape(B * S, T, C)  # B (T S) C -> (B S) T C
            x_m = self.attn(x_m).view(B, S, T, C).transpose(1, 2).reshape(B, N, C)
        else:
            x_m = self.attn(x_m.reshape(B * T, S, C)).reshape(B, N, C)
        x = x + gate_msa * x_m
        x = x + self.cross_attn(x, y, mask)
        x_m = t2i_modulate(self.norm2(x), shift_mlp, scale_mlp)
        return x + gate_mlp * self.mlp(x_m)


class STDiT3(nn.Module):
    """STDiT3 without x_mask (the masked-frame path is tested against the numpy block reference)."""

    def __init__(self, in_channels=4, patch_size=(1, 2, 2), hidden_size=1152, depth=28, num_heads=16,
                 mlp_ratio=4.0, pred_sigma=True, caption_channels=4096, model_max_length=300, qk_norm=True,
                 input_sq_size=512):
        super().__init__()
        self.in_channels, self.patch_size, self.hidden_size = in_channels, patch_size, hidden_size
        self.out_channels = in_channels * 2 if pred_sigma else in_channels
        self.input_sq_size = input_sq_size
        self.pos_embed = PositionEmbedding2D(hidden_size)
        self.rope = RotaryEmbedding(dim=hidden_size // num_heads)
        self.x_embedder = PatchEmbed3D(patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.fps_embedder = TimestepEmbedder(hidden_size)  # SizeEmbedder: same keys and maths for [B] fps
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))
        self.y_embedder = CaptionEmbedder(caption_channels, hidden_size, model_max_length)
        self.spatial_blocks = nn.ModuleList(
            [STDiT3Block(hidden_size, num_heads, mlp_ratio, qk_norm=qk_norm) for _ in range(depth)]
        )
        self.temporal_blocks = nn.ModuleList(
            [STDiT3Block(hidden_size, num_heads, mlp_ratio, rope=self.rope.rotate_queries_or_keys,
                         qk_norm=qk_norm, temporal=True) for _ in range(depth)]
        )
        self.final_layer = T2IFinalLayer(hidden_size, int(np.prod(patch_size)), self.out_channels)

    def forward(self, x, timestep, y, mask, fps, height, width, force_drop_ids=None):
        """x [B, C, T, H, W]; timestep [B] in [0, 1000]; y [B, 1, L, Dy]; mask [B, L]; fps, height, width [B]."""
        B, _, Tx, Hx, Wx = x.shape
        p = self.patch_size
        T, H, W = (-(-n // q) for n, q in zip((Tx, Hx, Wx), p))
        S = H * W
        base_size = round(S**0.5)
        scale = (height[0].item() * width[0].item()) ** 0.5 / self.input_sq_size
        pos_emb = self.pos_embed(H, W, scale=scale, base_size=base_size)
        t = self.t_embedder(timestep) + self.fps_embedder(fps)
        t_mlp = self.t_block(t)
        y = self.y_embedder(y, force_drop_ids).squeeze(1)  # [B, L, C]
        x = self.x_embedder(x)
        x = (x.view(B, T, S, -1) + pos_emb).view(B, T * S, -1)
        for sb, tb in zip(self.spatial_blocks, self.temporal_blocks):
            x = sb(x, y, t_mlp, mask, T, S)
            x = tb(x, y, t_mlp, mask, T, S)
        x = self.final_layer(x, t)
        x = x.view(B, T, H, W, p[0], p[1], p[2], self.out_channels)  # "B (N_t N_h N_w) (T_p H_p W_p C_out)"
        x = x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(B, self.out_channels, T * p[0], H * p[1], W * p[2])
        return x[:, :, :Tx, :Hx, :Wx].float()
