"""A PyTorch transcription of Open-Sora 1.2's video VAE (`VideoAutoencoderPipeline`), for tests.

Transcribed from hpcaitech/Open-Sora, branch opensora/v1.2, commit bde3c420a19e7f84a4f3144e01eeb132b9e33a06:
`opensora/models/vae/vae.py` (VideoAutoencoderKL, VideoAutoencoderPipeline, OpenSoraVAE_V1_2),
`opensora/models/vae/vae_temporal.py` (CausalConv3d, ResBlock, Encoder, Decoder, VAE_Temporal, VAE_Temporal_SD),
`opensora/models/vae/utils.py` (DiagonalGaussianDistribution); and of the parts of diffusers' AutoencoderKL
it uses, from huggingface/diffusers (src/diffusers/models/autoencoders/vae.py Encoder/Decoder at commit
04957c2003faa079d73e5a749655ccc0ba4bddbf, autoencoder_kl.py, unets/unet_2d_blocks.py DownEncoderBlock2D/
UpDecoderBlock2D/UNetMidBlock2D, resnet.py ResnetBlock2D, downsampling.py Downsample2D, upsampling.py
Upsample2D, attention_processor.py Attention + AttnProcessor2_0), with the SDXL VAE config that
PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers/vae holds (block_out_channels 128-256-512-512,
layers_per_block 2, 32 groups, 4 latent channels). Module and attribute names are the originals', so
`state_dict()` has the released hpcai-tech/OpenSora-VAE-v1.2 checkpoint's keys (`spatial_vae.module.encoder.
...`, `temporal_vae.encoder...`, buffers `scale`, `shift`). Replacements: einops.rearrange -> reshape/permute;
no from_pretrained (weights come from the state dict); no transformers PretrainedConfig; `sample=False`
uses the posterior mode instead of a sample (the random draw cannot be matched across frameworks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DiagonalGaussianDistribution:
    def __init__(self, parameters):
        self.mean, self.logvar = torch.chunk(parameters, 2, dim=1)
        self.logvar = torch.clamp(self.logvar, -30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self):
        return self.mean + self.std * torch.randn(self.mean.shape, dtype=self.mean.dtype)

    def mode(self):
        return self.mean


# ------------------------------------------------------------------------------------ diffusers AutoencoderKL
class ResnetBlock2D(nn.Module):
    def __init__(self, in_channels, out_channels, groups=32, eps=1e-6):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps, affine=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps, affine=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1)
        self.nonlinearity = nn.SiLU()
        self.use_in_shortcut = in_channels != out_channels
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1, 1, 0) if self.use_in_shortcut else None

    def forward(self, input_tensor):
        h = self.conv1(self.nonlinearity(self.norm1(input_tensor)))
        h = self.conv2(self.nonlinearity(self.norm2(h)))
        if self.conv_shortcut is not None:
            input_tensor = self.conv_shortcut(input_tensor)
        return input_tensor + h  # output_scale_factor 1


class Attention(nn.Module):
    """diffusers Attention(query_dim=C, heads=1, dim_head=C, norm_num_groups, residual_connection=True,
    bias=True, upcast_softmax=True, _from_deprecated_attn_block=True) with AttnProcessor2_0."""

    def __init__(self, channels, groups=32, eps=1e-6):
        super().__init__()
        self.heads = 1
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps, affine=True)
        self.to_q = nn.Linear(channels, channels, bias=True)
        self.to_k = nn.Linear(channels, channels, bias=True)
        self.to_v = nn.Linear(channels, channels, bias=True)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels, bias=True), nn.Dropout(0.0)])

    def forward(self, hidden_states):
        residual = hidden_states
        b, c, h, w = hidden_states.shape
        hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        hidden_states = self.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        q, k, v = self.to_q(hidden_states), self.to_k(hidden_states), self.to_v(hidden_states)
        q, k, v = (t.view(b, -1, self.heads, c // self.heads).transpose(1, 2) for t in (q, k, v))
        hidden_states = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
        hidden_states = hidden_states.transpose(1, 2).reshape(b, -1, c)
        hidden_states = self.to_out[1](self.to_out[0](hidden_states))
        hidden_states = hidden_states.transpose(-1, -2).reshape(b, c, h, w)
        return hidden_states + residual  # rescale_output_factor 1


class UNetMidBlock2D(nn.Module):
    def __init__(self, in_channels, groups=32, eps=1e-6):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(in_channels, in_channels, groups, eps) for _ in range(2)])
        self.attentions = nn.ModuleList([Attention(in_channels, groups, eps)])

    def forward(self, x):
        x = self.resnets[0](x)
        for attn, resnet in zip(self.attentions, self.resnets[1:]):
            x = resnet(attn(x))
        return x


class Downsample2D(nn.Module):
    def __init__(self, channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels, kernel_size=3, stride=2, padding=0, bias=True)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class Upsample2D(nn.Module):
    def __init__(self, channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels, kernel_size=3, padding=1, bias=True)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownEncoderBlock2D(nn.Module):
    def __init__(self, in_channels, out_channels, num_layers, groups, add_downsample):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, groups) for i in range(num_layers)])
        self.downsamplers = nn.ModuleList([Downsample2D(out_channels, out_channels)]) if add_downsample else None

    def forward(self, x):
        for r in self.resnets:
            x = r(x)
        if self.downsamplers is not None:
            for d in self.downsamplers:
                x = d(x)
        return x


class UpDecoderBlock2D(nn.Module):
    def __init__(self, in_channels, out_channels, num_layers, groups, add_upsample):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, groups) for i in range(num_layers)])
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels, out_channels)]) if add_upsample else None

    def forward(self, x):
        for r in self.resnets:
            x = r(x)
        if self.upsamplers is not None:
            for u in self.upsamplers:
                x = u(x)
        return x


class Encoder(nn.Module):
    def __init__(self, in_channels, out_channels, block_out_channels, layers_per_block, norm_num_groups):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, stride=1, padding=1)
        self.down_blocks = nn.ModuleList([])
        output_channel = block_out_channels[0]
        for i in range(len(block_out_channels)):
            input_channel = output_channel
            output_channel = block_out_channels[i]
            is_final_block = i == len(block_out_channels) - 1
            self.down_blocks.append(DownEncoderBlock2D(input_channel, output_channel, layers_per_block,
                                                       norm_num_groups, not is_final_block))
        self.mid_block = UNetMidBlock2D(block_out_channels[-1], norm_num_groups)
        self.conv_norm_out = nn.GroupNorm(num_channels=block_out_channels[-1], num_groups=norm_num_groups, eps=1e-6)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[-1], 2 * out_channels, 3, padding=1)  # double_z

    def forward(self, sample):
        sample = self.conv_in(sample)
        for down_block in self.down_blocks:
            sample = down_block(sample)
        sample = self.mid_block(sample)
        return self.conv_out(self.conv_act(self.conv_norm_out(sample)))


class Decoder(nn.Module):
    def __init__(self, in_channels, out_channels, block_out_channels, layers_per_block, norm_num_groups):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[-1], kernel_size=3, stride=1, padding=1)
        self.mid_block = UNetMidBlock2D(block_out_channels[-1], norm_num_groups)
        self.up_blocks = nn.ModuleList([])
        reversed_block_out_channels = list(reversed(block_out_channels))
        output_channel = reversed_block_out_channels[0]
        for i in range(len(block_out_channels)):
            prev_output_channel = output_channel
            output_channel = reversed_block_out_channels[i]
            is_final_block = i == len(block_out_channels) - 1
            self.up_blocks.append(UpDecoderBlock2D(prev_output_channel, output_channel, layers_per_block + 1,
                                                   norm_num_groups, not is_final_block))
        self.conv_norm_out = nn.GroupNorm(num_channels=block_out_channels[0], num_groups=norm_num_groups, eps=1e-6)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, 3, padding=1)

    def forward(self, sample):
        sample = self.mid_block(self.conv_in(sample))
        for up_block in self.up_blocks:
            sample = up_block(sample)
        return self.conv_out(self.conv_act(self.conv_norm_out(sample)))


class AutoencoderKL(nn.Module):
    def __init__(self, in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                 latent_channels=4, norm_num_groups=32):
        super().__init__()
        self.encoder = Encoder(in_channels, latent_channels, block_out_channels, layers_per_block, norm_num_groups)
        self.decoder = Decoder(latent_channels, out_channels, block_out_channels, layers_per_block, norm_num_groups)
        self.quant_conv = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1)
        self.latent_channels = latent_channels

    def encode(self, x):
        return DiagonalGaussianDistribution(self.quant_conv(self.encoder(x)))

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))


class VideoAutoencoderKL(nn.Module):
    def __init__(self, micro_batch_size=None, sample=False, **ae_kwargs):
        super().__init__()
        self.module = AutoencoderKL(**ae_kwargs)
        self.out_channels = self.module.latent_channels
        self.patch_size = (1, 8, 8)
        self.micro_batch_size = micro_batch_size
        self.sample = sample

    def _enc(self, x):
        d = self.module.encode(x)
        return (d.sample() if self.sample else d.mode()).mul_(0.18215)

    def encode(self, x):  # x: (B, C, T, H, W)
        B, C, T, H, W = x.shape
        x = x.permute(0, 2, 1, 3, 4).reshape(B * T, C, H, W)
        if self.micro_batch_size is None:
            x = self._enc(x)
        else:
            bs = self.micro_batch_size
            x = torch.cat([self._enc(x[i: i + bs]) for i in range(0, x.shape[0], bs)], dim=0)
        return x.reshape(B, T, *x.shape[1:]).permute(0, 2, 1, 3, 4)

    def decode(self, x, **kwargs):
        B, C, T, H, W = x.shape
        x = x.permute(0, 2, 1, 3, 4).reshape(B * T, C, H, W)
        if self.micro_batch_size is None:
            x = self.module.decode(x / 0.18215)
        else:
            bs = self.micro_batch_size
            x = torch.cat([self.module.decode(x[i: i + bs] / 0.18215) for i in range(0, x.shape[0], bs)], dim=0)
        return x.reshape(B, T, *x.shape[1:]).permute(0, 2, 1, 3, 4)

    def get_latent_size(self, input_size):
        return [input_size[i] // self.patch_size[i] if input_size[i] is not None else None for i in range(3)]


# ------------------------------------------------------------------------------------ vae_temporal.py
def cast_tuple(t, length=1):
    return t if isinstance(t, tuple) else ((t,) * length)


def pad_at_dim(t, pad, dim=-1):
    dims_from_right = (-dim - 1) if dim < 0 else (t.ndim - dim - 1)
    zeros = (0, 0) * dims_from_right
    return F.pad(t, (*zeros, *pad), mode="constant")


class CausalConv3d(nn.Module):
    def __init__(self, chan_in, chan_out, kernel_size, pad_mode="constant", strides=None, **kwargs):
        super().__init__()
        kernel_size = cast_tuple(kernel_size, 3)
        time_kernel_size, height_kernel_size, width_kernel_size = kernel_size
        dilation = kwargs.pop("dilation", 1)
        stride = strides[0] if strides is not None else kwargs.pop("stride", 1)
        self.pad_mode = pad_mode
        time_pad = dilation * (time_kernel_size - 1) + (1 - stride)
        height_pad = height_kernel_size // 2
        width_pad = width_kernel_size // 2
        self.time_pad = time_pad
        self.time_causal_padding = (width_pad, width_pad, height_pad, height_pad, time_pad, 0)
        stride = strides if strides is not None else (stride, 1, 1)
        dilation = (dilation, 1, 1)
        self.conv = nn.Conv3d(chan_in, chan_out, kernel_size, stride=stride, dilation=dilation, **kwargs)

    def forward(self, x):
        return self.conv(F.pad(x, self.time_causal_padding, mode=self.pad_mode))


class ResBlock(nn.Module):
    def __init__(self, in_channels, filters, conv_fn, activation_fn=nn.SiLU, use_conv_shortcut=False, num_groups=32):
        super().__init__()
        self.in_channels = in_channels
        self.filters = filters
        self.activate = activation_fn()
        self.norm1 = nn.GroupNorm(num_groups, in_channels)
        self.conv1 = conv_fn(in_channels, self.filters, kernel_size=(3, 3, 3), bias=False)
        self.norm2 = nn.GroupNorm(num_groups, self.filters)
        self.conv2 = conv_fn(self.filters, self.filters, kernel_size=(3, 3, 3), bias=False)
        if in_channels != filters:
            if use_conv_shortcut:
                self.conv3 = conv_fn(in_channels, self.filters, kernel_size=(3, 3, 3), bias=False)
            else:
                self.conv3 = conv_fn(in_channels, self.filters, kernel_size=(1, 1, 1), bias=False)

    def forward(self, x):
        residual = x
        x = self.conv1(self.activate(self.norm1(x)))
        x = self.conv2(self.activate(self.norm2(x)))
        if self.in_channels != self.filters:
            residual = self.conv3(residual)
        return x + residual


class TEncoder(nn.Module):
    """vae_temporal.Encoder."""

    def __init__(self, in_out_channels=4, latent_embed_dim=512, filters=128, num_res_blocks=4,
                 channel_multipliers=(1, 2, 2, 4), temporal_downsample=(False, True, True), num_groups=32):
        super().__init__()
        self.filters = filters
        self.num_res_blocks = num_res_blocks
        self.num_blocks = len(channel_multipliers)
        self.channel_multipliers = channel_multipliers
        self.temporal_downsample = temporal_downsample
        self.activate = nn.SiLU()
        block_args = dict(conv_fn=CausalConv3d, activation_fn=nn.SiLU, use_conv_shortcut=False, num_groups=num_groups)
        self.conv_in = CausalConv3d(in_out_channels, filters, kernel_size=(3, 3, 3), bias=False)
        self.block_res_blocks = nn.ModuleList([])
        self.conv_blocks = nn.ModuleList([])
        filters = self.filters
        prev_filters = filters
        for i in range(self.num_blocks):
            filters = self.filters * self.channel_multipliers[i]
            block_items = nn.ModuleList([])
            for _ in range(self.num_res_blocks):
                block_items.append(ResBlock(prev_filters, filters, **block_args))
                prev_filters = filters
            self.block_res_blocks.append(block_items)
            if i < self.num_blocks - 1:
                if self.temporal_downsample[i]:
                    self.conv_blocks.append(CausalConv3d(prev_filters, filters, kernel_size=(3, 3, 3), strides=(2, 1, 1)))
                else:
                    self.conv_blocks.append(nn.Identity(prev_filters))
                prev_filters = filters
        self.res_blocks = nn.ModuleList([])
        for _ in range(self.num_res_blocks):
            self.res_blocks.append(ResBlock(prev_filters, filters, **block_args))
            prev_filters = filters
        self.norm1 = nn.GroupNorm(num_groups, prev_filters)
        self.conv2 = CausalConv3d(prev_filters, latent_embed_dim, kernel_size=(1, 1, 1), padding="same")

    def forward(self, x):
        x = self.conv_in(x)
        for i in range(self.num_blocks):
            for j in range(self.num_res_blocks):
                x = self.block_res_blocks[i][j](x)
            if i < self.num_blocks - 1:
                x = self.conv_blocks[i](x)
        for i in range(self.num_res_blocks):
            x = self.res_blocks[i](x)
        return self.conv2(self.activate(self.norm1(x)))


class TDecoder(nn.Module):
    """vae_temporal.Decoder."""

    def __init__(self, in_out_channels=4, latent_embed_dim=512, filters=128, num_res_blocks=4,
                 channel_multipliers=(1, 2, 2, 4), temporal_downsample=(False, True, True), num_groups=32):
        super().__init__()
        self.filters = filters
        self.num_res_blocks = num_res_blocks
        self.num_blocks = len(channel_multipliers)
        self.channel_multipliers = channel_multipliers
        self.temporal_downsample = temporal_downsample
        self.s_stride = 1
        self.activate = nn.SiLU()
        block_args = dict(conv_fn=CausalConv3d, activation_fn=nn.SiLU, use_conv_shortcut=False, num_groups=num_groups)
        filters = self.filters * self.channel_multipliers[-1]
        prev_filters = filters
        self.conv1 = CausalConv3d(latent_embed_dim, filters, kernel_size=(3, 3, 3), bias=True)
        self.res_blocks = nn.ModuleList([])
        for _ in range(self.num_res_blocks):
            self.res_blocks.append(ResBlock(filters, filters, **block_args))
        self.block_res_blocks = nn.ModuleList([])
        self.conv_blocks = nn.ModuleList([])
        for i in reversed(range(self.num_blocks)):
            filters = self.filters * self.channel_multipliers[i]
            block_items = nn.ModuleList([])
            for _ in range(self.num_res_blocks):
                block_items.append(ResBlock(prev_filters, filters, **block_args))
                prev_filters = filters
            self.block_res_blocks.insert(0, block_items)
            if i > 0:
                if self.temporal_downsample[i - 1]:
                    t_stride = 2 if self.temporal_downsample[i - 1] else 1
                    self.conv_blocks.insert(0, CausalConv3d(
                        prev_filters, prev_filters * t_stride * self.s_stride * self.s_stride, kernel_size=(3, 3, 3)))
                else:
                    self.conv_blocks.insert(0, nn.Identity(prev_filters))
        self.norm1 = nn.GroupNorm(num_groups, prev_filters)
        self.conv_out = CausalConv3d(filters, in_out_channels, 3)

    def forward(self, x):
        x = self.conv1(x)
        for i in range(self.num_res_blocks):
            x = self.res_blocks[i](x)
        for i in reversed(range(self.num_blocks)):
            for j in range(self.num_res_blocks):
                x = self.block_res_blocks[i][j](x)
            if i > 0:
                t_stride = 2 if self.temporal_downsample[i - 1] else 1
                x = self.conv_blocks[i - 1](x)
                # rearrange "B (C ts hs ws) T H W -> B C (T ts) (H hs) (W ws)" with hs = ws = 1
                b, cts, t, h, w = x.shape
                x = x.reshape(b, cts // t_stride, t_stride, t, h, w).permute(0, 1, 3, 2, 4, 5)
                x = x.reshape(b, cts // t_stride, t * t_stride, h, w)
        return self.conv_out(self.activate(self.norm1(x)))


class VAE_Temporal(nn.Module):
    def __init__(self, in_out_channels=4, latent_embed_dim=4, embed_dim=4, filters=128, num_res_blocks=4,
                 channel_multipliers=(1, 2, 2, 4), temporal_downsample=(True, True, False), num_groups=32,
                 sample=False):
        super().__init__()
        self.time_downsample_factor = 2 ** sum(temporal_downsample)
        self.patch_size = (self.time_downsample_factor, 1, 1)
        self.out_channels = in_out_channels
        self.sample = sample
        kw = dict(filters=filters, num_res_blocks=num_res_blocks, channel_multipliers=channel_multipliers,
                  temporal_downsample=temporal_downsample, num_groups=num_groups)
        self.encoder = TEncoder(in_out_channels=in_out_channels, latent_embed_dim=latent_embed_dim * 2, **kw)
        self.quant_conv = CausalConv3d(2 * latent_embed_dim, 2 * embed_dim, 1)
        self.post_quant_conv = CausalConv3d(embed_dim, latent_embed_dim, 1)
        self.decoder = TDecoder(in_out_channels=in_out_channels, latent_embed_dim=latent_embed_dim, **kw)

    def get_latent_size(self, input_size):
        latent_size = []
        for i in range(3):
            if input_size[i] is None:
                lsize = None
            elif i == 0:
                f = self.time_downsample_factor
                time_padding = 0 if (input_size[i] % f == 0) else f - input_size[i] % f
                lsize = (input_size[i] + time_padding) // self.patch_size[i]
            else:
                lsize = input_size[i] // self.patch_size[i]
            latent_size.append(lsize)
        return latent_size

    def encode(self, x):
        f = self.time_downsample_factor
        time_padding = 0 if (x.shape[2] % f == 0) else f - x.shape[2] % f
        x = pad_at_dim(x, (time_padding, 0), dim=2)
        return DiagonalGaussianDistribution(self.quant_conv(self.encoder(x)).to(x.dtype))

    def decode(self, z, num_frames=None):
        f = self.time_downsample_factor
        time_padding = 0 if (num_frames % f == 0) else f - num_frames % f
        x = self.decoder(self.post_quant_conv(z))
        return x[:, :, time_padding:]


def VAE_Temporal_SD(**kwargs):
    defaults = dict(in_out_channels=4, latent_embed_dim=4, embed_dim=4, filters=128, num_res_blocks=4,
                    channel_multipliers=(1, 2, 2, 4), temporal_downsample=(False, True, True))
    return VAE_Temporal(**{**defaults, **kwargs})


# ------------------------------------------------------------------------------------ vae.py pipeline
class VideoAutoencoderPipeline(nn.Module):
    def __init__(self, spatial_vae, temporal_vae, micro_frame_size=None, shift=0.0, scale=1.0):
        super().__init__()
        self.spatial_vae = spatial_vae
        self.temporal_vae = temporal_vae
        self.cal_loss = False
        self.micro_frame_size = micro_frame_size
        self.micro_z_frame_size = self.temporal_vae.get_latent_size([micro_frame_size, None, None])[0]
        self.out_channels = self.temporal_vae.out_channels
        scale = torch.tensor(scale)
        shift = torch.tensor(shift)
        if len(scale.shape) > 0:
            scale = scale[None, :, None, None, None]
        if len(shift.shape) > 0:
            shift = shift[None, :, None, None, None]
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def _z(self, posterior):
        return posterior.sample() if self.temporal_vae.sample else posterior.mode()

    def encode(self, x):
        x_z = self.spatial_vae.encode(x)
        if self.micro_frame_size is None:
            z = self._z(self.temporal_vae.encode(x_z))
        else:
            z_list = []
            for i in range(0, x_z.shape[2], self.micro_frame_size):
                z_list.append(self._z(self.temporal_vae.encode(x_z[:, :, i: i + self.micro_frame_size])))
            z = torch.cat(z_list, dim=2)
        return (z - self.shift) / self.scale

    def decode(self, z, num_frames=None):
        z = z * self.scale.to(z.dtype) + self.shift.to(z.dtype)
        if self.micro_frame_size is None:
            x_z = self.temporal_vae.decode(z, num_frames=num_frames)
        else:
            x_z_list = []
            for i in range(0, z.size(2), self.micro_z_frame_size):
                z_bs = z[:, :, i: i + self.micro_z_frame_size]
                x_z_list.append(self.temporal_vae.decode(z_bs, num_frames=min(self.micro_frame_size, num_frames)))
                num_frames -= self.micro_frame_size
            x_z = torch.cat(x_z_list, dim=2)
        return self.spatial_vae.decode(x_z)

    def get_latent_size(self, input_size):
        if self.micro_frame_size is None or input_size[0] is None:
            return self.temporal_vae.get_latent_size(self.spatial_vae.get_latent_size(input_size))
        sub_input_size = [self.micro_frame_size, input_size[1], input_size[2]]
        sub_latent_size = self.temporal_vae.get_latent_size(self.spatial_vae.get_latent_size(sub_input_size))
        sub_latent_size[0] = sub_latent_size[0] * (input_size[0] // self.micro_frame_size)
        remain_temporal_size = [input_size[0] % self.micro_frame_size, None, None]
        if remain_temporal_size[0] > 0:
            sub_latent_size[0] += self.temporal_vae.get_latent_size(remain_temporal_size)[0]
        return sub_latent_size


def OpenSoraVAE_V1_2(micro_batch_size=4, micro_frame_size=17, spatial=None, temporal=None):
    """The released pipeline (spatial/temporal: keyword overrides for a tiny test config)."""
    shift = (-0.10, 0.34, 0.27, 0.98)
    scale = (3.85, 2.32, 2.33, 3.06)
    return VideoAutoencoderPipeline(VideoAutoencoderKL(micro_batch_size=micro_batch_size, **(spatial or {})),
                                    VAE_Temporal_SD(**(temporal or {})), micro_frame_size=micro_frame_size,
                                    shift=shift, scale=scale)
