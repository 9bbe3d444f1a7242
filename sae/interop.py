"""Reading and writing other libraries' SAE formats.

- SAELens (v6) folder: ``cfg.json`` + ``sae_weights.safetensors`` with W_enc [d_in, d_sae], W_dec [d_sae, d_in],
  b_enc, b_dec, and b_gate/r_mag/b_mag (gated) or threshold (jumprelu). Architectures map
  standard <-> relu, gated, topk, jumprelu; our BatchTopK and Matryoshka SAEs are saved as JumpReLU with
  their threshold (as SAELens saves them for inference). Loading also reads SAELens *training* checkpoints:
  ``batchtopk`` / ``matryoshka_batchtopk`` (threshold = the saved ``topk_threshold``, decoder norms folded
  into the encoder when ``rescale_acts_by_decoder_norm``, as ``process_state_dict_for_saving_inference``),
  ``topk`` with ``rescale_acts_by_decoder_norm`` (folded), and JumpReLU's older ``log_threshold``.
  ``load_saelens(..., return_cfg_json=True)`` also returns the raw cfg.json; give it back to
  ``save_saelens(..., cfg_json=...)`` and the fields we do not use are written unchanged.
- Gemma Scope ``params.npz``: W_enc, b_enc, W_dec, b_dec, threshold (a JumpReLU SAE whose encoder takes x,
  not x - b_dec: SAELens' loader sets ``apply_b_dec_to_input=False``). Saving an SAE that centres its input
  folds the centring into b_enc (b_enc - b_dec W_enc).

Transcribed from jbloomAus/SAELens at commit 91ca16ccd0684e4dd6323cd4f23ded734339ec54 (v6.18.0):
sae_lens/saes/{topk,batchtopk,jumprelu,matryoshka_batchtopk}_sae.py and
sae_lens/loading/pretrained_sae_loaders.py (``gemma_2_sae_huggingface_loader``, ``handle_pre_6_0_config``).
"""

from __future__ import annotations

import json
import pathlib

import jax.numpy as jnp
import numpy as np

from sae.config import THRESHOLD_ARCHITECTURES, SAEConfig

CFG_FILE, WEIGHTS_FILE = "cfg.json", "sae_weights.safetensors"
_TO_SAELENS = {
    "relu": "standard",
    "gated": "gated",
    "topk": "topk",
    "batchtopk": "jumprelu",
    "matryoshka": "jumprelu",
    "jumprelu": "jumprelu",
}
_FROM_SAELENS = {
    "standard": "relu",
    "gated": "gated",
    "topk": "topk",
    "jumprelu": "jumprelu",
    "batchtopk": "batchtopk",
    "matryoshka_batchtopk": "matryoshka",
}


def param_shapes(cfg: SAEConfig) -> dict[str, tuple[int, ...]]:
    """The parameter names and shapes of an SAE with this config."""
    m, d = cfg.d_sae, cfg.d_in
    shapes = {"W_enc": (d, m), "W_dec": (m, d), "b_dec": (d,)}
    if cfg.architecture == "gated":
        shapes.update(b_gate=(m,), r_mag=(m,), b_mag=(m,))
    else:
        shapes["b_enc"] = (m,)
    if cfg.architecture in THRESHOLD_ARCHITECTURES:
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


def fold_norms(params: dict, norms) -> dict:
    """W_enc *= n, b_enc *= n, W_dec /= n (SAELens ``_fold_norm_topk``): the code of z * n with unit rows."""
    n = np.asarray(norms, np.float32)
    out = dict(params)
    out["W_enc"], out["b_enc"] = params["W_enc"] * n, params["b_enc"] * n
    out["W_dec"] = params["W_dec"] / n[:, None]
    return out


