"""Load and save Hugging Face BERT/ColBERT folders, and `Encoder`: tokenise + encode text in batches.

`Encoder.from_pretrained` reads three layouts (backbones, chosen by config.json's `model_type`: BERT,
RoBERTa, XLM-RoBERTa, and ModernBERT (`colbert.modernbert`, e.g. lightonai/GTE-ModernColBERT-v1)):

- **Stanford ColBERT** (`HF_ColBERT`): config.json, model.safetensors or pytorch_model.bin with the backbone
  keys prefixed "bert." (or "roberta.", "model." for ModernBERT) and the head `linear.weight` [dim, hidden],
  and `artifact.metadata`, ColBERT's config as JSON (stanford-futuredata/ColBERT `infra/config/settings.py`,
  `base_config.py`). The markers are stored as vocabulary tokens, `query_token_id: "[unused0]"`,
  `doc_token_id: "[unused1]"`, with `query_token: "[Q]"` / `doc_token: "[D]"` only their display names; we
  read `*_token_id` (an integer there, as older jaxzoo folders wrote, is looked up in the vocabulary) and
  `query_maxlen`, `doc_maxlen`, `dim`, `mask_punctuation`, `attend_to_mask_tokens`.
- **PyLate** (sentence-transformers): modules.json naming a Transformer module (the backbone folder) and
  Dense modules (`1_Dense/config.json` + weights `linear.weight` [out, in], optional `residual.weight`),
  chained into one head; `config_sentence_transformers.json` gives `query_prefix` / `document_prefix` (the
  marker tokens, "[Q] " / "[D] " by default, added to the tokenizer), `query_length`, `document_length`,
  `attend_to_expansion_tokens`, `skiplist_words`, `do_query_expansion` (lightonai/pylate
  `models/colbert.py`, `models/Dense.py`).
- a plain backbone (all-MiniLM-L6-v2): no head, so a freshly initialised one, with a warning.

We save in the Stanford ColBERT layout (backbone keys "bert.*", "roberta.*" or "model.*" + "linear.weight"
in model.safetensors, config.json with architectures ["HF_ColBERT"], artifact.metadata as ColBERT writes it,
tokenizer files), which transformers (prefix stripped), ColBERT (`Checkpoint`), PyLate
(`Dense.from_stanford_weights` + the metadata) and this loader read.
"""

from __future__ import annotations

import json
import math
import string
import warnings
from collections.abc import Sequence
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from colbert import modernbert
from colbert.bert import BertConfig, ColBERTConfig, backbone_from_hf, backbone_module, colbert_project
from colbert.tokenize import ColBERTTokenizer, load_tokenizer

# Prefixes of the backbone keys in Stanford `HF_ColBERT` checkpoints (the backbone's base_model_prefix).
_PREFIXES = {
    "bert": "bert.",
    "roberta": "roberta.",
    "xlm-roberta": "roberta.",
    "modernbert": modernbert.PREFIX,
}

# ----------------------------------------------------------------------------------------------------
# Weight conversion: Hugging Face state dict <-> our parameter tree.


