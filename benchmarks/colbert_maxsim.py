"""ColBERT scoring and retrieval speed: our jitted MaxSim against PyTorch (the einsum formulation that pylate
uses) and maxsim-cpu; binary and Hamming MaxSim against our float path (and how well they keep the float
ranking); PLAID-style index search against exhaustive float MaxSim (latency, Recall@10, bytes per vector).

    python benchmarks/colbert_maxsim.py                       # a few minutes on 2 CPU cores
    python benchmarks/colbert_maxsim.py --docs 10000 --index-docs 20000 --num-centroids 0   # GPU-sized
    python benchmarks/colbert_maxsim.py --smoke --out /tmp/x  # tiny sizes, every row, seconds

Prints one table: workload, ours, peer, ratio (peer time / our time, > 1 means we are faster), and the
machine; the same rows (and the raw seconds) go to results.json in --out. Every timing is the median of
--repeats runs after a warm-up (compile) run, blocked until ready (`jaxzoo.script.timeit`). A peer that is
not installed (torch, maxsim-cpu: `pip install maxsim-cpu`) gets a row saying so instead of a time.
"""

import time

import jax.numpy as jnp
import numpy as np

import colbert
from colbert.quant import ranking_agreement
from jaxzoo import script


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered_docs(rng, centers, n_docs, lengths, topics_per_doc=4, noise=0.7):
    docs = []
    for n in lengths:
        t = rng.choice(len(centers), topics_per_doc, replace=False)
        docs.append(unit(centers[rng.choice(t, n)] + noise * rng.standard_normal((n, centers.shape[1]))))
    return docs


def fmt_ms(s):
    return f"{s * 1e3:.2f} ms"


