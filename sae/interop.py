"""Reading and writing other libraries' SAE formats.

- SAELens (v6) folder: ``cfg.json`` + ``sae_weights.safetensors`` with W_enc [d_in, d_sae], W_dec [d_sae, d_in],
  b_enc, b_dec, and b_gate/r_mag/b_mag (gated) or threshold (jumprelu). Architectures map
  standard <-> relu, gated, topk, jumprelu; our BatchTopK is saved as a JumpReLU with its threshold
  (as SAELens saves BatchTopK for inference).
- Gemma Scope ``params.npz``: W_enc, b_enc, W_dec, b_dec, threshold (a JumpReLU SAE).
"""

from __future__ import annotations

import json
import pathlib

import jax.numpy as jnp
import numpy as np

from sae.config import SAEConfig

CFG_FILE, WEIGHTS_FILE = "cfg.json", "sae_weights.safetensors"
_TO_SAELENS = {
    "relu": "standard",
    "gated": "gated",
    "topk": "topk",
    "batchtopk": "jumprelu",
    "jumprelu": "jumprelu",
}
_FROM_SAELENS = {
    "standard": "relu",
    "gated": "gated",
    "topk": "topk",
    "jumprelu": "jumprelu",
    "batchtopk": "batchtopk",
}


def param_shapes(cfg: SAEConfig) -> dict[str, tuple[int, ...]]:
    """The parameter names and shapes of an SAE with this config."""
    m, d = cfg.d_sae, cfg.d_in
    shapes = {"W_enc": (d, m), "W_dec": (m, d), "b_dec": (d,)}
    if cfg.architecture == "gated":
        shapes.update(b_gate=(m,), r_mag=(m,), b_mag=(m,))
    else:
        shapes["b_enc"] = (m,)
    if cfg.architecture in ("jumprelu", "batchtopk"):
        shapes["threshold"] = (m,)
    return shapes


def check_params(params: dict, cfg: SAEConfig, source: str = "params") -> dict:
    """float32 copies of the expected parameters; ValueError naming the first missing or misshapen key."""
    out = {}
    for name, shape in param_shapes(cfg).items():
        if name not in params:
            raise ValueError(
                f"{source} has no {name!r}; a {cfg.architecture} SAE needs {sorted(param_shapes(cfg))}."
            )
        value = np.asarray(params[name], np.float32)
        if value.shape != shape:
            raise ValueError(
                f"{source}: {name!r} has shape {value.shape}; expected {shape} for d_in={cfg.d_in}, "
                f"d_sae={cfg.d_sae}."
            )
        out[name] = value
    return out


def save_saelens(
    params: dict, cfg: SAEConfig, path, *, hook_name: str | None = None, model_name: str | None = None
) -> pathlib.Path:
    """Write ``params`` (for raw activations, i.e. as ``sae.train`` returns them) as a SAELens folder."""
    from safetensors.numpy import save_file

    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    weights = check_params(params, cfg)
    arch = _TO_SAELENS[cfg.architecture]
    sl_cfg = {
        "architecture": arch,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": "none",  # our saved weights already have the scale folded in
        "reshape_activations": "none",
        "metadata": {"hook_name": hook_name, "model_name": model_name, "sae_lens_training_version": None},
    }
    if arch == "topk":
        sl_cfg.update(k=cfg.k, rescale_acts_by_decoder_norm=False)
    save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, str(path / WEIGHTS_FILE))
    (path / CFG_FILE).write_text(json.dumps(sl_cfg, indent=2))
    return path


def load_saelens(path) -> tuple[SAEConfig, dict]:
    """(cfg, params) from a SAELens folder. ValueError on missing files or keys, mismatched shapes, or
    settings we cannot represent (per-token normalisations)."""
    from safetensors.flax import load_file

    path = pathlib.Path(path)
    for name in (CFG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise ValueError(f"{path} is not a SAELens folder: {name} is missing.")
    raw = json.loads((path / CFG_FILE).read_text())
    for key in ("architecture", "d_in", "d_sae"):
        if key not in raw:
            raise ValueError(f"{path / CFG_FILE} has no {key!r}.")
    arch = raw["architecture"]
    if arch not in _FROM_SAELENS:
        raise ValueError(
            f"SAELens architecture {arch!r} is not supported; expected one of {sorted(_FROM_SAELENS)}."
        )
    norm = raw.get("normalize_activations", "none")
    if norm not in ("none", None, "expected_average_only_in"):
        raise ValueError(
            f"normalize_activations={norm!r} (a per-token normalisation) cannot be loaded; only 'none'."
        )
    d_in, d_sae = int(raw["d_in"]), int(raw["d_sae"])
    kwargs = {
        "d_in": d_in,
        "d_sae": d_sae,
        "architecture": _FROM_SAELENS[arch],
        "normalize_activations": False,
        "apply_b_dec_to_input": bool(raw.get("apply_b_dec_to_input", True)),
    }
    if arch in ("topk", "batchtopk"):
        kwargs["k"] = int(raw.get("k", 100))
    cfg = SAEConfig(**kwargs)
    weights = {
        k: np.asarray(jnp.asarray(v, jnp.float32)) for k, v in load_file(str(path / WEIGHTS_FILE)).items()
    }
    if arch == "batchtopk" and "threshold" not in weights:
        weights["threshold"] = np.zeros(d_sae, np.float32)
    params = check_params(weights, cfg, source=str(path / WEIGHTS_FILE))
    if arch == "topk" and raw.get("rescale_acts_by_decoder_norm", False):
        # top-k ran on z * ||W_dec,i|| with unit-norm rows in decode: fold the norms into the encoder
        n = np.linalg.norm(params["W_dec"], axis=-1)
        params["W_enc"], params["b_enc"] = params["W_enc"] * n, params["b_enc"] * n
        params["W_dec"] = params["W_dec"] / n[:, None]
    return cfg, {k: jnp.asarray(v) for k, v in params.items()}


def load_gemmascope(path) -> tuple[SAEConfig, dict]:
    """(cfg, params) of a Gemma Scope JumpReLU SAE from its ``params.npz`` (keys W_enc [d, m], b_enc,
    W_dec [m, d], b_dec, threshold)."""
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "params.npz"
    if not path.is_file():
        raise ValueError(f"no Gemma Scope params.npz at {path}.")
    with np.load(path) as data:
        raw = {k: data[k] for k in data.files}
    if "W_enc" not in raw or np.ndim(raw["W_enc"]) != 2:
        raise ValueError(f"{path} has no 2-D 'W_enc'; keys: {sorted(raw)}.")
    d_in, d_sae = raw["W_enc"].shape
    cfg = SAEConfig(d_in=d_in, d_sae=d_sae, architecture="jumprelu", normalize_activations=False)
    params = check_params(raw, cfg, source=str(path))
    return cfg, {k: jnp.asarray(v) for k, v in params.items()}


def save_gemmascope(params: dict, cfg: SAEConfig, path) -> pathlib.Path:
    """Write a JumpReLU (or BatchTopK) SAE as a Gemma Scope ``params.npz``."""
    if cfg.architecture not in ("jumprelu", "batchtopk"):
        raise ValueError(
            f"the Gemma Scope layout holds JumpReLU SAEs; got architecture {cfg.architecture!r}."
        )
    path = pathlib.Path(path)
    if path.suffix != ".npz":
        path.mkdir(parents=True, exist_ok=True)
        path = path / "params.npz"
    np.savez(path, **check_params(params, cfg))
    return path