def save_saelens(
    params: dict,
    cfg: SAEConfig,
    path,
    *,
    hook_name: str | None = None,
    model_name: str | None = None,
    cfg_json: dict | None = None,
) -> pathlib.Path:
    """Write ``params`` (for raw activations, i.e. as ``sae.train`` returns them) as a SAELens folder.

    ``cfg_json``: a SAELens cfg.json (e.g. from ``load_saelens(..., return_cfg_json=True)``) whose fields we
    do not set are kept; its metadata too, with ``hook_name``/``model_name`` replacing theirs when given."""
    from safetensors.numpy import save_file

    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    weights = check_params(params, cfg)
    if cfg.rescale_by_decoder_norm:  # top-k / threshold on z * ||W_dec,i||: fold, idempotent
        weights = fold_norms(weights, np.linalg.norm(weights["W_dec"], axis=-1))
    arch = _TO_SAELENS[cfg.architecture]
    sl_cfg = dict(cfg_json or {})
    metadata = dict(sl_cfg.get("metadata") or {})
    metadata.setdefault("sae_lens_training_version", None)
    for key, value in (("hook_name", hook_name), ("model_name", model_name)):
        if value is not None or key not in metadata:
            metadata[key] = value
    sl_cfg.update(
        {
            "architecture": arch,
            "d_in": cfg.d_in,
            "d_sae": cfg.d_sae,
            "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
            "normalize_activations": "none",  # our saved weights already have the scale folded in
            "metadata": metadata,
        }
    )
    sl_cfg.setdefault("dtype", "float32")
    sl_cfg.setdefault("device", "cpu")
    sl_cfg.setdefault("reshape_activations", "none")
    if arch == "topk":
        sl_cfg.update(k=cfg.k, rescale_acts_by_decoder_norm=False)
    save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, str(path / WEIGHTS_FILE))
    (path / CFG_FILE).write_text(json.dumps(sl_cfg, indent=2))
    return path


def _integral(value, what: str) -> int:
    if float(value) != int(float(value)):
        raise ValueError(f"{what}={value} is not an integer; our TopK-family SAEs need an integer k.")
    return int(float(value))


