"""The converter: a reference-layout PyTorch state dict -> jrt.LM parameters gives the same logits, and back.

The released checkpoints cannot be downloaded here, so the PyTorch side is a transcription of the
reference modules with random weights, from HazyResearch/prefix-linear-attention at commit 7490f22:
`based/models/mixers/prefix_linear_attention.py` (TaylorExp, PrefixLinearAttention, implementation
"default", no mask), `based/models/mixers/linear_attention.py` (LinearAttention, parallel_implementation
"quadratic"), `based/models/mixers/convolution.py` (ShortConvolution, BaseConv),
`based/models/mixers/slide_attention.py` (SlidingAttention: Wqkv, flash-attn rotary, window
(window_size // 2, 0)), `train/src/models/mlp.py` (GatedMlp, SwiGLU), `train/src/models/block.py` +
`train/src/models/gpt.py` (pre-norm blocks with flash-attn RMSNorm, GPT2Embeddings without position
embeddings, tied lm_head). Module names are the reference's, so the state dict has its keys.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrt
from jrt.convert import from_torch_state_dict, to_torch_state_dict
from jrt.model import apply_fn

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


class TaylorExp(nn.Module):
    def __init__(self, input_dim):
        super().__init__()
        self.r2, self.rd, self.rrd = math.sqrt(2), math.sqrt(input_dim), math.sqrt(math.sqrt(input_dim))

    def forward(self, x):
        x2 = (x.unsqueeze(-1) * x.unsqueeze(-2)).flatten(start_dim=-2) / self.r2
        return torch.cat([x[..., :1] ** 0, x / self.rrd, x2 / self.rd], dim=-1)


class PrefixLinearAttention(nn.Module):
    def __init__(self, d, heads, feature_dim, enc_length, prefix=True, eps=1e-12):
        super().__init__()
        self.h, self.f, self.dv, self.enc_length, self.eps, self.prefix = (
            heads,
            feature_dim,
            d // heads,
            enc_length,
            eps,
            prefix,
        )
        self.feature_map = TaylorExp(feature_dim)
        self.proj_q = nn.Linear(d, feature_dim * heads, bias=False)
        self.proj_k = nn.Linear(d, feature_dim * heads, bias=False)
        self.proj_v = nn.Linear(d, heads * self.dv, bias=False)
        if prefix:
            self.proj_k_enc = nn.Linear(d, feature_dim * heads, bias=False)
            self.proj_v_enc = nn.Linear(d, heads * self.dv, bias=False)
        self.out_proj = nn.Linear(heads * self.dv, d, bias=False)

    def forward(self, x, mask=None):
        b, n = x.shape[:2]
        q = self.proj_q(x).view(b, n, self.h, self.f).transpose(1, 2)
        k = self.proj_k(x).view(b, n, self.h, self.f).transpose(1, 2)
        v = self.proj_v(x).view(b, n, self.h, self.dv).transpose(1, 2)
        if self.prefix:
            m = min(self.enc_length, n)
            k_enc = self.proj_k_enc(x[:, :m]).view(b, m, self.h, self.f).transpose(1, 2)
            v_enc = self.proj_v_enc(x[:, :m]).view(b, m, self.h, self.dv).transpose(1, 2)
            if mask is not None and n > 1 and mask.shape[1] <= m:  # "Applying masks"
                lin_attn_mask = mask[:, None, :, None].to(torch.bool)
                k = k.masked_fill(~lin_attn_mask, 0)
                k_enc = k_enc.masked_fill(~lin_attn_mask, 0)
        q, k = self.feature_map(q), self.feature_map(k)
        y1 = torch.einsum("bhnm,bhme->bhne", torch.tril(torch.einsum("bhnd,bhmd->bhnm", q, k)), v)
        k_state = k.cumsum(2)
        if self.prefix:  # PrefixLinearAttention.parallel_forward, implementation "default"
            k_enc = self.feature_map(k_enc)
            y2 = torch.einsum("bhnm,bhme->bhne", torch.einsum("bhnd,bhmd->bhnm", q, k_enc), v_enc)
            k_state = k_enc.sum(dim=2, keepdim=True) + k_state
        else:  # LinearAttention, parallel_implementation "quadratic"
            y2 = 0
        z = 1 / ((q * k_state).sum(dim=-1) + self.eps)
        y = (y1 + y2) * z[..., None]
        return self.out_proj(y.transpose(1, 2).reshape(b, n, -1))


class ShortConvolution(nn.Module):
    def __init__(self, d, kernel_size):
        super().__init__()
        self.conv = nn.Conv1d(d, d, kernel_size=kernel_size, groups=d, padding=kernel_size - 1, bias=False)

    def forward(self, x):
        return self.conv(x.transpose(1, 2))[..., : x.shape[1]].transpose(1, 2)


class BaseConv(nn.Module):
    def __init__(self, d, kernel_size=3, expand_proj=4):
        super().__init__()
        self.d_inner = expand_proj * d // 2
        self.in_proj = nn.Linear(d, expand_proj * d, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d, bias=True)
        self.conv = ShortConvolution(self.d_inner, kernel_size)

    def forward(self, u):
        u1, u2 = torch.split(self.in_proj(u), self.d_inner, dim=-1)
        return self.out_proj(F.silu(self.conv(u1)) * u2)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class SlidingAttention(nn.Module):
    """Wqkv "(three h d)", flash-attn RotaryEmbedding (non-interleaved, full head dim), softmax scale
    1/sqrt(D), causal with window (window_size // 2, 0): keys i - window_size // 2 .. i."""

    def __init__(self, d, heads, window_size, base=10000.0):
        super().__init__()
        self.h, self.hd, self.window = heads, d // heads, (window_size // 2, 0)
        self.Wqkv = nn.Linear(d, 3 * d, bias=False)
        self.out_proj = nn.Linear(d, d, bias=False)
        self.inv_freq = 1.0 / (base ** (torch.arange(0, self.hd, 2, dtype=torch.float32) / self.hd))

    def forward(self, x):
        b, n, _ = x.shape
        qkv = self.Wqkv(x).view(b, n, 3, self.h, self.hd)
        q, k, v = qkv.unbind(2)
        freqs = torch.outer(torch.arange(n, dtype=torch.float32), self.inv_freq)
        cos = torch.cat([freqs.cos()] * 2, -1)[None, :, None]
        sin = torch.cat([freqs.sin()] * 2, -1)[None, :, None]
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        s = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(self.hd)
        i, j = torch.arange(n)[:, None], torch.arange(n)[None]
        s = s.masked_fill(~((j <= i) & (i - j <= self.window[0])), float("-inf"))
        y = torch.einsum("bhqk,bkhd->bqhd", s.softmax(-1), v)
        return self.out_proj(y.reshape(b, n, -1))


class GatedMlp(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.fc1 = nn.Linear(d, 2 * hidden, bias=False)
        self.fc2 = nn.Linear(hidden, d, bias=False)

    def forward(self, x):
        y, gate = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(y * F.silu(gate))


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(d)), eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Block(nn.Module):
    def __init__(self, mixer, d, hidden):
        super().__init__()
        self.mixer, self.norm1, self.norm2, self.mlp = mixer, RMSNorm(d), RMSNorm(d), GatedMlp(d, hidden)

    def forward(self, x, mask=None):  # only PLA reads the mask (kwargs["mask"] in the reference)
        kw = {"mask": mask} if isinstance(self.mixer, PrefixLinearAttention) else {}
        x = x + self.mixer(self.norm1(x), **kw)
        return x + self.mlp(self.norm2(x))


class Embeddings(nn.Module):
    def __init__(self, vocab, d):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, d)


class GPTModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg.d_model
        self.embeddings = Embeddings(cfg.vocab_size, d)

        def mixer(kind):
            if kind == "conv":
                return BaseConv(d, cfg.conv_kernel, cfg.conv_expand)
            if kind == "swa":
                return SlidingAttention(d, cfg.heads, 2 * cfg.window, cfg.rope_base)
            return PrefixLinearAttention(d, cfg.heads, cfg.feature_dim, cfg.encoder_len, prefix=kind == "pla")

        self.layers = nn.ModuleList([Block(mixer(m), d, cfg.mlp_hidden) for m in cfg.mixers])
        self.ln_f = RMSNorm(d)


class GPTLMHeadModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.transformer = GPTModel(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.embeddings.word_embeddings.weight  # tie_weights

    def forward(self, ids, mask=None):
        x = self.transformer.embeddings.word_embeddings(ids)
        for layer in self.transformer.layers:
            x = layer(x, mask)
        return self.lm_head(self.transformer.ln_f(x))


def random_reference(cfg, seed):
    torch.manual_seed(seed)
    model = GPTLMHeadModel(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_f" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif "conv.conv" not in name:
                p.copy_(0.3 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("which", ["jrt", "based"])
def test_reference_state_dict_gives_the_same_logits(which):
    cfg = jrt.JRTConfig.tiny() if which == "jrt" else jrt.JRTConfig.tiny_based()
    model = random_reference(cfg, 0)
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 16))
    with torch.no_grad():
        want = model(torch.from_numpy(ids)).numpy()
    sd = {"model." + k: v for k, v in model.state_dict().items()}  # the HF file layout
    sd["model.train_metrics.num-tokens.count"] = torch.zeros(())
    params = from_torch_state_dict(sd, cfg)
    got = apply_fn(cfg)(
        jax.tree.map(jnp.asarray, params), jnp.asarray(ids, jnp.int32), jnp.ones((2, 16), bool)
    )
    assert np.abs(want).max() > 1  # logits that vary by O(1), so 1e-4 means something
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # And back: the same keys and values as the reference's own state dict.
    back = to_torch_state_dict(params, cfg)
    ref = model.state_dict()
    assert set(back) == set(ref)
    for k, v in ref.items():
        np.testing.assert_array_equal(back[k], v.numpy(), err_msg=k)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()})


