"""Open-Sora 1.2 checkpoints into tora's parameters.

`load_opensora(source, config)` reads an STDiT3 checkpoint (`hpcai-tech/OpenSora-STDiT-v3`'s
`model.safetensors`, a torch state dict file such as Open-Sora's `ema.pt`, or an in-memory mapping of
names to arrays) and returns the parameter tree of `STDiT(config)`. Key by key (Open-Sora name -> ours):

    x_embedder.proj.weight [C, Cin, pt, ph, pw]   -> x_embedder/kernel [pt*ph*pw*Cin, C]
    t_embedder.mlp.{0,2}, fps_embedder.mlp.{0,2}  -> t_embedder/fc{1,2}, fps_embedder/fc{1,2}
    t_block.1                                     -> t_block
    y_embedder.y_proj.fc{1,2}, y_embedder.y_embedding -> y_embedder/fc{1,2}, y_embedder/y_embedding
    {spatial,temporal}_blocks.{i}.attn.qkv [3C, C] -> {..}_blocks_{i}/attn/qkv/kernel [C, 3, N, D]
    ....attn.{q,k}_norm.weight                    -> .../attn/{q,k}_norm/scale
    ....attn.proj, cross_attn.proj [C, C]         -> .../proj/kernel [N, D, C]
    ....cross_attn.q_linear [C, C], kv_linear [2C, C] -> kernel [C, N, D], [C, 2, N, D]
    ....mlp.fc{1,2}, scale_shift_table            -> same names
    final_layer.linear, final_layer.scale_shift_table -> same names
    rope.freqs                                    -> not a parameter here (checked against theta)

A leading "module." (DDP) is stripped. Missing, unexpected or mis-shaped keys raise ValueError naming them.
Weights cannot be downloaded in this project's CI; the tests build state dicts with the real key names from
a PyTorch transcription of STDiT3 (tests/tora/opensora_ref.py).

`load_opensora_vae(source, config)` does the same for Open-Sora 1.2's VAE (hpcai-tech/OpenSora-VAE-v1.2:
`spatial_vae.module.*` = diffusers' AutoencoderKL, `temporal_vae.*` = VAE_Temporal_SD) into
`tora.OpenSoraVAE`; `opensora_vae_state_dict_shapes(config)` lists its keys and shapes (from `jax.eval_shape`,
checked against a full-size PyTorch transcription in tests/tora/test_vae_opensora.py).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from tora.config import STDiTConfig

__all__ = [
    "load_opensora",
    "load_opensora_vae",
    "opensora_state_dict_shapes",
    "opensora_vae_state_dict_shapes",
    "read_state_dict",
]


def read_state_dict(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Name -> float32 numpy array from a .safetensors file, a torch checkpoint or a mapping (torch tensors
    or arrays). Torch checkpoints holding {"state_dict": ...}, {"model": ...} or {"ema": ...} are unwrapped."""
    if isinstance(source, Mapping):
        sd = dict(source)
    else:
        path = os.fspath(source)
        if not os.path.exists(path):
            raise ValueError(f"no checkpoint at {path!r}; expected a .safetensors file or a torch state dict.")
        if path.endswith(".safetensors"):
            from safetensors.numpy import load_file

            try:
                sd = load_file(path)
            except Exception:  # bf16 tensors: numpy cannot hold them, go through torch
                from safetensors.torch import load_file as load_torch

                sd = load_torch(path)
        else:
            import torch  # optional: only for torch pickles

            sd = torch.load(path, map_location="cpu", weights_only=True)
        for wrapper in ("state_dict", "model", "ema", "module"):
            if isinstance(sd, Mapping) and wrapper in sd and isinstance(sd[wrapper], Mapping):
                sd = dict(sd[wrapper])
    out = {}
    for k, v in sd.items():
        if hasattr(v, "detach"):  # torch tensor (bf16 included)
            v = v.detach().float().cpu().numpy()
        out[k.removeprefix("module.")] = np.asarray(v, np.float32)
    return out


