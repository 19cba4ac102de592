"""The agents' console actions read as calibration labels (retrieval.store.agentlabels), on a
real SQLite database with the project's migrations."""

from __future__ import annotations

from pathlib import Path

from retrieval.store.agentlabels import agent_labels
from retrieval.store.db import make_engine

from consoledb import agent_db, log_agent_actions


def test_each_action_gives_its_label_and_the_latest_decisive_one_wins(tmp_path: Path) -> None:
    engine = agent_db(tmp_path)
    known = {"delivery", "returns"}
    log_agent_actions(engine, "q1", "when will it arrive", ("accept", "delivery"))
    log_agent_actions(engine, "q2", "can I send it back", ("edit", "returns"))
    log_agent_actions(engine, "q3", "do you sell bikes", ("write", None))
    log_agent_actions(engine, "q4", "what is the meaning of life", ("reject", None))
    log_agent_actions(engine, "q5", "track my parcel", ("flag", None))  # the bot's answer was wrong
    log_agent_actions(engine, "q6", "return window?", ("flag", None), ("accept", "returns"))
    log_agent_actions(engine, "q7", "refund?", ("accept", "returns"), ("flag", None))
    log_agent_actions(engine, "q8", "old entry", ("accept", "gone-entry"))  # no longer in the bank
    log_agent_actions(engine, "q9", None, ("write", None))  # a photo: no text
    log_agent_actions(engine, "q10", "  ", ("reject", None))
    got = {
        lab.query_id: (lab.text, lab.entry_id, lab.action) for lab in agent_labels(engine, known)
    }
    assert got == {
        "q1": ("when will it arrive", "delivery", "accept"),
        "q2": ("can I send it back", "returns", "edit"),
        "q3": ("do you sell bikes", None, "write"),
        "q4": ("what is the meaning of life", None, "reject"),
        "q5": ("track my parcel", None, "flag"),
        "q6": ("return window?", "returns", "accept"),
        "q7": ("refund?", "returns", "accept"),
    }
    assert [lab.relevant for lab in agent_labels(engine, known)][:3] == [
        {"delivery"},
        {"returns"},
        set(),
    ]


def test_a_database_without_console_tables_gives_no_labels(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    assert agent_labels(engine, {"delivery"}) == []
