"""One query path: the HTTP route and ``retrieval eval`` rank and decide identically on one
published index version, English and Chinese questions alike (real models, demo data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from retrieval.cli import main
from retrieval.evaluation.faq import evaluate_faq
from retrieval.evaluation.products import evaluate_products
from retrieval.indexfolders import current_version
from retrieval.labelled import read_labelled
from retrieval.runtime import build_retriever
from retrieval.service import create_app

from helpers import DATA, demo_settings

pytestmark = pytest.mark.models

K = 10


def _mixed_queries(tmp_path: Path) -> Path:
    """English questions of the calibration file (some out of scope) and Chinese ones."""
    english = (DATA / "faq" / "calibration.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    chinese = (DATA / "eval" / "faq-zh.jsonl").read_text(encoding="utf-8").splitlines()[::4]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(english + chinese) + "\n", encoding="utf-8")
    return path


def test_http_and_eval_rank_and_decide_identically(demo_data_dir: Path, tmp_path: Path) -> None:
    settings = demo_settings(demo_data_dir)
    queries_path = _mixed_queries(tmp_path)
    queries = read_labelled(queries_path, known_ids=None, images=False)
    assert any("\u4e00" <= ch <= "\u9fff" for q in queries for ch in q.text or "")

    evaluation = evaluate_faq(
        settings, None, queries_path, published=True, progress=False, latency_sample=10
    )
    system = evaluation.system
    assert evaluation.info["batch_mismatches"] == 0
    assert evaluation.info["multilingual_encoder"]  # the Chinese questions had their view

    with TestClient(create_app(settings, build_retriever(settings))) as client:
        served = [
            client.post("/v1/query", json={"text": q.text, "k_faq": K, "k_products": 1}).json()
            for q in queries
        ]
    for q, outcome, body in zip(queries, system.outcomes, served, strict=True):
        ranked = tuple(r["id"] for r in body["replies"])
        assert ranked == outcome.ranked, q.text
        assert (body["decision"] == "answer") == outcome.answered, q.text
        assert body["top_score"] == pytest.approx(outcome.top_score, abs=1e-5), q.text
    # the decisions are not all alike: the comparison covers answers and hand-offs
    assert {o.answered for o in system.outcomes} == {True, False}


def test_eval_cli_scores_the_published_version(
    demo_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queries = _mixed_queries(tmp_path)
    rc = main(
        [
            "eval",
            "faq",
            "--published",
            "--data-dir",
            str(demo_data_dir),
            "--queries",
            str(queries),
            "--latency-sample",
            "5",
            "--no-progress",
            "--json",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    summary = json.loads(out.strip().splitlines()[-1])
    assert "one question at a time on 5 of" in out
    assert summary["n_timed"] == 5


def test_eval_cli_refuses_bank_and_published_together(demo_data_dir: Path, tmp_path: Path) -> None:
    queries = _mixed_queries(tmp_path)
    args = ["eval", "faq", "--published", "--bank", str(DATA / "faq" / "faq.yaml")]
    assert main([*args, "--queries", str(queries), "--data-dir", str(demo_data_dir)]) == 2


def test_products_eval_equals_the_service_on_chinese_questions(demo_data_dir: Path) -> None:
    """``retrieval eval products --published`` on products-zh.jsonl gives what the service
    gives on that same published version."""
    settings = demo_settings(demo_data_dir)
    queries_path = DATA / "eval" / "products-zh.jsonl"
    queries = read_labelled(queries_path, known_ids=None, images=False)
    evaluation = evaluate_products(
        settings, None, queries_path, progress=False, latency_sample=0, published=True
    )
    assert evaluation.info["index_version"] == current_version(settings.index_dir, "products")
    with TestClient(create_app(settings, build_retriever(settings))) as client:
        served = [
            client.post(
                "/v1/query?all=true", json={"text": q.text, "k_faq": 1, "k_products": K}
            ).json()
            for q in queries
        ]
    # the product gate decides alike: the share of questions shown products
    shown = [b["product_gate"]["about_products"] for b in served]
    assert evaluation.info["product_gate"]["shown"] == pytest.approx(sum(shown) / len(shown))
    hits = [
        bool(b["products"]) and b["products"][0]["id"] in q.relevant
        for q, b in zip(queries, served, strict=True)
    ]
    assert evaluation.system.metrics["hit_at_1"] == pytest.approx(sum(hits) / len(hits))
    for outcome, body in zip(evaluation.system.outcomes, served, strict=True):
        assert outcome.ranked[:3] == tuple(p["id"] for p in body["products"][:3])


def test_products_eval_of_the_published_version_from_the_command_line(
    demo_data_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    queries = DATA / "eval" / "products-zh.jsonl"
    common = ["eval", "products", "--queries", str(queries), "--no-progress"]
    # either a catalog to build or the published version, and no TRAIN for the latter
    catalog = ["--catalog", str(DATA / "catalog" / "products.jsonl")]
    assert main([*common, *catalog, "--published", "--data-dir", str(demo_data_dir)]) == 2
    assert main([*common, "--data-dir", str(demo_data_dir)]) == 2
    train = ["--train", str(queries)]
    assert main([*common, "--published", *train, "--data-dir", str(demo_data_dir)]) == 2
    capsys.readouterr()
    args = [*common, "--published", "--data-dir", str(demo_data_dir), "--json"]
    assert main([*args, "--latency-sample", "0"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["index_version"] == current_version(demo_data_dir / "index", "products")
    assert summary["n_products"] == 81 and summary["hit_at_1"] > 0.5