def hf_to_params(state: dict[str, np.ndarray], config: BertConfig | modernbert.ModernBertConfig) -> dict:
    """Hugging Face `BertModel` weights (keys with or without "bert.") -> `BertModel` params (numpy f32).

    With a `ModernBertConfig`: `colbert.modernbert.hf_to_params` (ModernBERT keys, with or without "model.").
    """
    if isinstance(config, modernbert.ModernBertConfig):
        return modernbert.hf_to_params(state, config)
    for prefix in ("bert.", "roberta."):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            break
    e, h, dh = config.hidden_size, config.num_heads, config.head_dim

    def get(key, shape=None):
        if key not in state:
            raise ValueError(f"The checkpoint has no weight {key!r}; is it a BERT with absolute positions?")
        value = np.asarray(state[key], dtype=np.float32)
        if shape is not None and value.shape != tuple(shape):
            raise ValueError(f"Weight {key!r} has shape {value.shape}, the config expects {tuple(shape)}.")
        return value

    def ln(prefix):
        # Very old checkpoints call LayerNorm parameters gamma/beta.
        if f"{prefix}.weight" not in state and f"{prefix}.gamma" in state:
            return {"scale": get(f"{prefix}.gamma", (e,)), "bias": get(f"{prefix}.beta", (e,))}
        return {"scale": get(f"{prefix}.weight", (e,)), "bias": get(f"{prefix}.bias", (e,))}

    params = {
        "embed": {
            "word_embeddings": get("embeddings.word_embeddings.weight", (config.vocab_size, e)),
            "position_embeddings": get(
                "embeddings.position_embeddings.weight", (config.max_position_embeddings, e)
            ),
            "token_type_embeddings": get(
                "embeddings.token_type_embeddings.weight", (config.type_vocab_size, e)
            ),
            "ln": ln("embeddings.LayerNorm"),
        }
    }
    for i in range(config.num_layers):
        p = f"encoder.layer.{i}"
        layer = {}
        for name in ("query", "key", "value"):
            w = get(f"{p}.attention.self.{name}.weight", (e, e))  # [out, in]
            b = get(f"{p}.attention.self.{name}.bias", (e,))
            layer[name] = {"kernel": w.T.reshape(e, h, dh), "bias": b.reshape(h, dh)}
        w = get(f"{p}.attention.output.dense.weight", (e, e))
        layer["out"] = {
            "kernel": w.T.reshape(h, dh, e),
            "bias": get(f"{p}.attention.output.dense.bias", (e,)),
        }
        layer["attn_ln"] = ln(f"{p}.attention.output.LayerNorm")
        f = config.intermediate_size
        layer["mlp_in"] = {
            "kernel": get(f"{p}.intermediate.dense.weight", (f, e)).T,
            "bias": get(f"{p}.intermediate.dense.bias", (f,)),
        }
        layer["mlp_out"] = {
            "kernel": get(f"{p}.output.dense.weight", (e, f)).T,
            "bias": get(f"{p}.output.dense.bias", (e,)),
        }
        layer["mlp_ln"] = ln(f"{p}.output.LayerNorm")
        params[f"layer_{i}"] = layer
    return params


def params_to_hf(
    params: dict, config: BertConfig | modernbert.ModernBertConfig, prefix: str = ""
) -> dict[str, np.ndarray]:
    """`BertModel` params -> Hugging Face `BertModel` state dict (numpy f32, contiguous), keys `prefix`+...

    With a `ModernBertConfig`: `colbert.modernbert.params_to_hf` (transformers' ModernBertModel keys).
    """
    if isinstance(config, modernbert.ModernBertConfig):
        return modernbert.params_to_hf(params, config, prefix)
    e = config.hidden_size
    a = lambda x: np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    emb = params["embed"]
    out = {
        "embeddings.word_embeddings.weight": a(emb["word_embeddings"]),
        "embeddings.position_embeddings.weight": a(emb["position_embeddings"]),
        "embeddings.token_type_embeddings.weight": a(emb["token_type_embeddings"]),
        "embeddings.LayerNorm.weight": a(emb["ln"]["scale"]),
        "embeddings.LayerNorm.bias": a(emb["ln"]["bias"]),
    }
    for i in range(config.num_layers):
        layer, p = params[f"layer_{i}"], f"encoder.layer.{i}"
        for name in ("query", "key", "value"):
            out[f"{p}.attention.self.{name}.weight"] = a(np.asarray(layer[name]["kernel"]).reshape(e, e).T)
            out[f"{p}.attention.self.{name}.bias"] = a(np.asarray(layer[name]["bias"]).reshape(e))
        out[f"{p}.attention.output.dense.weight"] = a(np.asarray(layer["out"]["kernel"]).reshape(e, e).T)
        out[f"{p}.attention.output.dense.bias"] = a(layer["out"]["bias"])
        out[f"{p}.attention.output.LayerNorm.weight"] = a(layer["attn_ln"]["scale"])
        out[f"{p}.attention.output.LayerNorm.bias"] = a(layer["attn_ln"]["bias"])
        out[f"{p}.intermediate.dense.weight"] = a(np.asarray(layer["mlp_in"]["kernel"]).T)
        out[f"{p}.intermediate.dense.bias"] = a(layer["mlp_in"]["bias"])
        out[f"{p}.output.dense.weight"] = a(np.asarray(layer["mlp_out"]["kernel"]).T)
        out[f"{p}.output.dense.bias"] = a(layer["mlp_out"]["bias"])
        out[f"{p}.output.LayerNorm.weight"] = a(layer["mlp_ln"]["scale"])
        out[f"{p}.output.LayerNorm.bias"] = a(layer["mlp_ln"]["bias"])
    return {prefix + k: v for k, v in out.items()}


