"""Passages streamed through the encoder into an `Index`, in bounded memory (issue 14's colbert pipeline).

    index = colbert.index_passages(encoder, passages)             # any iterable of strings
    source = colbert.tokenize_to_shards(encoder, passages, "tok")  # or: token ids on disk first ...
    index = colbert.index_passages(encoder, source)               # ... streamed through grain

Passages are encoded `chunk` at a time (`Encoder.encode_documents`, or the jitted encoder on token-id
batches read by `jaxzoo.data.make_loader`) and each chunk's vectors go straight into
`Index.build_streaming`, which keeps only the packed codes and residuals: memory holds the compressed index,
the codec's training sample (the first `sample_tokens` vectors) and one chunk of float vectors.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import numpy as np

from colbert.index import Index

__all__ = ["index_passages", "encode_passages", "tokenize_to_shards", "pack_words"]

FIELDS = ("input_ids", "attention_mask", "maxsim_mask")


def tokenize_to_shards(encoder, passages: Iterable[str], directory, *, chunk: int = 4096,
                       rows_per_shard: int = 65536):  # fmt: skip
    """Tokenises passages (ColBERT document tokenisation, padded to doc_maxlen) chunk by chunk into .npy
    shards (`jaxzoo.data.write_array_shards`) with fields input_ids, attention_mask and maxsim_mask
    (int32 [doc_maxlen] per passage). Returns the `jaxzoo.data.ShardedArrays` over the folder."""
    from jaxzoo.data import write_array_shards

    width = encoder.config.doc_maxlen

    def chunks():
        it = iter(passages)
        while texts := list(itertools.islice(it, chunk)):
            ids, attn, keep = encoder.tokenize_documents(texts, pad_to=width)
            yield {"input_ids": ids, "attention_mask": attn, "maxsim_mask": keep}

    return write_array_shards(directory, chunks(), rows_per_shard=rows_per_shard)


def _bucket(length: int, maxlen: int, step: int = 32) -> int:
    return min(maxlen, -(-max(int(length), 1) // step) * step)


def _encode_token_batches(encoder, source, batch_size: int, chunk: int) -> Iterator[list[np.ndarray]]:
    """Encodes a random-access source of tokenised passages (fields FIELDS) in order, through
    `jaxzoo.data.make_loader` (no shuffling, one epoch); yields lists of [n_i, dim] arrays."""
    from jaxzoo.data import make_loader

    missing = [f for f in FIELDS if f not in source[0]] if len(source) else []
    if not isinstance(source[0] if len(source) else {}, dict) or missing:
        raise ValueError(
            f"a token-id source must give rows with fields {FIELDS} (see tokenize_to_shards); "
            f"missing {missing or 'all'}."
        )
    maxlen = encoder.config.doc_maxlen
    loader = make_loader(source, batch_size=batch_size, seed=0, shuffle=False, num_epochs=1,
                         shard_by_process=False, drop_remainder=False)  # fmt: skip
    out = []
    for batch in loader:
        ids, attn, keep = (np.asarray(batch[f]) for f in FIELDS)
        real = len(ids)
        width = _bucket(attn.sum(1).max(), maxlen)
        if real < batch_size:  # one shape per width bucket: pad the last batch
            pad = ((0, batch_size - real), (0, 0))
            ids, attn = np.pad(ids, pad), np.pad(attn, pad, constant_values=1)
        vecs = encoder.encode_token_ids(ids[:, :width], attn[:, :width])[:real]
        out.extend(v[k[:width].astype(bool)] for v, k in zip(vecs, keep))
        if len(out) >= chunk:
            yield out
            out = []
    if out:
        yield out


def encode_passages(encoder, passages, *, batch_size: int = 64, chunk: int = 1024,
                    progress: bool = False) -> Iterator[list[np.ndarray]]:  # fmt: skip
    """Yields the document vectors of `passages` chunk by chunk (lists of float32 [n_i, dim], in order).

    passages: an iterable of strings (encoded with `Encoder.encode_documents`, `chunk` passages at a time),
    or a random-access source of token ids (`len` and `[i]` -> dict with FIELDS, e.g. the
    `jaxzoo.data.ShardedArrays` of `tokenize_to_shards`), read in order through `jaxzoo.data.make_loader`.
    """
    if batch_size < 1 or chunk < 1:
        raise ValueError(f"batch_size and chunk must be >= 1; got {batch_size} and {chunk}.")
    if isinstance(passages, str):
        raise ValueError("passages must be an iterable of strings or a token-id source; got one string.")
    if (
        hasattr(passages, "__getitem__")
        and hasattr(passages, "__len__")
        and not isinstance(passages, list | tuple)
    ):
        yield from _encode_token_batches(encoder, passages, batch_size, chunk)
        return
    it = iter(passages)
    while texts := list(itertools.islice(it, chunk)):
        yield encoder.encode_documents(texts, batch_size=batch_size, progress=progress)


def index_passages(
    encoder,
    passages,
    *,
    params=None,
    batch_size: int = 64,
    chunk: int = 1024,
    codec=None,
    nbits: int = 4,
    num_centroids: int | None = None,
    expected_tokens: int | None = None,
    sample_tokens: int = 1 << 18,
    seed: int = 123,
    progress: bool = True,
) -> Index:
    """Encodes passages (strings, or a token-id source; see `encode_passages`) batch by batch and builds
    the `Index` from the stream (`Index.build_streaming`: the codec trains on the first `sample_tokens`
    vectors unless `codec` is given). params: `ColBERT` params to encode with instead of the encoder's
    (e.g. fine-tuned ones, as `Encoder.with_colbert_params`). Document ids follow the passages' order.
    Equals `Index.build(encoder.encode_documents(all passages), codec=index.codec)` (tested)."""
    if params is not None:
        encoder = encoder.with_colbert_params(params)
    batches = encode_passages(encoder, passages, batch_size=batch_size, chunk=chunk, progress=False)
    return Index.build_streaming(
        batches, codec=codec, nbits=nbits, num_centroids=num_centroids, expected_tokens=expected_tokens,
        sample_tokens=sample_tokens, seed=seed, progress=progress,
    )  # fmt: skip


def pack_words(text: str, words: int) -> list[str]:
    """Greedy packing of a text's paragraphs (split at blank lines) into passages of at most `words`
    words; a long paragraph is cut across passages."""
    if not isinstance(words, int) or words < 1:
        raise ValueError(f"words must be a positive int; got {words!r}")
    out, current = [], []
    for para in text.split("\n\n"):
        tokens = para.split()
        while tokens:
            room = words - len(current)
            current += tokens[:room]
            tokens = tokens[room:]
            if len(current) >= words:
                out.append(" ".join(current))
                current = []
    if current:
        out.append(" ".join(current))
    return out
