"""``retrieval eval dialogues``: the file format's checks and how a turn is judged."""

from __future__ import annotations

import json

import pytest

from retrieval.errors import InputError
from retrieval.evaluation.dialogues import check_turn, load_dialogues, read_reply, summarise

from helpers import DATA


def group(faq_id: str) -> str:
    return faq_id.removesuffix("-zh")


def test_the_shipped_dialogues_load() -> None:
    dialogues = load_dialogues(DATA / "eval" / "dialogues.jsonl")
    assert len(dialogues) >= 30
    assert {d.lang for d in dialogues} == {"en", "zh"}
    assert all(2 <= len(d.turns) <= 4 for d in dialogues)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not JSON"),
        ('{"id": "a"}', "'turns'"),
        ('{"id": "a", "turns": [{"user": "hi"}]}', "needs 'expect'"),
        ('{"id": "a", "turns": [{"user": "hi", "expect": {"colour": "red"}}]}', "unknown expect"),
        ('{"id": "a", "turns": [{"user": "hi", "expect": {"products": "x"}}]}', "list of texts"),
    ],
)
def test_mistakes_in_the_file_name_the_line(tmp_path, line: str, message: str) -> None:  # noqa: ANN001
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "ok", "turns": [{"user": "hi", "expect": {"clarify": true}}]}\n' + line)
    with pytest.raises(InputError, match=f"d.jsonl:2.*{message}"):
        load_dialogues(path)


def test_reading_the_bots_messages() -> None:
    got = read_reply(
        [
            {"text": "Oat Milk costs 2.44 EUR."},
            {"custom": {"type": "products", "products": [{"id": "oat"}, {"id": "soy"}]}},
            {"custom": {"type": "answer", "faq_id": "delivery"}},
        ]
    )
    assert got["products"] == ["oat", "soy"] and got["faq"] == "delivery"
    assert not got["clarify"] and not got["handoff"] and "2.44" in got["text"]
    assert read_reply([{"custom": {"handoff": True}}])["handoff"] is True
    assert read_reply([{"custom": {"type": "clarify"}}])["clarify"] is True


def test_judging_a_turn() -> None:
    got = read_reply(
        [
            {
                "text": "豆奶的价格是 2.31 EUR。",
                "custom": {"type": "products", "products": [{"id": "soy"}]},
            }
        ]
    )
    assert (
        check_turn({"products": ["#2"], "says": ["2.31"], "lang": "zh"}, got, ["oat", "soy"], group)
        == []
    )
    problems = check_turn({"products": ["#1"], "lang": "en", "says": ["3.00"]}, got, ["oat"], group)
    assert len(problems) == 3
    answer = read_reply(
        [{"text": "运费为4.90欧元。", "custom": {"type": "answer", "faq_id": "delivery-cost-zh"}}]
    )
    assert check_turn({"faq": "delivery-cost"}, answer, [], group) == []  # same group
    assert check_turn({"faq": "returns"}, answer, [], group)
    assert check_turn({"clarify": True}, answer, [], group) == ["expected a clarifying question"]


def test_the_summary_counts_dialogues_and_turns() -> None:
    from retrieval.evaluation.dialogues import TurnOutcome

    outcomes = [
        TurnOutcome("a", 1, "x", {}, ms=10.0),
        TurnOutcome("a", 2, "y", {}, ms=20.0, problems=["wrong"]),
        TurnOutcome("b", 1, "z", {}, ms=30.0),
    ]
    s = summarise(outcomes)
    assert (s["dialogues_right"], s["dialogues"], s["turns_right"], s["turns"]) == (1, 2, 2, 3)
    assert s["wrong"] == [{"dialogue": "a", "turn": 2, "user": "y", "problems": ["wrong"]}]
    json.dumps(s)
