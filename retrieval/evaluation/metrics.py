"""Retrieval and abstention metrics: pure functions over ranked id lists.

A query's outcome is the ranked ids a system returned, whether it answered, and its
relevant ids (none: the query is out of scope and the right behaviour is to hand off).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Outcome",
    "abstain_precision_recall",
    "answered_point",
    "hit_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "overall_accuracy",
    "percentile",
    "recall_at_k",
    "risk_coverage",
    "summarize",
]


@dataclass(frozen=True)
class Outcome:
    """What one system did with one query."""

    ranked: tuple[str, ...]  # ids, best first
    relevant: frozenset[str]  # empty: out of scope
    top_score: float | None = None
    answered: bool = True  # False: abstained (handed off or only suggested to an agent)
    query_ms: float | None = 0.0  # None: not timed (the evaluation times a sample)
    encode_ms: float | None = 0.0

    @property
    def in_scope(self) -> bool:
        return bool(self.relevant)


def hit_at_k(ranked: Sequence[str], relevant: frozenset[str] | set[str], k: int) -> float:
    """1.0 when any relevant id is among the first k, else 0.0."""
    return float(any(r in relevant for r in ranked[:k]))


def recall_at_k(ranked: Sequence[str], relevant: frozenset[str] | set[str], k: int) -> float:
    """Share of the relevant ids found among the first k."""
    if not relevant:
        raise ValueError("recall is undefined for a query without relevant ids")
    return len(set(ranked[:k]) & set(relevant)) / len(relevant)


def mrr_at_k(ranked: Sequence[str], relevant: frozenset[str] | set[str], k: int = 10) -> float:
    """Reciprocal rank of the first relevant id within the first k (0 when none)."""
    for i, r in enumerate(ranked[:k]):
        if r in relevant:
            return 1.0 / (i + 1)
    return 0.0


def ndcg_at_k(ranked: Sequence[str], relevant: frozenset[str] | set[str], k: int = 10) -> float:
    """Binary-relevance nDCG: DCG of the ranking over the DCG of a perfect one."""
    if not relevant:
        raise ValueError("nDCG is undefined for a query without relevant ids")
    dcg = sum(1.0 / math.log2(i + 2) for i, r in enumerate(ranked[:k]) if r in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return dcg / ideal


def abstain_precision_recall(outcomes: Sequence[Outcome]) -> tuple[float | None, float | None]:
    """Of the abstentions, the share that were out of scope (precision); of the out-of-scope
    queries, the share abstained on (recall). None where the denominator is zero."""
    abstained = [o for o in outcomes if not o.answered]
    oos = [o for o in outcomes if not o.in_scope]
    precision = sum(not o.in_scope for o in abstained) / len(abstained) if abstained else None
    recall = sum(not o.answered for o in oos) / len(oos) if oos else None
    return precision, recall


def overall_accuracy(outcomes: Sequence[Outcome]) -> float:
    """Right when answered with a relevant top-1, or abstained on an out-of-scope query."""
    if not outcomes:
        raise ValueError("no outcomes")
    right = sum(
        (o.answered and o.in_scope and bool(o.ranked) and o.ranked[0] in o.relevant)
        or (not o.answered and not o.in_scope)
        for o in outcomes
    )
    return right / len(outcomes)


def risk_coverage(outcomes: Sequence[Outcome]) -> tuple[np.ndarray, np.ndarray]:
    """The risk-coverage curve: answering the n most confident questions (by top score, for
    n = 1..N), the share answered (coverage) and the accuracy of the answered ones (an
    answered out-of-scope question is wrong). Questions without a score come last."""
    if not outcomes:
        return np.zeros(0), np.zeros(0)
    order = sorted(
        range(len(outcomes)),
        key=lambda i: -np.inf if outcomes[i].top_score is None else -float(outcomes[i].top_score),  # type: ignore[arg-type]
    )
    right = np.array(
        [bool(outcomes[i].ranked) and outcomes[i].ranked[0] in outcomes[i].relevant for i in order],
        dtype=np.float64,
    )
    n = np.arange(1, len(order) + 1)
    return n / len(order), np.cumsum(right) / n


def answered_point(outcomes: Sequence[Outcome]) -> tuple[float, float | None]:
    """Where the system's own decisions put it on that plane: (share answered, accuracy of
    the answered questions; None when it answered none)."""
    answered = [o for o in outcomes if o.answered]
    if not outcomes:
        return 0.0, None
    share = len(answered) / len(outcomes)
    if not answered:
        return share, None
    return share, float(np.mean([bool(o.ranked) and o.ranked[0] in o.relevant for o in answered]))


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else None


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def summarize(outcomes: Sequence[Outcome], *, abstention: bool) -> dict[str, float | int | None]:
    """The metrics of one system on one query set (ranking metrics over in-scope queries)."""
    if not outcomes:
        raise ValueError("no outcomes")
    ins = [o for o in outcomes if o.in_scope]
    out: dict[str, float | int | None] = {
        "n_queries": len(outcomes),
        "n_in_scope": len(ins),
        "hit_at_1": _mean([hit_at_k(o.ranked, o.relevant, 1) for o in ins]),
        "hit_at_5": _mean([hit_at_k(o.ranked, o.relevant, 5) for o in ins]),
        "recall_at_5": _mean([recall_at_k(o.ranked, o.relevant, 5) for o in ins]),
        "recall_at_10": _mean([recall_at_k(o.ranked, o.relevant, 10) for o in ins]),
        "mrr_at_10": _mean([mrr_at_k(o.ranked, o.relevant, 10) for o in ins]),
        "ndcg_at_10": _mean([ndcg_at_k(o.ranked, o.relevant, 10) for o in ins]),
    }
    if abstention:
        precision, recall = abstain_precision_recall(outcomes)
        out |= {
            "in_scope_hit_at_1": out["hit_at_1"],
            "abstain_precision": precision,
            "abstain_recall": recall,
            "answered_rate": sum(o.answered for o in outcomes) / len(outcomes),
            "overall_accuracy": overall_accuracy(outcomes),
        }
    timed = [o.query_ms for o in outcomes if o.query_ms is not None]
    out |= {
        "encode_ms_p50": percentile([o.encode_ms for o in outcomes if o.encode_ms is not None], 50),
        "query_ms_p50": percentile(timed, 50),
        "query_ms_p95": percentile(timed, 95),
        "n_timed": len(timed),
    }
    return out