def load_saelens(path, *, return_cfg_json: bool = False):
    """(cfg, params) from a SAELens folder (inference or training checkpoint); with ``return_cfg_json``
    (cfg, params, the raw cfg.json dict). ValueError on missing files or keys, mismatched shapes, or
    settings we cannot represent (per-token normalisations, a fine-tuning scaling factor)."""
    from safetensors.numpy import load_file

    path = pathlib.Path(path)
    for name in (CFG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise ValueError(f"{path} is not a SAELens folder: {name} is missing.")
    raw = json.loads((path / CFG_FILE).read_text())
    for key in ("d_in", "d_sae"):
        if key not in raw:
            raise ValueError(f"{path / CFG_FILE} has no {key!r}.")
    arch = raw.get("architecture", "standard")  # pre-6.0 configs have none (handle_pre_6_0_config)
    if arch == "standard" and raw.get("activation_fn", raw.get("activation_fn_str")) == "topk":
        arch, raw = "topk", {**raw, "k": (raw.get("activation_fn_kwargs") or {}).get("k", raw.get("k"))}
    if arch not in _FROM_SAELENS:
        raise ValueError(
            f"SAELens architecture {arch!r} is not supported; expected one of {sorted(_FROM_SAELENS)}."
        )
    norm = raw.get("normalize_activations", "none")
    if norm not in ("none", None, False, "expected_average_only_in"):
        raise ValueError(
            f"normalize_activations={norm!r} (a per-token normalisation) cannot be loaded; only 'none'."
        )
    weights = dict(load_file(str(path / WEIGHTS_FILE)))
    topk_threshold = weights.pop("topk_threshold", None)  # float64 in SAELens; read before the cast
    weights = {k: np.asarray(v, np.float32) for k, v in weights.items()}
    scaling = weights.pop("scaling_factor", None)
    if scaling is not None and not np.allclose(scaling, 1.0):
        raise ValueError(
            f"{path / WEIGHTS_FILE} has a fine-tuning scaling_factor other than 1; not supported."
        )
    d_in, d_sae = int(raw["d_in"]), int(raw["d_sae"])
    ours = _FROM_SAELENS[arch]
    kwargs = {
        "d_in": d_in,
        "d_sae": d_sae,
        "architecture": ours,
        "normalize_activations": False,
        "apply_b_dec_to_input": bool(raw.get("apply_b_dec_to_input", True)),
    }
    if "log_threshold" in weights and "threshold" not in weights:  # older JumpReLU files
        weights["threshold"] = np.exp(weights.pop("log_threshold"))
    # rescale_acts_by_decoder_norm: TopK inference configs default to False, BatchTopK (training-only)
    # configs to True (TopKTrainingSAEConfig)
    rescale = bool(raw.get("rescale_acts_by_decoder_norm", ours in ("batchtopk", "matryoshka")))
    if ours in ("batchtopk", "matryoshka"):
        kwargs["k"] = _integral(raw.get("k", 100), "k")
        if topk_threshold is not None:
            weights["threshold"] = np.full(d_sae, np.asarray(topk_threshold).reshape(-1)[0], np.float32)
        if "threshold" not in weights:
            raise ValueError(
                f"{path / WEIGHTS_FILE}: a {arch} SAE needs 'topk_threshold' (training checkpoint) or "
                f"'threshold'; keys: {sorted(weights)}."
            )
        if ours == "matryoshka":
            kwargs["matryoshka_widths"] = tuple(int(w) for w in raw.get("matryoshka_widths", ()))
    if ours == "topk":
        kwargs["k"] = _integral(raw.get("k", 100), "k")
    if ours in ("topk", "batchtopk", "matryoshka") and not rescale:
        kwargs["unit_norm_decoder"] = True  # top-k on z itself, not on z * ||W_dec,i||
    cfg = SAEConfig(**kwargs)
    params = check_params(weights, cfg, source=str(path / WEIGHTS_FILE))
    if rescale and ours in ("topk", "batchtopk", "matryoshka"):
        params = fold_norms(params, np.linalg.norm(params["W_dec"], axis=-1))
    params = {k: jnp.asarray(v) for k, v in params.items()}
    return (cfg, params, raw) if return_cfg_json else (cfg, params)


def load_gemmascope(path) -> tuple[SAEConfig, dict]:
    """(cfg, params) of a Gemma Scope JumpReLU SAE from its ``params.npz`` (keys W_enc [d, m], b_enc,
    W_dec [m, d], b_dec, threshold; ``w_``-prefixed names accepted as SAELens does). The encoder takes x
    itself (``apply_b_dec_to_input=False``), as SAELens' ``get_gemma_2_config_from_hf``."""
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "params.npz"
    if not path.is_file():
        raise ValueError(f"no Gemma Scope params.npz at {path}.")
    with np.load(path) as data:
        raw = {("W_" + k[2:] if k.startswith("w_") else k): data[k] for k in data.files}
    scaling = raw.pop("scaling_factor", None)
    if scaling is not None and not np.allclose(scaling, 1.0):
        raise ValueError(f"{path} has a fine-tuning scaling_factor other than 1; not supported.")
    if "W_enc" not in raw or np.ndim(raw["W_enc"]) != 2:
        raise ValueError(f"{path} has no 2-D 'W_enc'; keys: {sorted(raw)}.")
    d_in, d_sae = raw["W_enc"].shape
    cfg = SAEConfig.gemmascope(d_in=d_in, d_sae=d_sae)
    params = check_params(raw, cfg, source=str(path))
    return cfg, {k: jnp.asarray(v) for k, v in params.items()}


def save_gemmascope(params: dict, cfg: SAEConfig, path) -> pathlib.Path:
    """Write a JumpReLU (or BatchTopK / Matryoshka) SAE as a Gemma Scope ``params.npz``. Gemma Scope encodes
    x, not x - b_dec: for an SAE with ``apply_b_dec_to_input`` the centring is folded into the encoder bias
    (b_enc - b_dec W_enc), which leaves the pre-activations, and so the latents, unchanged."""
    if cfg.architecture not in THRESHOLD_ARCHITECTURES:
        raise ValueError(
            f"the Gemma Scope layout holds JumpReLU SAEs; got architecture {cfg.architecture!r}."
        )
    path = pathlib.Path(path)
    if path.suffix != ".npz":
        path.mkdir(parents=True, exist_ok=True)
        path = path / "params.npz"
    weights = check_params(params, cfg)
    if cfg.rescale_by_decoder_norm:
        weights = fold_norms(weights, np.linalg.norm(weights["W_dec"], axis=-1))
    if cfg.apply_b_dec_to_input:
        b_enc = weights["b_enc"].astype(np.float64) - weights["b_dec"].astype(np.float64) @ weights["W_enc"]
        weights["b_enc"] = b_enc.astype(np.float32)
    np.savez(path, **weights)
    return path
