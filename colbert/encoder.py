"""Load and save Hugging Face BERT/ColBERT folders, and `Encoder`: tokenise + encode text in batches.

A Hugging Face folder holds config.json, model.safetensors (or pytorch_model.bin) and tokenizer files.
Stanford ColBERT checkpoints (`HF_ColBERT`) prefix the BERT keys with "bert." and add `linear.weight`
[dim, hidden]; plain BERTs (all-MiniLM-L6-v2) have neither, and get a freshly initialised head.

We save in the Stanford ColBERT layout ("bert.*" + "linear.weight" in model.safetensors, config.json with
architectures ["HF_ColBERT"], artifact.metadata, tokenizer files), which transformers' `BertModel`
(prefix stripped), PyLate (`Dense.from_stanford_weights` reads `linear.weight`) and this loader read.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from colbert.bert import BertConfig, BertModel, ColBERTConfig, colbert_project
from colbert.tokenize import ColBERTTokenizer

# ----------------------------------------------------------------------------------------------------
# Weight conversion: Hugging Face state dict <-> our parameter tree.


def hf_to_params(state: dict[str, np.ndarray], config: BertConfig) -> dict:
    """Hugging Face `BertModel` weights (keys with or without "bert.") -> `BertModel` params (numpy f32)."""
    if any(k.startswith("bert.") for k in state):
        state = {k[len("bert.") :]: v for k, v in state.items() if k.startswith("bert.")}
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


def params_to_hf(params: dict, config: BertConfig, prefix: str = "") -> dict[str, np.ndarray]:
    """`BertModel` params -> Hugging Face `BertModel` state dict (numpy f32, contiguous), keys `prefix`+..."""
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
    """A ColBERT encoder: tokenizer + Linen BERT + head, with batched, jitted encoding.

    Attributes:
      config: `ColBERTConfig`.
      module: the Linen `BertModel`; `params` its parameters. `module.apply({"params": params}, ids, mask,
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
        self.module = BertModel(config.bert)
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
        """Read a local Hugging Face folder (BERT or Stanford ColBERT checkpoint).

        `dim` sets the head size when the checkpoint has no `linear.weight` (default 128); `overrides` set
        other `ColBERTConfig` fields (query_maxlen, doc_maxlen, ...), after those in artifact.metadata.
        """
        path = Path(path)
        if not (path / "config.json").exists():
            raise ValueError(f"{path} is not a Hugging Face model folder: it has no config.json.")
        hf = json.loads((path / "config.json").read_text())
        if hf.get("model_type", "bert") != "bert":
            raise ValueError(
                f"Only BERT backbones are supported, {path} holds model_type {hf['model_type']!r}."
            )
        bert_cfg = BertConfig.from_hf(hf)
        state = _read_state_dict(path)
        meta = {}
        if (path / "artifact.metadata").exists():
            meta = json.loads((path / "artifact.metadata").read_text())
        known = {f.name for f in ColBERTConfig.__dataclass_fields__.values()} - {"bert", "dim"}
        kwargs = {k: v for k, v in meta.items() if k in known}
        kwargs.update(overrides)
        if "linear.weight" in state:
            linear = np.asarray(state["linear.weight"], np.float32).T  # [E, dim]
            if dim is not None and dim != linear.shape[1]:
                raise ValueError(f"The checkpoint's head has dim {linear.shape[1]}, but dim={dim} was asked.")
            dim = linear.shape[1]
        else:
            dim = 128 if dim is None else dim
            warnings.warn(
                f"{path} has no ColBERT head (linear.weight); initialising a random [{bert_cfg.hidden_size}, "
                f"{dim}] projection (seed {seed}). Fine-tune it or expect weaker retrieval.",
                stacklevel=2,
            )
            linear = np.asarray(
                nn.initializers.normal(0.02)(jax.random.key(seed), (bert_cfg.hidden_size, dim), jnp.float32)
            )
        config = ColBERTConfig(bert=bert_cfg, dim=dim, **kwargs)
        params = hf_to_params(state, bert_cfg)
        tokenizer = ColBERTTokenizer.from_pretrained(path, config)
        return cls(config, params, linear, tokenizer)

    def save_pretrained(self, path) -> Path:
        """Write a Stanford-ColBERT-layout Hugging Face folder (see the module docstring)."""
        from safetensors.numpy import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        cfg = self.config
        hf = {"architectures": ["HF_ColBERT"], **cfg.bert.to_hf()}
        (path / "config.json").write_text(json.dumps(hf, indent=2))
        state = params_to_hf(jax.device_get(self.params), cfg.bert, prefix="bert.")
        state["linear.weight"] = np.ascontiguousarray(np.asarray(self.linear, np.float32).T)
        save_file(state, str(path / "model.safetensors"))
        meta = {
            "query_token_id": self.tokenizer.query_token_id,
            "doc_token_id": self.tokenizer.doc_token_id,
            "query_token": cfg.query_token,
            "doc_token": cfg.doc_token,
            "query_maxlen": cfg.query_maxlen,
            "doc_maxlen": cfg.doc_maxlen,
            "dim": cfg.dim,
            "mask_punctuation": cfg.mask_punctuation,
            "attend_to_mask_tokens": cfg.attend_to_mask_tokens,
            "similarity": "cosine",
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

    def encode_queries(
        self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = True, output: str = "colbert"
    ) -> np.ndarray:
        """Query token vectors [N, query_maxlen, dim] float32 (all positions are scored, [MASK]s too).

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
