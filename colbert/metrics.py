"""Retrieval metrics on TREC-style qrels {query_id: {doc_id: grade}} (grade > 0 = relevant).

A run is {query_id: ranked list of doc ids, best first} or {query_id: {doc_id: score}} (sorted by score,
ties by doc id as strings, like trec_eval). Each metric is the mean over the queries in qrels that have at
least one relevant document; a query missing from the run scores 0. Query and document ids are compared as
strings, so a run with integer ids (what `Index.search` returns) scores against qrels with string ids.
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


_FORMATS = """
    run: {query_id: [doc_id, ...] best first} or {query_id: {doc_id: score}}. qrels: {query_id: {doc_id:
    grade}}, grade > 0 = relevant. Ids are compared as strings (1 and "1" are the same document). Returns the
    mean over the queries of qrels with at least one relevant document (a query missing from the run: 0)."""


def _per_query(run, qrels, k, fn):
    _check(run, qrels, k)
    run = {str(q): r for q, r in run.items()}
    values = []
    for qid, judged in qrels.items():
        relevant = {str(d): g for d, g in judged.items() if g > 0}
        if not relevant:
            continue
        top = [str(d) for d in _ranked(run.get(str(qid), []))[:k]]
        values.append(fn(top, relevant))
    return sum(values) / len(values) if values else 0.0


def ndcg_at_k(run, qrels, k: int = 10) -> float:
    """nDCG@k with linear gain (trec_eval `ndcg_cut`): sum_r grade / log2(r + 1) over the ideal ranking's."""

    def one(top, rel):
        dcg = sum(rel.get(d, 0) / math.log2(r + 2) for r, d in enumerate(top))
        ideal = sorted(rel.values(), reverse=True)[:k]
        return dcg / sum(g / math.log2(r + 2) for r, g in enumerate(ideal))

    return _per_query(run, qrels, k, one)


def mrr_at_k(run, qrels, k: int = 10) -> float:
    """MRR@k: 1 / rank of the first relevant document in the top k, else 0 (MS MARCO's MRR@10)."""
    return _per_query(
        run, qrels, k, lambda top, rel: next((1.0 / (r + 1) for r, d in enumerate(top) if d in rel), 0.0)
    )


def recall_at_k(run, qrels, k: int = 10) -> float:
    """Recall@k: relevant documents in the top k / all relevant documents of the query."""
    return _per_query(run, qrels, k, lambda top, rel: len(set(top) & set(rel)) / len(rel))


def success_at_k(run, qrels, k: int = 5) -> float:
    """Success@k: 1 if any relevant document is in the top k, else 0 (LoTTE's Success@5)."""
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


for _fn in (ndcg_at_k, mrr_at_k, recall_at_k, success_at_k):
    _fn.__doc__ += _FORMATS