def _read_json(path: Path) -> dict:
    """A JSON object from a file, or a ValueError naming the file."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(value).__name__}.")
    return value


def _field(source: Path, data: dict, key: str, kind, default=None):
    """data[key] checked to be of `kind` (bool is not an int), or `default` when absent / null."""
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ValueError(f"{source}: field {key!r} must be {name}, got {value!r}.")
    return value


def read_stanford_metadata(path: Path, tokenizer) -> dict:
    """ColBERTConfig fields from a Stanford `artifact.metadata` (see the module docstring).

    tokenizer: the raw `tokenizers.Tokenizer`, to turn integer marker ids into their tokens.
    """
    meta = _read_json(path)
    if isinstance(meta.get("config"), dict):  # ColBERT's `from_path` accepts a {"config": {...}} wrapper
        meta = meta["config"]
    out = {}
    for field, key in (("query_token", "query_token_id"), ("doc_token", "doc_token_id")):
        value = _field(path, meta, key, (str, int))
        if isinstance(value, int) and not isinstance(value, bool):
            token = tokenizer.id_to_token(value)
            if token is None:
                raise ValueError(
                    f"{path}: field {key!r} = {value} is not an id of the tokenizer's vocabulary."
                )
            value = token
        if value is not None:
            out[field] = value
    for key in ("query_maxlen", "doc_maxlen", "dim"):
        value = _field(path, meta, key, int)
        if value is not None:
            if value < 1:
                raise ValueError(f"{path}: field {key!r} must be a positive int, got {value}.")
            out[key] = value
    for key in ("mask_punctuation", "attend_to_mask_tokens"):
        value = _field(path, meta, key, bool)
        if value is not None:
            out[key] = value
    similarity = _field(path, meta, "similarity", str, "cosine")
    if similarity != "cosine":
        raise ValueError(f"{path}: only similarity 'cosine' is supported, got {similarity!r}.")
    return out


def read_pylate_config(path: Path) -> dict:
    """ColBERTConfig fields from PyLate's `config_sentence_transformers.json` (see the module docstring)."""
    cfg = _read_json(path)
    out = {}
    for field, key in (("query_token", "query_prefix"), ("doc_token", "document_prefix")):
        value = _field(path, cfg, key, str)
        if value is not None:
            out[field] = value
    for field, key in (("query_maxlen", "query_length"), ("doc_maxlen", "document_length")):
        value = _field(path, cfg, key, int)
        if value is not None:
            out[field] = value
    attend = _field(path, cfg, "attend_to_expansion_tokens", bool)
    if attend is not None:
        out["attend_to_mask_tokens"] = attend
    if _field(path, cfg, "do_query_expansion", bool, True) is False:
        warnings.warn(
            f"{path} sets do_query_expansion false; this encoder always pads queries with [MASK] and scores "
            "every query position (ColBERT's query augmentation).",
            stacklevel=3,
        )
    skip = _field(path, cfg, "skiplist_words", list)
    if skip is not None:
        if not skip:
            out["mask_punctuation"] = False
        elif sorted(skip) != sorted(string.punctuation):
            warnings.warn(
                f"{path} lists skiplist_words other than string.punctuation; punctuation is masked instead.",
                stacklevel=3,
            )
    return out