def test_reference_padding_mode_scores_left_padded_prompts_as_the_harness():
    """default_left_pad: a prompt shorter than M is left-padded with a real token id up to M; the harness's
    PLA zeroes padded keys before the feature map, BaseConv/SWA/LA ignore the mask. padding="reference"
    reproduces that; the exact mode gives each real position what the unpadded prompt gives."""
    cfg = jrt.JRTConfig.tiny(pad_token_id=5)
    model = random_reference(cfg, 1)
    params = jax.tree.map(jnp.asarray, from_torch_state_dict(model.state_dict(), cfg))
    prompt, pmask = jrt.pad_prompt(cfg, np.random.default_rng(1).integers(6, cfg.vocab_size, (2, 5)))
    with torch.no_grad():
        want = model(torch.from_numpy(prompt.astype(np.int64)), torch.from_numpy(pmask)).numpy()
    ref = apply_fn(cfg.replace(padding="reference"))(params, jnp.asarray(prompt), jnp.asarray(pmask))
    np.testing.assert_allclose(ref, want, rtol=1e-4, atol=1e-4)
    exact = apply_fn(cfg)(params, jnp.asarray(prompt), jnp.asarray(pmask))
    assert not np.allclose(exact[:, -1], want[:, -1], atol=1e-2)  # the pads change the reference's numbers
    with pytest.raises(ValueError, match="padding must be 'exact' or 'reference'"):
        cfg.replace(padding="torch")


def test_converter_errors():
    cfg = jrt.JRTConfig.tiny()
    sd = to_torch_state_dict(jrt.init_params(cfg, jax.random.key(0)), cfg)
    with pytest.raises(ValueError, match="lacks 1 keys this config needs .*layers.1.mixer.proj_k_enc.weight"):
        from_torch_state_dict({k: v for k, v in sd.items() if "proj_k_enc" not in k}, cfg)
    with pytest.raises(ValueError, match="has 1 keys this config has no parameter for, e.g. .*Wqkv.bias"):
        from_torch_state_dict({**sd, "transformer.layers.2.mixer.Wqkv.bias": np.zeros(96)}, cfg)
    with pytest.raises(ValueError, match="lm_head.weight differs from the embedding"):
        from_torch_state_dict({**sd, "lm_head.weight": sd["lm_head.weight"] + 1}, cfg)
    with pytest.raises(ValueError, match="Shapes do not match the config"):
        from_torch_state_dict(sd, cfg.replace(mlp_hidden=32))
