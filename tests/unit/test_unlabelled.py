"""Unlabelled traffic in the hand-off fit: the file reader, and `retrieval eval faq
--unlabelled FILE` re-estimating the out-of-scope share without ever reading the scored
queries (stand-in encoder, real build and publish code)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrieval.errors import SourceError
from retrieval.evaluation.faq import evaluate_faq
from retrieval.labelled import read_unlabelled
from retrieval.outofscope_fit import MIN_LOG
from retrieval.settings import load_settings

from fakes import HashingTextEncoder
from helpers import run_cli


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_unlabelled_files_read_questions_and_ignore_labels(tmp_path: Path) -> None:
    rows = [{"query": "where is my parcel", "relevant": ["delivery"]}, {"query": " hi  "}]
    assert read_unlabelled(_jsonl(tmp_path / "u.jsonl", rows)) == ["where is my parcel", "hi"]
    txt = tmp_path / "u.txt"
    txt.write_text("first question\n\n second one \n", encoding="utf-8")
    assert read_unlabelled(txt) == ["first question", "second one"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"query": 3}\n', "bad.jsonl:1: field 'query'"),
        ('{"relevant": []}\n{"text": "x"}\n', "bad.jsonl:1: field 'query'"),
        ("", "no"),
    ],
)
def test_bad_unlabelled_files_name_file_and_line(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SourceError) as err:
        read_unlabelled(path)
    assert "bad.jsonl" in str(err.value) and message in str(err.value)


TOPICS = ["delivery", "returns", "payment", "warranty", "sizes", "stores"]


def _shop(tmp_path: Path) -> tuple[Path, Path, Path]:
    bank = _jsonl(
        tmp_path / "bank.jsonl",
        [
            {
                "id": t,
                "question": f"question about {t}",
                "examples": [f"tell me about {t}", f"{t} please", f"info on {t} policy"],
                "answer": f"all about {t}",
            }
            for t in TOPICS
        ],
    )
    train = _jsonl(
        tmp_path / "train.jsonl",
        [{"query": f"what is your {t} rule {i}", "relevant": [t]} for t in TOPICS for i in (1, 2)],
    )
    queries = _jsonl(
        tmp_path / "queries.jsonl",
        [{"query": f"{t} question", "relevant": [t]} for t in TOPICS]
        + [{"query": "bicycle repair shop", "relevant": []}],
    )
    return bank, train, queries


def test_eval_reads_unlabelled_traffic_but_never_the_scored_queries(tmp_path: Path) -> None:
    bank, train, queries = _shop(tmp_path)
    traffic = [
        {"query": f"unrelated chatter number {i} about bicycles"} for i in range(MIN_LOG + 10)
    ]
    traffic += [{"query": "delivery question"}, {"query": "Bicycle repair  shop"}]  # scored texts
    unlabelled = _jsonl(tmp_path / "traffic.jsonl", traffic)
    settings = load_settings(None, data_dir=tmp_path / "var")
    text = HashingTextEncoder()
    with_log = evaluate_faq(
        settings, bank, queries, train, progress=False, encoder=text, unlabelled_path=unlabelled
    )
    assert with_log.info["unlabelled"]["questions"] == MIN_LOG + 10
    assert with_log.info["unlabelled"]["left_out_as_scored_queries"] == 2
    assert "re-estimated from" in with_log.system.threshold_source
    plain = evaluate_faq(settings, bank, queries, train, progress=False, encoder=text)
    assert "unlabelled" not in plain.info
    assert "re-estimated" not in plain.system.threshold_source


def test_published_versions_take_no_unlabelled_file(tmp_path: Path) -> None:
    _, _, queries = _shop(tmp_path)
    out = run_cli(
        "eval", "faq", "--published", "--queries", str(queries), "--unlabelled", str(queries)
    )
    assert out.returncode != 0 and "no --unlabelled" in out.stderr
