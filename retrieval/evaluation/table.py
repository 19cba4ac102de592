"""The human-readable table of an evaluation: one column per system, one row per metric."""

from __future__ import annotations

from .results import Evaluation

__all__ = ["ROWS", "format_table"]

# (label, metric key, format); rows whose metric no system has are left out
ROWS = (
    ("queries", "n_queries", "d"),
    ("in scope", "n_in_scope", "d"),
    ("hit@1", "hit_at_1", ".3f"),
    ("hit@5", "hit_at_5", ".3f"),
    ("recall@5", "recall_at_5", ".3f"),
    ("recall@10", "recall_at_10", ".3f"),
    ("MRR@10", "mrr_at_10", ".3f"),
    ("nDCG@10", "ndcg_at_10", ".3f"),
    ("answered", "answered_rate", ".3f"),
    ("abstain precision", "abstain_precision", ".3f"),
    ("abstain recall", "abstain_recall", ".3f"),
    ("overall accuracy", "overall_accuracy", ".3f"),
    ("threshold", "threshold", ".3f"),
    ("encode ms p50", "encode_ms_p50", ".1f"),
    ("query ms p50", "query_ms_p50", ".1f"),
    ("query ms p95", "query_ms_p95", ".1f"),
    ("build / train s", "build_s", ".1f"),
)


def _cell(value: object, fmt: str) -> str:
    if value is None:
        return "-"
    return format(value, fmt)


def format_table(evaluation: Evaluation) -> str:
    metrics = [r.metrics for r in evaluation.results]
    names = [r.name for r in evaluation.results]
    width = max(10, *(len(n) + 2 for n in names))
    info = evaluation.info
    what = (
        f"{info['n_entries']} entries"
        if "n_entries" in info
        else f"{info.get('n_products')} products"
    )
    lines = [
        f"{evaluation.kind} evaluation of {evaluation.dataset}: {what}, {info.get('n_vectors')} vectors",
        f"{'':<18}" + "".join(f"{n:>{width}}" for n in names),
    ]
    for label, key, fmt in ROWS:
        if all(key not in m for m in metrics):
            continue
        lines.append(
            f"{label:<18}" + "".join(f"{_cell(m.get(key), fmt):>{width}}" for m in metrics)
        )
    for r in evaluation.results:
        if r.threshold_source:
            lines.append(f"threshold of {r.name}: {r.threshold_source}")
    return "\n".join(lines)