def read_dense_modules(path: Path, modules: list[dict]) -> np.ndarray | None:
    """The chained PyLate/sentence-transformers Dense modules as one head kernel [E, dim], or None if none.

    Each module maps x -> act(x W^T + b) (+ x R^T with `use_residual`); with the Identity activation and no
    bias the chain is linear, so its kernels multiply into one. Other modules (Pooling, Normalize) are
    skipped, as PyLate does.
    """
    kernel = None
    for module in modules:
        if not str(module.get("type", "")).endswith("Dense"):
            continue
        folder = path / str(module.get("path", ""))
        cfg_file = folder / "config.json"
        if not cfg_file.exists():
            raise ValueError(f"The Dense module {folder} has no config.json.")
        cfg = _read_json(cfg_file)
        n_in, n_out = _field(cfg_file, cfg, "in_features", int), _field(cfg_file, cfg, "out_features", int)
        act = _field(cfg_file, cfg, "activation_function", str, "torch.nn.modules.linear.Identity")
        if not act.endswith("Identity"):
            raise ValueError(
                f"{cfg_file}: only the Identity activation is supported in a ColBERT head, got {act!r}."
            )
        state = _read_state_dict(folder)
        if "linear.weight" not in state:
            raise ValueError(f"The Dense module {folder} has no weight 'linear.weight'.")
        w = np.asarray(state["linear.weight"], np.float64)  # [out, in]
        if w.shape != (n_out, n_in):
            raise ValueError(
                f"{folder}: linear.weight has shape {w.shape}, its config.json says {(n_out, n_in)}."
            )
        if _field(cfg_file, cfg, "bias", bool, True) and "linear.bias" in state:
            if np.any(np.asarray(state["linear.bias"]) != 0):
                raise ValueError(
                    f"{folder}: a Dense bias is not supported in a ColBERT head (it is nonzero)."
                )
        k = w.T  # [in, out]
        if _field(cfg_file, cfg, "use_residual", bool, False):
            k = k + (np.asarray(state["residual.weight"], np.float64).T if n_in != n_out else np.eye(n_in))
        if kernel is not None and kernel.shape[1] != k.shape[0]:
            raise ValueError(
                f"{folder}: in_features {k.shape[0]} does not follow the previous Dense's output."
            )
        kernel = k if kernel is None else kernel @ k
    return None if kernel is None else kernel.astype(np.float32)


def _read_state_dict(path: Path) -> dict[str, np.ndarray]:
    if (path / "model.safetensors").exists():
        from safetensors.numpy import load_file

        return load_file(str(path / "model.safetensors"))
    if (path / "pytorch_model.bin").exists():
        try:
            import torch
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ValueError(f"{path}/pytorch_model.bin needs torch to read; install it or convert") from err
        state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
        return {k: v.float().numpy() for k, v in state.items()}
    raise ValueError(f"{path} holds neither model.safetensors nor pytorch_model.bin.")


# ----------------------------------------------------------------------------------------------------
# The encoder.


def _buckets(maxlen: int, step: int = 32) -> tuple[int, ...]:
    """Padded lengths documents are rounded up to: multiples of `step`, capped at maxlen."""
    return tuple(sorted({min(maxlen, step * k) for k in range(1, math.ceil(maxlen / step) + 1)}))