def main():
    p = script.parser(__doc__)
    p.add_argument("--docs", type=int, default=1000, help="documents to rerank")
    p.add_argument("--doc-len", type=int, default=256, help="tokens per reranked document")
    p.add_argument("--query-len", type=int, default=32)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--index-docs", type=int, default=1000, help="documents in the index collection")
    p.add_argument("--index-doc-len", type=int, default=128, help="mean tokens per indexed document")
    p.add_argument("--num-centroids", type=int, default=1024, help="0 = ColBERTv2's default count")
    p.add_argument("--nbits", type=int, default=2)
    p.add_argument("--queries", type=int, default=16, help="queries for the index search")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--skip-index", action="store_true")
    args = script.parse(
        p,
        smoke={
            "docs": 64,
            "doc_len": 32,
            "query_len": 8,
            "dim": 32,
            "index_docs": 64,
            "index_doc_len": 16,
            "num_centroids": 32,
            "queries": 4,
            "repeats": 2,
        },
        # one H200: 10k documents x 256 tokens reranked, a 100k-document index (ColBERTv2's centroid count)
        accelerator={"docs": 10000, "index_docs": 100000, "num_centroids": 0, "queries": 64},
    )
    run = script.setup(args)

    def timeit(fn, repeats=args.repeats):
        return script.timeit(fn, warmup=1, repeats=repeats)

    rows = []  # (workload, ours, peer, ratio)
    seconds = {}  # raw medians
    missing = []  # peers not installed
    rng = np.random.default_rng(0)
    # ----------------------------------------------------------------------------- reranking (float, binary)
    centers = rng.standard_normal((256, args.dim))
    D = np.stack(clustered_docs(rng, centers, args.docs, [args.doc_len] * args.docs))  # [N, Ld, dim]
    Q = clustered_docs(rng, centers, 1, [args.query_len])[0]  # [Lq, dim]
    Dj, Qj = jnp.asarray(D), jnp.asarray(Q)
    work = f"rerank {args.docs} docs x {args.doc_len} tok, Lq {args.query_len}, dim {args.dim}"

    t_ours = timeit(lambda: colbert.maxsim(Qj, Dj))
    ours_scores = np.asarray(colbert.maxsim(Qj, Dj))

    try:
        import torch

        qt, dt = torch.from_numpy(Q)[None], torch.from_numpy(D)

        def torch_maxsim():  # pylate.scores.colbert_scores without masks: einsum("ash,bth->abst").max(-1).sum(-1)
            with torch.inference_mode():
                return torch.einsum("ash,bth->abst", qt, dt).max(axis=-1).values.sum(axis=-1)

        t_torch = timeit(torch_maxsim)
        assert np.allclose(torch_maxsim().numpy()[0], ours_scores, rtol=1e-4, atol=1e-3)
        rows.append((f"float MaxSim, {work}", fmt_ms(t_ours), f"torch {torch.__version__}: {fmt_ms(t_torch)}",
                     f"{t_torch / t_ours:.2f}x"))  # fmt: skip
        seconds["maxsim_torch"] = t_torch
    except ImportError:
        rows.append((f"float MaxSim, {work}", fmt_ms(t_ours), "torch not installed: skipped", "-"))
        missing.append("torch")

    try:
        import maxsim_cpu

        t_mx = timeit(lambda: maxsim_cpu.maxsim_scores(Q, D))
        assert np.allclose(maxsim_cpu.maxsim_scores(Q, D), ours_scores, rtol=1e-4, atol=1e-3)
        rows.append(
            (f"float MaxSim, {work}", fmt_ms(t_ours), f"maxsim-cpu: {fmt_ms(t_mx)}", f"{t_mx / t_ours:.2f}x")
        )
        seconds["maxsim_maxsim_cpu"] = t_mx
    except ImportError:
        rows.append((f"float MaxSim, {work}", fmt_ms(t_ours), "maxsim-cpu not installed: skipped", "-"))
        missing.append("maxsim-cpu")

    D_bits = colbert.binarize(Dj)
    Q_bits = colbert.binarize(Qj)
    t_bin = timeit(lambda: colbert.maxsim_binary(Qj, D_bits))
    t_ham = timeit(lambda: colbert.maxsim_hamming(Q_bits, D_bits))
    seconds.update(maxsim_ours=t_ours, maxsim_binary=t_bin, maxsim_hamming=t_ham)
    rows.append(
        (
            f"float q x binary docs, {work}",
            fmt_ms(t_bin),
            f"our float: {fmt_ms(t_ours)}",
            f"{t_ours / t_bin:.2f}x",
        )
    )
    rows.append(
        (
            f"Hamming bit x bit, {work}",
            fmt_ms(t_ham),
            f"our float: {fmt_ms(t_ours)}",
            f"{t_ours / t_ham:.2f}x",
        )
    )
    rows.append(("doc bytes per token, float32 vs packed bits", f"{D_bits.shape[-1]} B", f"{args.dim * 4} B",
                 f"{args.dim * 4 / D_bits.shape[-1]:.0f}x smaller"))  # fmt: skip

    # ranking preservation on 64 clustered queries against the same documents
    Qs = jnp.asarray(np.stack(clustered_docs(rng, centers, 64, [args.query_len] * 64)))
    ref = colbert.maxsim(Qs, Dj, chunk_size=256)
    agree_bin = ranking_agreement(ref, colbert.maxsim_binary(Qs, D_bits), k=10)
    agree_ham = ranking_agreement(ref, colbert.maxsim_hamming(colbert.binarize(Qs), D_bits), k=10)
    for name, a in (("float q x binary docs", agree_bin), ("Hamming bit x bit", agree_ham)):
        rows.append((f"{name}: agreement with float ranking (64 queries)",
                     f"overlap@10 {a['overlap@10']:.3f}", f"spearman {a['spearman']:.3f}", "-"))  # fmt: skip

    # ----------------------------------------------------------------------------------------- index search
    if not args.skip_index:
        lengths = rng.integers(args.index_doc_len // 2, args.index_doc_len * 3 // 2 + 1, args.index_docs)
        centers_i = rng.standard_normal((max(64, args.index_docs // 4), args.dim))
        docs = clustered_docs(rng, centers_i, args.index_docs, lengths)
        queries = np.stack(clustered_docs(rng, centers_i, args.queries, [args.query_len] * args.queries))
        total = int(lengths.sum())
        t0 = time.perf_counter()
        index = colbert.Index.build(
            docs, nbits=args.nbits, num_centroids=args.num_centroids or None, progress=False
        )
        t_build = time.perf_counter() - t0
        k = 10
        exact_ids, _ = colbert.exhaustive_search(queries, docs, k=k)
        Dpad, mpad = colbert.pad_documents(docs)
        Dpad, mpad = jnp.asarray(Dpad), jnp.asarray(mpad)
        qj = jnp.asarray(queries)
        t_exh = timeit(lambda: colbert.maxsim(qj[0], Dpad, None, mpad), repeats=3)
        t_exh_b = timeit(lambda: colbert.maxsim(qj, Dpad, None, mpad, chunk_size=256), repeats=3)
        t_one = timeit(lambda: index.search(queries[0], k=k))
        t_batch = timeit(lambda: index.search(queries, k=k), repeats=3)
        ids, _ = index.search(queries, k=k)
        recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, exact_ids)])
        iwork = f"{args.index_docs} docs, {total} vectors, dim {args.dim}, K {index.codec.num_centroids}, nbits {args.nbits}"
        rows.append((f"index build ({iwork})", f"{t_build:.1f} s", "-", "-"))
        rows.append((f"PLAID search k=10, 1 query ({iwork})", fmt_ms(t_one), f"exhaustive float MaxSim: {fmt_ms(t_exh)}",
                     f"{t_exh / t_one:.2f}x"))  # fmt: skip
        rows.append((f"PLAID search k=10, {args.queries} queries batched, per query", fmt_ms(t_batch / args.queries),
                     f"exhaustive float MaxSim: {fmt_ms(t_exh_b / args.queries)}",
                     f"{t_exh_b / t_batch:.2f}x"))  # fmt: skip
        rows.append((f"PLAID Recall@10 vs exhaustive float MaxSim ({args.queries} queries)", f"{recall:.3f}", "1.000",
                     "-"))  # fmt: skip
        wide = dict(ncells=2, centroid_score_threshold=0.45, ndocs=1024)  # PLAID's k <= 100 setting
        seconds.update(
            index_build=t_build,
            index_search_one=t_one,
            index_search_batch=t_batch,
            exhaustive_one=t_exh,
            exhaustive_batch=t_exh_b,
        )
        t_wide = timeit(lambda: index.search(queries, k=k, **wide), repeats=3)
        ids, _ = index.search(queries, k=k, **wide)
        recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, exact_ids)])
        rows.append(("PLAID k=10 with ncells 2, threshold 0.45, ndocs 1024: Recall@10, ms per query",
                     f"{recall:.3f}, {fmt_ms(t_wide / args.queries)}", "-", "-"))  # fmt: skip
        sample = np.concatenate(docs)[rng.permutation(total)[: min(total, 50_000)]]
        for nb in (1, 2, 4):  # the index's centroids, buckets refitted per nbits
            codec = colbert.ResidualCodec.fit_buckets(index.codec.centroids, sample, nbits=nb)
            cos = float(jnp.mean(jnp.sum(sample * codec.decompress(*codec.compress(sample)), axis=-1)))
            rows.append((f"residual codec nbits={nb}: bytes per vector, mean reconstruction cosine",
                         f"{codec.bytes_per_vector} B, cos {cos:.4f}", f"float32: {args.dim * 4} B",
                         f"{args.dim * 4 / codec.bytes_per_vector:.1f}x smaller"))  # fmt: skip
        rows.append(("index bytes per vector (codes + residuals + IVF + offsets)", f"{index.bytes_per_vector:.1f} B",
                     f"float32: {args.dim * 4} B", f"{args.dim * 4 / index.bytes_per_vector:.1f}x smaller"))  # fmt: skip

    script.print_table(
        [dict(zip(("workload", "ours", "peer", "ratio"), r)) for r in rows],
        title=f"ColBERT scoring on {script.machine()}",
    )
    run.save(
        {
            "rows": [dict(zip(("workload", "ours", "peer", "ratio"), r)) for r in rows],
            "seconds": seconds,
            "peers_missing": missing,
        }
    )


if __name__ == "__main__":
    main()
