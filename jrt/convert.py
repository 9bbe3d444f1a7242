"""Checkpoints of the reference PyTorch code (JRT-RNN and Based) <-> `jrt.LM` parameters.

The released checkpoints are state dicts of `GPTLMHeadModel` (HazyResearch/prefix-linear-attention,
`train/src/models/gpt.py`, commit 7490f22; the Hugging Face files prefix every key with "model.", which
`from_pretrained_hf` strips, and carry "*metrics*" entries, which it drops). Module names per layer i:

    transformer.embeddings.word_embeddings.weight   [V, d]        -> embedding (also the tied LM head)
    transformer.layers.i.norm1.weight / norm2.weight [d]          -> layer_i.mixer_norm / mlp_norm .scale
    transformer.layers.i.mlp.fc1.weight              [2h, d]      -> mlp.fc1.kernel [d, 2, h] ((y, gate) halves)
    transformer.layers.i.mlp.fc2.weight              [d, h]       -> mlp.fc2.kernel [h, d]
    BaseConv (conv):   mixer.in_proj.{weight [4d, d], bias}, mixer.conv.conv.weight [2d, 1, K],
                       mixer.out_proj.{weight [d, 2d], bias}       ("conv1" in old keys reads as "conv")
    SWA (swa):         mixer.Wqkv.weight [3 H D, d] ("(three h d)"), mixer.out_proj.weight [d, H D]
                       (mixer.rotary_emb.inv_freq is a buffer and is skipped)
    LA / PLA (la/pla): mixer.proj_q / proj_k.weight [H f, d], mixer.proj_v.weight [H dv, d],
                       PLA: mixer.proj_k_enc / proj_v_enc.weight, mixer.out_proj.weight [d, H dv]
    transformer.ln_f.weight [d] -> final_norm.scale;  lm_head.weight [V, d] (tied: equal to the embedding)

torch Linear stores [out, in]; our kernels are [in, *out] (DenseGeneral), so every matrix is transposed
and reshaped. `from_torch_state_dict` takes numpy arrays or torch tensors (anything `np.asarray` reads).
"""

from __future__ import annotations

import re

import numpy as np

from jrt.config import JRTConfig

__all__ = ["from_torch_state_dict", "to_torch_state_dict"]

_SKIPPED = ("rotary_emb.inv_freq",)


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().float().numpy()
    return np.asarray(x, np.float32)


def _layer_map(cfg: JRTConfig, i: int, mixer: str):
    """[(torch key suffix, our path, torch shape -> ours, ours -> torch)] of layer i."""
    d, h, hd, f = cfg.d_model, cfg.heads, cfg.head_dim, cfg.feature_dim
    inner = cfg.conv_expand * d // 2
    hid = cfg.mlp_hidden

    def lin(*out):  # torch [prod(out), in] <-> ours [in, *out]
        return (lambda w: w.T.reshape(w.shape[1], *out), lambda k: k.reshape(k.shape[0], -1).T)

    def lin_in(*inp):  # torch [out, prod(inp)] <-> ours [*inp, out]
        return (lambda w: w.T.reshape(*inp, w.shape[0]), lambda k: k.reshape(-1, k.shape[-1]).T)

    same = (lambda w: w, lambda k: k)
    pre, ours = f"transformer.layers.{i}.", f"layer_{i}"
    rows = [
        ("norm1.weight", (ours, "mixer_norm", "scale"), same),
        ("norm2.weight", (ours, "mlp_norm", "scale"), same),
        ("mlp.fc1.weight", (ours, "mlp", "fc1", "kernel"), lin(2, hid)),
        ("mlp.fc2.weight", (ours, "mlp", "fc2", "kernel"), lin(d)),
    ]
    if mixer == "conv":
        rows += [
            ("mixer.in_proj.weight", (ours, "conv", "in_proj", "kernel"), lin(2, inner)),
            (
                "mixer.in_proj.bias",
                (ours, "conv", "in_proj", "bias"),
                (lambda b: b.reshape(2, inner), np.ravel),
            ),
            # Conv1d weight [C, 1, K] <-> our depthwise kernel [K, C]
            (
                "mixer.conv.conv.weight",
                (ours, "conv", "conv_kernel"),
                (lambda w: w[:, 0, :].T, lambda k: k.T[:, None, :]),
            ),
            ("mixer.out_proj.weight", (ours, "conv", "out_proj", "kernel"), lin(d)),
            ("mixer.out_proj.bias", (ours, "conv", "out_proj", "bias"), same),
        ]
    elif mixer == "swa":
        rows += [
            ("mixer.Wqkv.weight", (ours, "swa", "Wqkv", "kernel"), lin(3, h, hd)),
            ("mixer.out_proj.weight", (ours, "swa", "out_proj", "kernel"), lin_in(h, hd)),
        ]
    else:
        rows += [
            ("mixer.proj_q.weight", (ours, mixer, "q_proj", "kernel"), lin(h, f)),
            ("mixer.proj_k.weight", (ours, mixer, "k_proj", "kernel"), lin(h, f)),
            ("mixer.proj_v.weight", (ours, mixer, "v_proj", "kernel"), lin(h, hd)),
            ("mixer.out_proj.weight", (ours, mixer, "out_proj", "kernel"), lin_in(h, hd)),
        ]
        if mixer == "pla":
            rows += [
                ("mixer.proj_k_enc.weight", (ours, mixer, "k_enc_proj", "kernel"), lin(h, f)),
                ("mixer.proj_v_enc.weight", (ours, mixer, "v_enc_proj", "kernel"), lin(h, hd)),
            ]
    return [(pre + k, path, fns) for k, path, fns in rows]


