"""Retrieval metrics on TREC-style qrels {query_id: {doc_id: grade}} (grade > 0 = relevant).

A run is {query_id: ranked list of doc ids, best first} or {query_id: {doc_id: score}} (sorted by score,
ties by doc id as strings, like trec_eval). Each metric is the mean over the queries in qrels that have at
least one relevant document; a query missing from the run scores 0.
- nDCG@k: sum_{rank r <= k} grade / log2(r + 1), over the same sum for the ideal ranking (linear gain,
  as trec_eval / pytrec_eval `ndcg_cut`).
- MRR@k: 1 / rank of the first relevant document within k (MS MARCO's MRR@10), else 0.
- Recall@k: relevant documents in the top k / all relevant documents.
- Success@k: 1 if any relevant document is in the top k (LoTTE's Success@5), else 0.
"""

from __future__ import annotations

import math

__all__ = ["ndcg_at_k", "mrr_at_k", "recall_at_k", "success_at_k", "evaluate"]


def _ranked(ranking) -> list:
    if isinstance(ranking, dict):
        return [d for d, _ in sorted(ranking.items(), key=lambda kv: (-kv[1], str(kv[0])))]
    return list(ranking)


def _check(run, qrels, k):
    if not isinstance(run, dict) or not isinstance(qrels, dict):
        raise ValueError(
            f"run and qrels must be dicts keyed by query id; got {type(run).__name__} and {type(qrels).__name__}."
        )
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int; got {k!r}.")


def _per_query(run, qrels, k, fn):
    _check(run, qrels, k)
    values = []
    for qid, judged in qrels.items():
        relevant = {d: g for d, g in judged.items() if g > 0}
        if not relevant:
            continue
        top = _ranked(run.get(qid, []))[:k]
        values.append(fn(top, relevant))
    return sum(values) / len(values) if values else 0.0


def ndcg_at_k(run, qrels, k: int = 10) -> float:
    def one(top, rel):
        dcg = sum(rel.get(d, 0) / math.log2(r + 2) for r, d in enumerate(top))
        ideal = sorted(rel.values(), reverse=True)[:k]
        return dcg / sum(g / math.log2(r + 2) for r, g in enumerate(ideal))

    return _per_query(run, qrels, k, one)


def mrr_at_k(run, qrels, k: int = 10) -> float:
    return _per_query(
        run, qrels, k, lambda top, rel: next((1.0 / (r + 1) for r, d in enumerate(top) if d in rel), 0.0)
    )


def recall_at_k(run, qrels, k: int = 10) -> float:
    return _per_query(run, qrels, k, lambda top, rel: len(set(top) & set(rel)) / len(rel))


def success_at_k(run, qrels, k: int = 5) -> float:
    return _per_query(run, qrels, k, lambda top, rel: float(any(d in rel for d in top)))


def evaluate(run, qrels, ks=(10,)) -> dict[str, float]:
    """All four metrics at each k: {"ndcg@10": ..., "mrr@10": ..., "recall@10": ..., "success@10": ...}."""
    out = {}
    for k in ks:
        out[f"ndcg@{k}"] = ndcg_at_k(run, qrels, k)
        out[f"mrr@{k}"] = mrr_at_k(run, qrels, k)
        out[f"recall@{k}"] = recall_at_k(run, qrels, k)
        out[f"success@{k}"] = success_at_k(run, qrels, k)
    return out
