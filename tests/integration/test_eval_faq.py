"""``retrieval eval faq`` end to end with the real packaged MiniLM, and its input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrieval.cli import main
from retrieval.evaluation.faq import with_training_examples
from retrieval.faq import FAQBank, FAQEntry
from retrieval.labelled import LabelledQuery

from fakes import BANK, QUERIES, TRAIN
from helpers import write_jsonl


@pytest.fixture()
def faq_files(tmp_path: Path) -> dict[str, Path]:
    return {
        "bank": write_jsonl(tmp_path / "bank.jsonl", BANK),
        "queries": write_jsonl(tmp_path / "queries.jsonl", QUERIES),
        "train": write_jsonl(tmp_path / "train.jsonl", TRAIN),
    }


def run(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.models
def test_eval_faq_json_table_and_baselines(faq_files: dict, capsys: pytest.CaptureFixture) -> None:
    f = faq_files
    code, out, _ = run(
        [
            "eval",
            "faq",
            "--bank",
            str(f["bank"]),
            "--queries",
            str(f["queries"]),
            "--train",
            str(f["train"]),
            "--baseline",
            "exact",
            "--baseline",
            "bm25",
            "--json",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0
    lines = out.strip().splitlines()
    result = json.loads(lines[-1])
    for key in (
        "n_queries",
        "hit_at_1",
        "recall_at_5",
        "recall_at_10",
        "mrr_at_10",
        "ndcg_at_10",
        "in_scope_hit_at_1",
        "abstain_precision",
        "abstain_recall",
        "overall_accuracy",
        "threshold",
        "encode_ms_p50",
        "query_ms_p50",
        "query_ms_p95",
    ):
        assert key in result, key
    assert result["n_queries"] == 6 and result["n_in_scope"] == 4
    assert result["hit_at_1"] == 1.0  # four easy paraphrases
    assert result["recall_at_5"] == 1.0
    assert "calibrated on TRAIN (7 questions" in result["threshold_source"]
    # 7 labelled questions are too few to choose an answer head by cross-validation
    assert "answer head: none" in result["threshold_source"]
    # the threshold separates the easy out-of-scope questions
    assert result["overall_accuracy"] >= 5 / 6 and result["abstain_recall"] == 1.0
    assert set(result["baselines"]) == {"exact", "bm25"}
    # on a 12-vector index HNSW is exact
    assert result["baselines"]["exact"]["hit_at_1"] == result["hit_at_1"]
    assert result["baselines"]["bm25"]["hit_at_1"] < 1.0  # no shared words for "credit cards"
    assert "system" in lines[1] and "bm25" in lines[1] and any("hit@1" in x for x in lines)


@pytest.mark.models
def test_eval_faq_without_train_uses_the_default_threshold(
    faq_files: dict, capsys: pytest.CaptureFixture
) -> None:
    code, out, _ = run(
        [
            "eval",
            "faq",
            "--bank",
            str(faq_files["bank"]),
            "--queries",
            str(faq_files["queries"]),
            "--json",
            "--no-progress",
        ],
        capsys,
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert (
        code == 0
        and result["threshold"] == 0.6
        and result["threshold_source"].startswith("default")
    )
    assert "threshold of system: default" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "file not found"),
        ("", "holds no queries"),
        (
            '{"query": "hi", "relevant": ["delivery"]}\n{"query": "x", "relevant": [}\n',
            "queries.jsonl:2: invalid JSON",
        ),
        (
            '{"query": "hi", "relevant": ["nope"]}\n',
            "queries.jsonl:1: field 'relevant': unknown id 'nope'",
        ),
        ('{"query": "hi"}\n', "field 'relevant': missing"),
        ('{"relevant": []}\n', "field 'query'"),
    ],
)
def test_bad_queries_are_one_line_errors(
    faq_files: dict,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    content: str | None,
    message: str,
) -> None:
    queries = tmp_path / "bad" / "queries.jsonl"
    queries.parent.mkdir()
    if content is not None:
        queries.write_text(content, encoding="utf-8")
    code, out, err = run(
        [
            "eval",
            "faq",
            "--bank",
            str(faq_files["bank"]),
            "--queries",
            str(queries),
            "--no-progress",
        ],
        capsys,
    )
    assert code == 2
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err and out == ""


def test_bad_bank_is_a_one_line_error(faq_files: dict, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    bank = write_jsonl(tmp_path / "b.jsonl", [{"id": "x"}])
    code, _, err = run(
        ["eval", "faq", "--bank", str(bank), "--queries", str(faq_files["queries"])], capsys
    )
    assert code == 2 and "b.jsonl:1: field 'answer': missing or empty" in err


def test_training_questions_join_the_bank_once() -> None:
    bank = FAQBank(
        {
            "a": FAQEntry("a", "answer a", "question a", ("ex a",)),
            "b": FAQEntry("b", "answer b"),
        }
    )
    train = [
        LabelledQuery(1, frozenset({"a"}), "ex a"),  # already an example
        LabelledQuery(2, frozenset({"b", "a"}), "new"),  # to the first relevant id only
        LabelledQuery(3, frozenset(), "weather"),  # out of scope: no entry to join
    ]
    out = with_training_examples(bank, train)
    assert out.get("a").examples == ("ex a", "new") and out.get("b").examples == ()


@pytest.mark.models
def test_train_as_examples_grows_the_index(faq_files: dict, capsys: pytest.CaptureFixture) -> None:
    f = faq_files
    code, out, _ = run(
        [
            "eval",
            "faq",
            "--bank",
            str(f["bank"]),
            "--queries",
            str(f["queries"]),
            "--train",
            str(f["train"]),
            "--train-as-examples",
            "--json",
            "--no-progress",
        ],
        capsys,
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and result["train_as_examples"] is True
    assert result["n_vectors"] == 12 + 4 and result["hit_at_1"] == 1.0