def _all_rows(cfg: JRTConfig):
    rows = [("transformer.embeddings.word_embeddings.weight", ("embedding",), (lambda w: w, lambda k: k))]
    for i, mixer in enumerate(cfg.mixers):
        rows += _layer_map(cfg, i, mixer)
    rows.append(("transformer.ln_f.weight", ("final_norm", "scale"), (lambda w: w, lambda k: k)))
    if not cfg.tie_embeddings:
        rows.append(("lm_head.weight", ("lm_head", "kernel"), (lambda w: w.T, lambda k: k.T)))
    return rows


def _clean_keys(state_dict) -> dict:
    """The key clean-up of `from_pretrained_hf` and `load_state_dict` in the reference."""
    out = {}
    for k, v in state_dict.items():
        if "metrics" in k:
            continue
        k = re.sub(r"^model\.", "", k).replace("conv1", "conv")
        out[k] = v
    return out


def from_torch_state_dict(state_dict, cfg: JRTConfig) -> dict:
    """A reference `GPTLMHeadModel` state dict -> `jrt.LM(cfg)` parameters (float32 numpy arrays).

    ValueError when a key the config needs is missing, a key is left over (a bias the model does not
    have, another layer mix), a shape differs, or a tied head differs from the embedding.
    """
    sd = _clean_keys(state_dict)
    params: dict = {}
    missing, bad = [], []
    used = set()
    for key, path, (to_ours, _) in _all_rows(cfg):
        if key not in sd:
            missing.append(key)
            continue
        used.add(key)
        w = _np(sd[key])
        try:
            value = to_ours(w)
        except ValueError:
            bad.append(f"{key} {tuple(w.shape)}")
            continue
        node = params
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = value
    if missing:
        raise ValueError(
            f"The state dict lacks {len(missing)} keys this config needs (mixers {cfg.mixers}), e.g. "
            f"{missing[:3]}."
        )
    if bad:
        raise ValueError(f"Shapes do not match the config: {bad[:3]}.")
    if cfg.tie_embeddings and "lm_head.weight" in sd:
        used.add("lm_head.weight")
        if not np.array_equal(_np(sd["lm_head.weight"]), params["embedding"]):
            raise ValueError("tie_embeddings is True, but lm_head.weight differs from the embedding.")
    extra = sorted(k for k in sd if k not in used and not k.endswith(_SKIPPED))
    if extra:
        raise ValueError(
            f"The state dict has {len(extra)} keys this config has no parameter for, e.g. {extra[:3]} "
            "(biases on SWA or MLP layers, or another layer mix)."
        )
    shapes = _expected_shapes(cfg)
    for key, path, _ in _all_rows(cfg):
        got = _get(params, path).shape
        if got != shapes[path]:
            bad.append(f"{key}: gives {got}, the config needs {shapes[path]}")
    if bad:
        raise ValueError(f"Shapes do not match the config: {bad[:3]}.")
    return params


def to_torch_state_dict(params, cfg: JRTConfig) -> dict[str, np.ndarray]:
    """`jrt.LM(cfg)` parameters -> a reference `GPTLMHeadModel` state dict (numpy float32; wrap each in
    `torch.from_numpy` to load it with `load_state_dict`). The tied head is written as lm_head.weight."""
    out = {}
    for key, path, (_, to_torch) in _all_rows(cfg):
        out[key] = np.ascontiguousarray(to_torch(np.asarray(_get(params, path), np.float32)))
    if cfg.tie_embeddings:
        out["lm_head.weight"] = out["transformer.embeddings.word_embeddings.weight"]
    return out


def _get(tree, path):
    for p in path:
        tree = tree[p]
    return tree


def _expected_shapes(cfg: JRTConfig):
    import jax

    from jrt.model import init_params

    shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    return {path: tuple(_get(shapes, path).shape) for _, path, _ in _all_rows(cfg)}
