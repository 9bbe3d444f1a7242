"""Retrieval metrics against hand-computed values."""

import math

import pytest

import colbert

QRELS = {"q1": {"a": 2, "b": 1, "z": 0}, "q2": {"c": 1}, "q3": {"x": 0}}  # q3 has nothing relevant
RUN = {"q1": ["b", "x", "a", "y"], "q2": ["d", "e", "f"]}


def test_ndcg_hand_computed():
    dcg = 1 / math.log2(2) + 2 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert colbert.ndcg_at_k(RUN, QRELS, 10) == pytest.approx((dcg / idcg + 0) / 2)
    assert colbert.ndcg_at_k(RUN, QRELS, 1) == pytest.approx((1 / 2 + 0) / 2)


def test_mrr_recall_success_hand_computed():
    assert colbert.mrr_at_k(RUN, QRELS, 10) == pytest.approx((1 + 0) / 2)
    assert colbert.recall_at_k(RUN, QRELS, 2) == pytest.approx((1 / 2 + 0) / 2)
    assert colbert.recall_at_k(RUN, QRELS, 3) == pytest.approx((1 + 0) / 2)
    assert colbert.success_at_k(RUN, QRELS, 1) == pytest.approx(0.5)
    assert colbert.success_at_k({"q2": ["d", "c"]}, QRELS, 2) == pytest.approx(0.5)  # q1 missing: 0
    assert colbert.mrr_at_k({"q1": ["y", "y2", "a"], "q2": ["c"]}, QRELS, 10) == pytest.approx(
        (1 / 3 + 1) / 2
    )
    assert colbert.mrr_at_k({"q1": ["y", "y2", "a"]}, QRELS, 2) == 0.0


def test_scored_runs_rank_by_score():
    scored = {"q1": {"a": 0.1, "b": 0.9, "x": 0.5}, "q2": {"c": 3.0}}
    assert colbert.mrr_at_k(scored, QRELS, 10) == pytest.approx(1.0)
    assert colbert.evaluate(scored, QRELS, ks=(1,))["success@1"] == pytest.approx(1.0)
    assert set(colbert.evaluate(RUN, QRELS, ks=(5, 10))) == {
        f"{m}@{k}" for m in ("ndcg", "mrr", "recall", "success") for k in (5, 10)
    }


def test_bad_input_messages():
    with pytest.raises(ValueError, match="must be dicts keyed by query id"):
        colbert.ndcg_at_k([["a"]], QRELS)
    with pytest.raises(ValueError, match="k must be a positive int"):
        colbert.recall_at_k(RUN, QRELS, 0)
