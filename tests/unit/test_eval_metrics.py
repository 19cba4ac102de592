"""Evaluation metrics: pure functions checked against values worked out by hand."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest

from retrieval.evaluation.metrics import (
    Outcome,
    abstain_precision_recall,
    hit_at_k,
    mrr_at_k,
    ndcg_at_k,
    overall_accuracy,
    recall_at_k,
    summarize,
)

REL = frozenset({"a", "c"})


def test_ranking_metrics_by_hand() -> None:
    ranked = ["b", "a", "d", "c"]
    assert hit_at_k(ranked, REL, 1) == 0.0 and hit_at_k(ranked, REL, 2) == 1.0
    assert recall_at_k(ranked, REL, 2) == 0.5 and recall_at_k(ranked, REL, 4) == 1.0
    assert mrr_at_k(ranked, REL, 10) == 0.5 and mrr_at_k(ranked, REL, 1) == 0.0
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    assert ndcg_at_k(ranked, REL, 10) == pytest.approx(dcg / (1 + 1 / math.log2(3)))
    assert ndcg_at_k(["a", "c"], REL, 10) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        recall_at_k(ranked, frozenset(), 5)


def test_abstention_and_overall_accuracy() -> None:
    outcomes = [
        Outcome(("a",), frozenset({"a"}), 0.9, True),  # answered right
        Outcome(("b",), frozenset({"a"}), 0.8, True),  # answered wrong
        Outcome(("a",), frozenset({"a"}), 0.3, False),  # in scope, abstained: wrong
        Outcome(("a",), frozenset(), 0.2, False),  # out of scope, abstained: right
        Outcome(("a",), frozenset(), 0.7, True),  # out of scope, answered: wrong
    ]
    precision, recall = abstain_precision_recall(outcomes)
    assert precision == 0.5 and recall == 0.5
    assert overall_accuracy(outcomes) == pytest.approx(2 / 5)
    m = summarize(outcomes, abstention=True)
    assert m["n_queries"] == 5 and m["n_in_scope"] == 3
    assert m["hit_at_1"] == pytest.approx(2 / 3) == m["in_scope_hit_at_1"]
    assert m["answered_rate"] == pytest.approx(3 / 5)
    assert abstain_precision_recall(outcomes[:2]) == (None, None)


def test_summary_has_the_issue_keys_and_latency_percentiles() -> None:
    outcomes = [
        Outcome(("a",), frozenset({"a"}), 0.9, True, query_ms=float(i), encode_ms=1.0)
        for i in range(1, 101)
    ]
    m = summarize(outcomes, abstention=False)
    for key in ("n_queries", "hit_at_1", "recall_at_5", "recall_at_10", "mrr_at_10", "ndcg_at_10"):
        assert key in m
    assert "overall_accuracy" not in m
    assert m["query_ms_p50"] == pytest.approx(50.5) and m["query_ms_p95"] == pytest.approx(95.05)
    assert m["encode_ms_p50"] == 1.0


@pytest.mark.parametrize(
    "module",
    [
        "metrics",
        "runner",
        "results",
        "baselines",
        "faq",
        "products",
        "datasets",
        "table",
        "report",
        "cli",
        "labelled",
    ],
)
def test_all_lists_the_public_names(module: str) -> None:
    mod = importlib.import_module(
        f"retrieval.{module}" if module == "labelled" else f"retrieval.evaluation.{module}"
    )
    assert mod.__all__ and all(hasattr(mod, name) for name in mod.__all__)


def test_risk_coverage_against_brute_force() -> None:
    from retrieval.evaluation.metrics import answered_point, risk_coverage

    rng = np.random.default_rng(3)
    outcomes = []
    for _ in range(40):
        in_scope = rng.random() < 0.6
        right = in_scope and rng.random() < 0.7
        outcomes.append(
            Outcome(
                ("a" if right else "b",),
                frozenset({"a"}) if in_scope else frozenset(),
                float(rng.random()),
                bool(rng.random() < 0.5),
            )
        )
    coverage, accuracy = risk_coverage(outcomes)
    by_score = sorted(outcomes, key=lambda o: -o.top_score)
    for n in range(1, 41):
        top = by_score[:n]
        assert coverage[n - 1] == pytest.approx(n / 40)
        assert accuracy[n - 1] == pytest.approx(sum(o.ranked[0] in o.relevant for o in top) / n)
    answered = [o for o in outcomes if o.answered]
    share, acc = answered_point(outcomes)
    assert share == pytest.approx(len(answered) / 40)
    assert acc == pytest.approx(sum(o.ranked[0] in o.relevant for o in answered) / len(answered))
    assert risk_coverage([])[0].size == 0