class Encoder:
    """A ColBERT encoder: tokenizer + Linen backbone (BERT or ModernBERT) + head, batched, jitted encoding.

    Attributes:
      config: `ColBERTConfig`.
      module: the Linen `BertModel` (`ModernBertModel` for a ModernBERT backbone); `params` its parameters.
        `module.apply({"params": params}, ids, mask,
        mutable=["intermediates"])` returns (hidden [B, L, E], {"intermediates": {"embeddings": ...,
        "layer_{i}": {"resid_post": ...}}}).
      linear: the ColBERT head kernel [E, dim].
      tokenizer: `ColBERTTokenizer`.
      colbert / colbert_params: the `ColBERT` module and its params {"bert": params, "linear": {...}},
        the tree training works on (`with_colbert_params` puts trained params back).
    """

    def __init__(self, config: ColBERTConfig, params: dict, linear: np.ndarray, tokenizer: ColBERTTokenizer):
        from colbert.bert import ColBERT

        if tuple(np.shape(linear)) != (config.bert.hidden_size, config.dim):
            raise ValueError(
                f"The head kernel must be [hidden, dim] = {(config.bert.hidden_size, config.dim)}, "
                f"got {tuple(np.shape(linear))}."
            )
        self.config = config
        self.module = backbone_module(config.bert)
        self.colbert = ColBERT(config)
        self.params = jax.tree.map(jnp.asarray, params)
        self.linear = jnp.asarray(linear)
        self.tokenizer = tokenizer
        self._hidden = jax.jit(lambda p, ids, m, t: self.module.apply({"params": p}, ids, m, t))
        self._encode = jax.jit(
            lambda p, w, ids, m: colbert_project(
                self.module.apply({"params": p}, ids, m).astype(jnp.float32), w
            )
        )
        self._mean = jax.jit(lambda p, ids, m: _mean_pool(self.module.apply({"params": p}, ids, m), m))

    # -- construction ---------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path, *, dim: int | None = None, seed: int = 0, **overrides) -> Encoder:
        """Read a local Stanford ColBERT, PyLate or plain backbone folder (see the module docstring).

        `dim` sets the head size when the checkpoint has no head (default 128); `overrides` set other
        `ColBERTConfig` fields (query_maxlen, doc_maxlen, ...), after those the folder's metadata gives.
        """
        path = Path(path)
        if not path.is_dir():
            raise ValueError(f"{path} is not a folder; expected a Hugging Face / PyLate model folder.")
        settings, linear, backbone = {}, None, path
        if (path / "modules.json").exists():  # PyLate / sentence-transformers
            modules = json.loads((path / "modules.json").read_text())
            if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
                raise ValueError(f"{path}/modules.json must be a list of module entries.")
            transformer = [m for m in modules if str(m.get("type", "")).endswith("Transformer")]
            if transformer:
                backbone = path / str(transformer[0].get("path", ""))
            linear = read_dense_modules(path, modules)
            if (path / "config_sentence_transformers.json").exists():
                settings.update(read_pylate_config(path / "config_sentence_transformers.json"))
        if not (backbone / "config.json").exists():
            raise ValueError(f"{backbone} is not a Hugging Face model folder: it has no config.json.")
        hf = _read_json(backbone / "config.json")
        bert_cfg = backbone_from_hf(hf)
        state = _read_state_dict(backbone)
        raw_tokenizer = load_tokenizer(backbone if (backbone / "tokenizer.json").exists() else path)
        meta_dim = None
        if (path / "artifact.metadata").exists():  # Stanford ColBERT
            meta = read_stanford_metadata(path / "artifact.metadata", raw_tokenizer)
            meta_dim = meta.pop("dim", None)
            settings.update(meta)
        if linear is None and "linear.weight" in state:
            linear = np.asarray(state["linear.weight"], np.float32).T  # [E, dim]
        if linear is not None:
            if meta_dim is not None and meta_dim != linear.shape[1]:
                raise ValueError(
                    f"{path}/artifact.metadata: field 'dim' is {meta_dim}, but the head has {linear.shape[1]} "
                    "outputs."
                )
            if dim is not None and dim != linear.shape[1]:
                raise ValueError(f"The checkpoint's head has dim {linear.shape[1]}, but dim={dim} was asked.")
            if linear.shape[0] != bert_cfg.hidden_size:
                raise ValueError(
                    f"The checkpoint's head reads {linear.shape[0]} features, the backbone has width "
                    f"{bert_cfg.hidden_size}."
                )
            dim = linear.shape[1]
        else:
            dim = (meta_dim or 128) if dim is None else dim
            warnings.warn(
                f"{path} has no ColBERT head (linear.weight); initialising a random [{bert_cfg.hidden_size}, "
                f"{dim}] projection (seed {seed}). Fine-tune it or expect weaker retrieval.",
                stacklevel=2,
            )
            linear = np.asarray(
                nn.initializers.normal(0.02)(jax.random.key(seed), (bert_cfg.hidden_size, dim), jnp.float32)
            )
        settings.update(overrides)
        config = ColBERTConfig(bert=bert_cfg, dim=dim, **settings)
        params = hf_to_params(state, bert_cfg)
        tokenizer = ColBERTTokenizer(raw_tokenizer, config, source=backbone)
        return cls(config, params, linear, tokenizer)

    def save_pretrained(self, path) -> Path:
        """Write a Stanford-ColBERT-layout Hugging Face folder (see the module docstring)."""
        from safetensors.numpy import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        cfg = self.config
        hf = {"architectures": ["HF_ColBERT"], **cfg.bert.to_hf()}
        (path / "config.json").write_text(json.dumps(hf, indent=2))
        prefix = _PREFIXES[cfg.bert.model_type]
        state = params_to_hf(jax.device_get(self.params), cfg.bert, prefix=prefix)
        state["linear.weight"] = np.ascontiguousarray(np.asarray(self.linear, np.float32).T)
        save_file(state, str(path / "model.safetensors"))
        # As ColBERT's `save_for_checkpoint`: the markers as vocabulary tokens, "[Q]"/"[D]" display names.
        meta = {
            "query_token_id": cfg.query_token,
            "doc_token_id": cfg.doc_token,
            "query_token": "[Q]",
            "doc_token": "[D]",
            "query_maxlen": cfg.query_maxlen,
            "doc_maxlen": cfg.doc_maxlen,
            "dim": cfg.dim,
            "mask_punctuation": cfg.mask_punctuation,
            "attend_to_mask_tokens": cfg.attend_to_mask_tokens,
            "similarity": "cosine",
            "interaction": "colbert",
        }
        (path / "artifact.metadata").write_text(json.dumps(meta, indent=2))
        self.tokenizer.save(path)
        return path

    @property
    def colbert_params(self) -> dict:
        """The `ColBERT` module's params: {"bert": ..., "linear": {"kernel": [E, dim]}}."""
        return {"bert": self.params, "linear": {"kernel": self.linear}}

    def with_colbert_params(self, colbert_params: dict) -> Encoder:
        """A new Encoder with these (e.g. fine-tuned) `ColBERT` params."""
        return type(self)(
            self.config, colbert_params["bert"], colbert_params["linear"]["kernel"], self.tokenizer
        )

    # -- tokenisation ---------------------------------------------------------------------------------

    def tokenize_queries(self, texts: Sequence[str]):
        """(ids, attention_mask) int32 numpy [N, query_maxlen]; see `ColBERTTokenizer.queries`."""
        return self.tokenizer.queries(texts)

    def tokenize_documents(self, texts: Sequence[str], pad_to: int | None = None):
        """(ids, attention_mask, maxsim_mask) int32 numpy [N, L]; see `ColBERTTokenizer.documents`."""
        return self.tokenizer.documents(texts, pad_to=pad_to)

    # -- encoding -------------------------------------------------------------------------------------

    def bert_hidden_states(self, input_ids, attention_mask, token_type_ids=None) -> jax.Array:
        """The BERT's last hidden state [B, L, E] (Hugging Face's `last_hidden_state`)."""
        input_ids = np.asarray(input_ids)
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {input_ids.shape}.")
        if token_type_ids is None:
            token_type_ids = np.zeros_like(input_ids)
        return self._hidden(self.params, input_ids, np.asarray(attention_mask), np.asarray(token_type_ids))

    def _batched(self, fn, ids, mask, batch_size, desc, progress):
        """Run fn(ids_b, mask_b) over fixed-size batches (the last one padded), so one compile per shape."""
        outs = []
        n = len(ids)
        for start in tqdm(range(0, n, batch_size), desc=desc, disable=not progress or n <= batch_size):
            b_ids, b_mask = ids[start : start + batch_size], mask[start : start + batch_size]
            real = len(b_ids)
            if real < batch_size:
                pad = batch_size - real
                b_ids = np.concatenate([b_ids, np.zeros((pad, ids.shape[1]), ids.dtype)])
                b_mask = np.concatenate([b_mask, np.ones((pad, ids.shape[1]), mask.dtype)])
            outs.append(np.asarray(fn(b_ids, b_mask))[:real])
        return outs

    def _fn(self, output: str):
        if output == "colbert":
            return lambda i, m: self._encode(self.params, self.linear, i, m)
        if output == "hidden":
            return lambda i, m: self._hidden(self.params, i, m, np.zeros_like(i))
        raise ValueError(
            f"output must be 'colbert' (projected, normalised) or 'hidden' (BERT), got {output!r}."
        )

    def encode_token_ids(self, ids, attention_mask, *, output: str = "colbert") -> np.ndarray:
        """Vectors of already tokenised rows: ids and attention_mask int [B, L] -> float32 [B, L, dim] (every
        position, normalised; `output="hidden"`: the backbone's last hidden states [B, L, E]). For token
        ids streamed from disk (`colbert.tokenize_to_shards`); keep the MaxSim mask's positions yourself.
        Each new (B, L) compiles once: pad batches to a few fixed widths."""
        ids, mask = np.asarray(ids), np.asarray(attention_mask)
        for name, a in (("ids", ids), ("attention_mask", mask)):
            if a.ndim != 2 or not np.issubdtype(a.dtype, np.integer):
                raise ValueError(f"{name} must be an integer array [batch, length]; got {a.dtype} {a.shape}.")
        if ids.shape != mask.shape:
            raise ValueError(f"ids {ids.shape} and attention_mask {mask.shape} must have the same shape.")
        vocab = self.config.bert.vocab_size
        if ids.size and (ids.min() < 0 or ids.max() >= vocab):
            raise ValueError(f"token ids must be in [0, {vocab}); got range [{ids.min()}, {ids.max()}].")
        return np.asarray(self._fn(output)(ids.astype(np.int32), mask.astype(np.int32)))

    def encode_queries(
        self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = True, output: str = "colbert"
    ) -> np.ndarray:
        """Query token vectors [N, query_maxlen, dim] float32 (all positions are scored, [MASK]s too).

        With a head not trained for query expansion (a plain backbone such as MiniLM), pass the attention
        mask `self.tokenize_queries(texts)[1]` as q_mask to `Index.search` / `maxsim` (see `Index.search`).

        output="hidden" returns the BERT's last hidden states [N, query_maxlen, E] instead (e.g. to train
        the head on a frozen BERT: `colbert_project(hidden, kernel)` gives the vectors).
        """
        texts = _check_texts(texts)
        fn = self._fn(output)
        ids, mask = self.tokenize_queries(texts)
        batch_size = max(1, min(batch_size, len(texts)))
        outs = self._batched(fn, ids, mask, batch_size, "encode queries", progress)
        width = self.config.dim if output == "colbert" else self.config.bert.hidden_size
        return np.concatenate(outs) if outs else np.zeros((0, self.config.query_maxlen, width), np.float32)

    def encode_documents(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 64,
        progress: bool = True,
        bucket: int = 32,
        output: str = "colbert",
    ) -> list[np.ndarray]:
        """Document token vectors: a list of N float32 arrays [n_i, dim], one per text, holding only the
        tokens kept by the MaxSim mask (no padding; no punctuation when `mask_punctuation`).

        Texts are sorted by length and padded to a multiple of `bucket` tokens, so the jitted encoder
        compiles once per bucket, not once per batch. Pad them with `colbert.pad_documents`.
        output="hidden": the BERT's last hidden states of the same tokens, [n_i, E].
        """
        texts = _check_texts(texts)
        fn = self._fn(output)
        ids, attn, keep = self.tokenize_documents(texts)
        lengths = attn.sum(1)
        order = np.argsort(-lengths, kind="stable")
        buckets = _buckets(ids.shape[1], bucket) if len(texts) else ()
        result: list[np.ndarray | None] = [None] * len(texts)
        batch_size = max(1, min(batch_size, len(texts)))
        bar = tqdm(
            total=len(texts), desc="encode documents", disable=not progress or len(texts) <= batch_size
        )
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            width = next(b for b in buckets if b >= lengths[rows].max())
            (vecs,) = self._batched(fn, ids[rows, :width], attn[rows, :width], batch_size, "", False)
            for r, v in zip(rows, vecs):
                result[r] = v[keep[r, :width].astype(bool)]
            bar.update(len(rows))
        bar.close()
        return result  # type: ignore[return-value]

    def encode_mean(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = True) -> np.ndarray:
        """Single-vector baseline: mean of the BERT's last hidden states over real tokens, L2-normalised,
        as sentence-transformers does for all-MiniLM-L6-v2 (plain [CLS] ... [SEP], no [D] marker). [N, E]."""
        texts = _check_texts(texts)
        ids, mask = self.tokenizer.plain(texts, self.config.doc_maxlen)
        order = np.argsort(-mask.sum(1), kind="stable")
        out = np.zeros((len(texts), self.config.bert.hidden_size), np.float32)
        batch_size = max(1, min(batch_size, len(texts)))
        buckets = _buckets(ids.shape[1])
        bar = tqdm(total=len(texts), desc="encode mean", disable=not progress or len(texts) <= batch_size)
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            width = next(b for b in buckets if b >= mask[rows].sum(1).max())
            fn = lambda i, m: self._mean(self.params, i, m)
            (vecs,) = self._batched(fn, ids[rows, :width], mask[rows, :width], batch_size, "", False)
            out[rows] = vecs
            bar.update(len(rows))
        bar.close()
        return out


def _mean_pool(hidden, mask):
    m = mask[..., None].astype(jnp.float32)
    pooled = (hidden.astype(jnp.float32) * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)
    return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str):
        raise ValueError("Expected a list of strings, got a single string; wrap it in a list.")
    texts = list(texts)
    for t in texts:
        if not isinstance(t, str):
            raise ValueError(f"Expected a list of strings, got an element of type {type(t).__name__}.")
    return texts
