"""Reports: saved evaluation results, a Markdown table of system vs baselines per dataset,
and PNG plots (recall@k curves, score histograms, latency distributions)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np

from ..errors import SourceError
from .metrics import Outcome, answered_point, recall_at_k, risk_coverage
from .results import Evaluation

__all__ = ["load_evaluations", "plot_evaluation", "save_evaluation", "write_report"]

log = logging.getLogger(__name__)

COLUMNS = (
    ("hit@1", "hit_at_1"),
    ("recall@5", "recall_at_5"),
    ("recall@10", "recall_at_10"),
    ("MRR@10", "mrr_at_10"),
    ("nDCG@10", "ndcg_at_10"),
    ("abstain P", "abstain_precision"),
    ("abstain R", "abstain_recall"),
    ("overall acc", "overall_accuracy"),
    ("query ms p50", "query_ms_p50"),
    ("query ms p95", "query_ms_p95"),
    ("build s", "build_s"),
)


SUFFIX = ".eval.json"  # other reports may share the folder


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "dataset"


def save_evaluation(evaluation: Evaluation, folder: Path) -> Path:
    """Write the full results (per-query outcomes included) as ``<kind>-<dataset>.eval.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{evaluation.kind}-{_slug(evaluation.dataset)}{SUFFIX}"
    path.write_text(json.dumps(evaluation.to_json(), ensure_ascii=False), encoding="utf-8")
    return path


def load_evaluations(folder: Path) -> list[Evaluation]:
    if not folder.is_dir():
        raise SourceError(folder, "report folder not found")
    out = []
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        try:
            out.append(Evaluation.from_json(json.loads(path.read_text(encoding="utf-8"))))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise SourceError(path, f"not a saved evaluation ({exc})") from None
    if not out:
        raise SourceError(
            folder, "holds no saved evaluations (run 'retrieval eval ... --report DIR')"
        )
    return out


def _cell(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def markdown_table(evaluations: list[Evaluation]) -> str:
    lines = [
        "| dataset | queries | system | " + " | ".join(label for label, _ in COLUMNS) + " |",
        "|---|---:|---|" + "---:|" * len(COLUMNS),
    ]
    for ev in evaluations:
        for r in ev.results:
            m = r.metrics
            lines.append(
                f"| {ev.kind}: {ev.dataset} | {m['n_queries']} | {r.name} | "
                + " | ".join(_cell(m.get(key)) for _, key in COLUMNS)
                + " |"
            )
    return "\n".join(lines)


def _recall_curve(outcomes: tuple[Outcome, ...], kmax: int = 10) -> list[float]:
    ins = [o for o in outcomes if o.in_scope]
    return [
        float(np.mean([recall_at_k(o.ranked, o.relevant, k) for o in ins]))
        for k in range(1, kmax + 1)
    ]


def plot_evaluation(ev: Evaluation, folder: Path) -> list[Path]:
    """PNGs per evaluation: recall@k, top-score histograms, the risk-coverage curve (when a
    system may abstain) and the latency distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stem = folder / f"{ev.kind}-{_slug(ev.dataset)}"
    paths = []

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for r in ev.results:
        ax.plot(range(1, 11), _recall_curve(r.outcomes), marker="o", label=r.name)
    ax.set(xlabel="k", ylabel="recall@k (in-scope queries)", title=f"{ev.dataset}: recall@k")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(_save(fig, Path(f"{stem}-recall.png")))

    fig, ax = plt.subplots(figsize=(5, 3.5))
    sys = ev.system.outcomes
    scored = [o for o in sys if o.top_score is not None]
    if any(not o.in_scope for o in scored):
        groups = {
            "in scope": [o.top_score for o in scored if o.in_scope],
            "out of scope": [o.top_score for o in scored if not o.in_scope],
        }
    else:
        groups = {
            "top-1 right": [o.top_score for o in scored if o.ranked and o.ranked[0] in o.relevant],
            "top-1 wrong": [
                o.top_score for o in scored if not (o.ranked and o.ranked[0] in o.relevant)
            ],
        }
    for label, values in groups.items():
        if values:
            ax.hist(values, bins=30, alpha=0.6, label=f"{label} ({len(values)})")
    if ev.system.threshold is not None:
        ax.axvline(ev.system.threshold, color="k", linestyle="--", label="answer threshold")
    ax.set(xlabel="top score (system)", ylabel="queries", title=f"{ev.dataset}: top scores")
    ax.legend()
    paths.append(_save(fig, Path(f"{stem}-scores.png")))

    if any(r.abstention for r in ev.results):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for r in ev.results:
            if not r.abstention:
                continue
            coverage, accuracy = risk_coverage(r.outcomes)
            (line,) = ax.plot(coverage, accuracy, label=r.name)
            share, acc = answered_point(r.outcomes)
            if acc is not None:
                ax.plot([share], [acc], marker="o", color=line.get_color())
        ax.set(
            xlabel="share of questions answered (by top score)",
            ylabel="accuracy of the answered",
            title=f"{ev.dataset}: risk-coverage (dots: as decided)",
        )
        ax.set_xlim(0, 1.0)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
        paths.append(_save(fig, Path(f"{stem}-risk-coverage.png")))

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for r in ev.results:
        ms = [o.query_ms for o in r.outcomes if o.query_ms is not None and o.query_ms > 0]
        if ms:
            ax.hist(ms, bins=40, alpha=0.5, label=f"{r.name} (p50 {np.median(ms):.1f} ms)")
    ax.set(xlabel="query latency, ms", ylabel="queries", title=f"{ev.dataset}: latency")
    ax.legend()
    paths.append(_save(fig, Path(f"{stem}-latency.png")))
    return paths


def _save(fig: object, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()  # type: ignore[attr-defined]
    fig.savefig(path, dpi=100)  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return path


def write_report(folder: Path) -> Path:
    """Write ``report.md`` and the plots from every evaluation saved in ``folder``."""
    evaluations = load_evaluations(folder)
    parts = [
        "# Evaluation report",
        "",
        "Ranking metrics over in-scope queries; abstention and overall accuracy over all queries.",
        "",
        markdown_table(evaluations),
        "",
    ]
    for ev in evaluations:
        parts.append(f"## {ev.kind}: {ev.dataset}")
        parts.append("")
        for r in ev.results:
            if r.threshold_source:
                parts.append(
                    f"- threshold of {r.name}: {_cell(r.threshold)} ({r.threshold_source})"
                )
        parts.append("")
        for png in plot_evaluation(ev, folder):
            parts.append(f"![{png.stem}]({png.name})")
        parts.append("")
    path = folder / "report.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