def _linear(w, b, out_shape=None, in_shape=None):
    """torch Linear weight [out, in] -> kernel [*in_shape, *out_shape]."""
    k = w.T
    k = k.reshape(*(in_shape or (k.shape[0],)), *(out_shape or (k.shape[1],)))
    return {"kernel": k, "bias": b.reshape(out_shape or b.shape)}


def opensora_state_dict_shapes(cfg: STDiTConfig) -> dict[str, tuple[int, ...]]:
    """Every key of an Open-Sora 1.2 STDiT3 state dict for `cfg` with its shape (buffers included:
    y_embedder.y_embedding, rope.freqs)."""
    c, d = cfg.hidden_size, cfg.head_dim
    pt, ph, pw = cfg.patch_size
    m = cfg.mlp_dim
    s = {
        "x_embedder.proj.weight": (c, cfg.in_channels, pt, ph, pw),
        "x_embedder.proj.bias": (c,),
        "t_embedder.mlp.0.weight": (c, 256),
        "t_embedder.mlp.0.bias": (c,),
        "t_embedder.mlp.2.weight": (c, c),
        "t_embedder.mlp.2.bias": (c,),
        "fps_embedder.mlp.0.weight": (c, 256),
        "fps_embedder.mlp.0.bias": (c,),
        "fps_embedder.mlp.2.weight": (c, c),
        "fps_embedder.mlp.2.bias": (c,),
        "t_block.1.weight": (6 * c, c),
        "t_block.1.bias": (6 * c,),
        "y_embedder.y_embedding": (cfg.model_max_length, cfg.caption_channels),
        "y_embedder.y_proj.fc1.weight": (c, cfg.caption_channels),
        "y_embedder.y_proj.fc1.bias": (c,),
        "y_embedder.y_proj.fc2.weight": (c, c),
        "y_embedder.y_proj.fc2.bias": (c,),
        "rope.freqs": (d // 2,),
        "final_layer.scale_shift_table": (2, c),
        "final_layer.linear.weight": (pt * ph * pw * cfg.out_channels, c),
        "final_layer.linear.bias": (pt * ph * pw * cfg.out_channels,),
    }
    for kind in ("spatial_blocks", "temporal_blocks"):
        for i in range(cfg.depth):
            p = f"{kind}.{i}."
            s[p + "scale_shift_table"] = (6, c)
            s[p + "attn.qkv.weight"], s[p + "attn.qkv.bias"] = (3 * c, c), (3 * c,)
            if cfg.qk_norm:
                s[p + "attn.q_norm.weight"] = s[p + "attn.k_norm.weight"] = (d,)
            s[p + "attn.proj.weight"], s[p + "attn.proj.bias"] = (c, c), (c,)
            s[p + "cross_attn.q_linear.weight"], s[p + "cross_attn.q_linear.bias"] = (c, c), (c,)
            s[p + "cross_attn.kv_linear.weight"], s[p + "cross_attn.kv_linear.bias"] = (2 * c, c), (2 * c,)
            s[p + "cross_attn.proj.weight"], s[p + "cross_attn.proj.bias"] = (c, c), (c,)
            s[p + "mlp.fc1.weight"], s[p + "mlp.fc1.bias"] = (m, c), (m,)
            s[p + "mlp.fc2.weight"], s[p + "mlp.fc2.bias"] = (c, m), (c,)
    return s


def _check_keys(sd: dict[str, np.ndarray], cfg: STDiTConfig) -> None:
    want = opensora_state_dict_shapes(cfg)
    optional = {"rope.freqs"}
    missing = sorted(k for k in want if k not in sd and k not in optional)
    extra = sorted(k for k in sd if k not in want and not k.endswith("pos_embed.inv_freq"))
    if missing or extra:
        raise ValueError(
            f"the checkpoint does not match an Open-Sora 1.2 STDiT3 of this config (depth {cfg.depth}, hidden "
            f"{cfg.hidden_size}): missing {missing[:5]}{' ...' if len(missing) > 5 else ''} "
            f"({len(missing)}), unexpected {extra[:5]}{' ...' if len(extra) > 5 else ''} ({len(extra)})."
        )
    bad = [(k, sd[k].shape, want[k]) for k in want if k in sd and tuple(sd[k].shape) != want[k]]
    if bad:
        k, got, exp = bad[0]
        raise ValueError(f"checkpoint key {k} has shape {tuple(got)}; this config expects {exp} ({len(bad)} differ).")
    if "rope.freqs" in sd:
        d = cfg.head_dim
        theta = 1.0 / (cfg.rope_theta ** (np.arange(0, d, 2)[: d // 2] / d))
        if not np.allclose(sd["rope.freqs"], theta, rtol=1e-5):
            raise ValueError(f"the checkpoint's rope.freqs do not match RoPE with theta={cfg.rope_theta}.")


def load_opensora(source: str | os.PathLike | Mapping[str, Any], config: STDiTConfig | None = None, *,
                  vae: str | os.PathLike | Mapping[str, Any] | None = None, vae_config=None):
    """Parameters of `STDiT(config)` (default `STDiTConfig.xl()`) from an Open-Sora 1.2 STDiT3 checkpoint.

    source: a .safetensors file, a torch state dict file, or a mapping name -> tensor/array. The null caption
    `y_embedder.y_embedding` (a buffer in Open-Sora) becomes our fixed `y_embedding` parameter. With
    `config.scan` the block parameters are stacked on a leading "layers" axis. Returns float32 numpy leaves
    (plain arrays, no partitioning boxes); give them to `tora.init_state(run, params=...)` or apply directly.
    For a Tora model, `tora.load_base_params(tora_params, load_opensora(...))`.

    vae: optionally an Open-Sora 1.2 VAE checkpoint too (hpcai-tech/OpenSora-VAE-v1.2); then the result is
    `(stdit_params, vae_params)`, the latter for `OpenSoraVAE(vae_config or OpenSoraVAEConfig())`
    (see `load_opensora_vae`).
    """
    if vae is not None:
        return load_opensora(source, config), load_opensora_vae(vae, vae_config)
    cfg = STDiTConfig.xl() if config is None else config
    sd = read_state_dict(source)
    _check_keys(sd, cfg)
    c, n, d = cfg.hidden_size, cfg.num_heads, cfg.head_dim
    g = lambda k: sd[k]  # noqa: E731
    lin = lambda p, **kw: _linear(g(p + ".weight"), g(p + ".bias"), **kw)  # noqa: E731

    w = g("x_embedder.proj.weight")  # [C, Cin, pt, ph, pw] -> [(pt, ph, pw, Cin), C]
    params: dict[str, Any] = {
        "x_embedder": {"kernel": w.transpose(2, 3, 4, 1, 0).reshape(-1, c), "bias": g("x_embedder.proj.bias")},
        "t_embedder": {"fc1": lin("t_embedder.mlp.0"), "fc2": lin("t_embedder.mlp.2")},
        "fps_embedder": {"fc1": lin("fps_embedder.mlp.0"), "fc2": lin("fps_embedder.mlp.2")},
        "t_block": lin("t_block.1"),
        "y_embedder": {
            "y_embedding": g("y_embedder.y_embedding"),
            "fc1": lin("y_embedder.y_proj.fc1"),
            "fc2": lin("y_embedder.y_proj.fc2"),
        },
        "final_layer": {"scale_shift_table": g("final_layer.scale_shift_table"), "linear": lin("final_layer.linear")},
    }

    def block(p):
        attn = {
            "qkv": lin(p + "attn.qkv", out_shape=(3, n, d)),
            "proj": lin(p + "attn.proj", in_shape=(n, d)),
        }
        if cfg.qk_norm:
            attn["q_norm"] = {"scale": g(p + "attn.q_norm.weight")}
            attn["k_norm"] = {"scale": g(p + "attn.k_norm.weight")}
        return {
            "scale_shift_table": g(p + "scale_shift_table"),
            "attn": attn,
            "cross_attn": {
                "q_linear": lin(p + "cross_attn.q_linear", out_shape=(n, d)),
                "kv_linear": lin(p + "cross_attn.kv_linear", out_shape=(2, n, d)),
                "proj": lin(p + "cross_attn.proj", in_shape=(n, d)),
            },
            "mlp": {"fc1": lin(p + "mlp.fc1"), "fc2": lin(p + "mlp.fc2")},
        }

    sp = [block(f"spatial_blocks.{i}.") for i in range(cfg.depth)]
    tp = [block(f"temporal_blocks.{i}.") for i in range(cfg.depth)]
    if cfg.scan:
        import jax

        stack = lambda bs: jax.tree.map(lambda *a: np.stack(a), *bs)  # noqa: E731
        params["blocks"] = {"spatial_block": stack(sp), "temporal_block": stack(tp)}
    else:
        for i in range(cfg.depth):
            params[f"spatial_blocks_{i}"] = sp[i]
            params[f"temporal_blocks_{i}"] = tp[i]
    return params


# ------------------------------------------------------------------------------------ VAE 1.2 (OpenSora-VAE-v1.2)
_INDEXED = re.compile(r"^(.*?[a-z])((?:_\d+)+)$")  # "down_blocks_0" -> "down_blocks.0", "block_res_blocks_1_0"


# diffusers' pre-0.14 names of the mid-block attention (`_from_deprecated_attn_block`), accepted too
_DEPRECATED_ATTN = re.compile(r"\.attentions\.(\d+)\.(query|key|value|proj_attn)\.")
_ATTN_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _torch_name(path: tuple[str, ...]) -> str:
    """Our parameter path -> the PyTorch key: list indices become ".i", kernel/scale -> weight."""
    parts = []
    for seg in path[:-1]:
        m = _INDEXED.match(seg)
        parts.append(m.group(1) + m.group(2).replace("_", ".") if m else seg)
    leaf = {"kernel": "weight", "scale": "weight"}.get(path[-1], path[-1])
    return ".".join(parts + [leaf])


def _torch_shape(leaf: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if leaf == "kernel" and len(shape) >= 3:  # conv [*k, in, out] -> [out, in, *k]
        return (shape[-1], shape[-2], *shape[:-2])
    if leaf == "kernel":  # dense [in, out] -> [out, in]
        return tuple(reversed(shape))
    return tuple(shape)


@functools.lru_cache(maxsize=8)
def _vae_layout(cfg) -> dict[str, tuple[tuple[str, ...], tuple[int, ...], tuple[int, ...]]]:
    """torch key -> (our path, our shape, torch shape) for every parameter of `OpenSoraVAE(cfg)`, from
    `jax.eval_shape` (no weights are materialised)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from tora.vae_opensora import OpenSoraVAE

    s = cfg.spatial.spatial_factor
    x = jax.ShapeDtypeStruct((1, 1, s, s, cfg.spatial.in_channels), jnp.float32)
    abstract = jax.eval_shape(lambda: nn.meta.unbox(OpenSoraVAE(cfg).init(jax.random.key(0), jnp.zeros(x.shape))))
    out = {}
    for kp, leaf in jax.tree_util.tree_flatten_with_path(abstract["params"])[0]:
        path = tuple(k.key for k in kp)
        out[_torch_name(path)] = (path, tuple(leaf.shape), _torch_shape(path[-1], tuple(leaf.shape)))
    return out


def opensora_vae_state_dict_shapes(config=None) -> dict[str, tuple[int, ...]]:
    """Every parameter key of an Open-Sora 1.2 VAE (`VideoAutoencoderPipeline`) state dict for `config`
    (default `OpenSoraVAEConfig()`, the released OpenSora-VAE-v1.2) with its PyTorch shape, plus the
    normalisation buffers `scale` and `shift` [1, C, 1, 1, 1]."""
    from tora.vae_opensora import OpenSoraVAEConfig

    cfg = OpenSoraVAEConfig() if config is None else config
    shapes = {k: v[2] for k, v in _vae_layout(cfg).items()}
    c = cfg.latent_channels
    shapes["scale"] = shapes["shift"] = (1, c, 1, 1, 1)
    return shapes


def load_opensora_vae(source: str | os.PathLike | Mapping[str, Any], config=None) -> dict:
    """Parameters of `OpenSoraVAE(config)` (default `OpenSoraVAEConfig()`) from an Open-Sora 1.2 VAE checkpoint
    (hpcai-tech/OpenSora-VAE-v1.2's `model.safetensors`, a torch state dict file, or a mapping name -> tensor).

    Keys keep their PyTorch names: `spatial_vae.module.{encoder,decoder,quant_conv,post_quant_conv}...`
    (diffusers' AutoencoderKL) and `temporal_vae.{encoder,decoder,quant_conv,post_quant_conv}...`; conv weights
    [out, in, *k] become kernels [*k, in, out], linear weights are transposed, GroupNorm weights become
    `scale`; diffusers' deprecated attention names (`query`, `key`, `value`, `proj_attn`, also as [C, C, 1, 1])
    are accepted. The buffers `scale`/`shift`, when present, must equal the config's (else ValueError). Missing,
    unexpected or mis-shaped keys raise ValueError naming them. Returns float32 numpy leaves (no boxes)."""
    from tora.vae_opensora import OpenSoraVAEConfig

    cfg = OpenSoraVAEConfig() if config is None else config
    sd = {_DEPRECATED_ATTN.sub(lambda m: f".attentions.{m.group(1)}.{_ATTN_NAMES[m.group(2)]}.", k): v
          for k, v in read_state_dict(source).items()}
    layout = _vae_layout(cfg)
    buffers = {"scale": cfg.scale, "shift": cfg.shift}
    missing = sorted(k for k in layout if k not in sd)
    extra = sorted(k for k in sd if k not in layout and k not in buffers)
    if missing or extra:
        raise ValueError(
            "the checkpoint does not match an Open-Sora 1.2 VAE of this config: "
            f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''} ({len(missing)}), "
            f"unexpected {extra[:5]}{' ...' if len(extra) > 5 else ''} ({len(extra)})."
        )
    for k, v in layout.items():
        if len(v[2]) == 2 and sd[k].ndim == 4 and sd[k].shape[2:] == (1, 1):
            sd[k] = sd[k][:, :, 0, 0]
    bad = [(k, sd[k].shape, v[2]) for k, v in layout.items() if tuple(sd[k].shape) != v[2]]
    if bad:
        k, got, exp = bad[0]
        raise ValueError(f"checkpoint key {k} has shape {tuple(got)}; this config expects {exp} ({len(bad)} differ).")
    c = cfg.latent_channels
    for name, want in buffers.items():
        if name in sd:
            got = np.broadcast_to(sd[name], (1, c, 1, 1, 1)).reshape(c)
            if not np.allclose(got, np.broadcast_to(np.asarray(want, np.float32), (c,)), atol=1e-6):
                raise ValueError(f"the checkpoint's {name} buffer is {got.tolist()}; the config's {name} is "
                                 f"{list(want)}. Set OpenSoraVAEConfig({name}=...) to the checkpoint's values.")
    params: dict[str, Any] = {}
    for k, (path, shape, _) in layout.items():
        w = sd[k]
        if path[-1] == "kernel":
            w = w.transpose(*range(2, w.ndim), 1, 0) if w.ndim >= 3 else w.T
        node = params
        for seg in path[:-1]:
            node = node.setdefault(seg, {})
        node[path[-1]] = np.ascontiguousarray(w.reshape(shape))
    return params
