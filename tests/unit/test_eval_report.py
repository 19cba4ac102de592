"""Reports: saved results round-trip, the Markdown table and the PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrieval.cli import main
from retrieval.errors import SourceError
from retrieval.evaluation.metrics import Outcome
from retrieval.evaluation.report import load_evaluations, save_evaluation, write_report
from retrieval.evaluation.results import Evaluation, SystemResult
from retrieval.evaluation.table import format_table


def evaluation() -> Evaluation:
    def outcomes(shift: float) -> tuple[Outcome, ...]:
        return tuple(
            Outcome(
                ("a", "b") if i % 3 else ("b", "a"),
                frozenset({"a"}) if i % 4 else frozenset(),
                0.5 + shift + i / 100,
                i % 5 != 0,
                query_ms=5.0 + i,
                encode_ms=4.0,
            )
            for i in range(20)
        )

    return Evaluation(
        "faq",
        "tiny shop",
        (
            SystemResult("system", outcomes(0.1), True, 0.6, "calibrated on TRAIN", 1.5),
            SystemResult("bm25", outcomes(0.0), True, None, "none", 0.1),
        ),
        {"n_entries": 2, "n_vectors": 4},
    )


def test_results_round_trip_and_report(tmp_path: Path) -> None:
    ev = evaluation()
    saved = save_evaluation(ev, tmp_path)
    (tmp_path / "other-tool.json").write_text('{"not": "ours"}')  # a neighbour's file
    again = load_evaluations(tmp_path)
    assert saved.name == "faq-tiny-shop.eval.json" and len(again) == 1
    assert again[0].summary() == ev.summary()
    report = write_report(tmp_path).read_text(encoding="utf-8")
    assert (
        "| faq: tiny shop | 20 | system |" in report and "| faq: tiny shop | 20 | bm25 |" in report
    )
    for kind in ("recall", "scores", "risk-coverage", "latency"):
        png = tmp_path / f"faq-tiny-shop-{kind}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"({png.name})" in report


def test_summary_and_table_put_baselines_beside_the_system() -> None:
    ev = evaluation()
    summary = ev.summary()
    assert summary["threshold"] == 0.6 and summary["baselines"]["bm25"]["threshold"] is None
    assert json.loads(json.dumps(summary)) == summary  # plain JSON, no NaN or infinity
    table = format_table(ev).splitlines()
    assert table[1].split() == ["system", "bm25"]
    row = next(x for x in table if x.startswith("overall accuracy"))
    assert len(row.split()) == 4


def test_report_of_an_empty_folder_is_an_error(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    with pytest.raises(SourceError, match="no saved evaluations"):
        write_report(tmp_path)
    assert main(["eval", "report", str(tmp_path / "missing")]) == 2
    assert "report folder not found" in capsys.readouterr().err
