"""The agents' console actions read as calibration labels (retrieval.store.agentlabels), on a
real SQLite database with the project's migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session

from retrieval.store.agentlabels import agent_labels
from retrieval.store.db import make_engine, migrate
from retrieval.store.models import AgentActionRow, AgentRow, QueryRow


def _engine(tmp_path: Path):  # noqa: ANN202
    engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(engine)
    with Session(engine) as s:
        s.add(AgentRow(id=1, name="ana", password_hash="x"))
        s.commit()
    return engine


def _log(engine, query_id: str, text: str | None, *actions: tuple[str, str | None]) -> None:  # noqa: ANN001
    with Session(engine) as s:
        s.add(
            QueryRow(
                id=query_id,
                created_at=datetime.now(UTC),
                conversation_id="c",
                channel="rasa",
                text=text,
                has_image=False,
                decision="suggest",
                top_score=0.5,
                answer_threshold=0.6,
                suggest_threshold=0.45,
                encode_ms=1.0,
                search_ms=1.0,
                total_ms=2.0,
            )
        )
        s.flush()
        for action, faq_id in actions:
            s.add(
                AgentActionRow(
                    query_id=query_id, agent_id=1, agent_name="ana", action=action, faq_id=faq_id
                )
            )
        s.commit()


def test_each_action_gives_its_label_and_the_latest_decisive_one_wins(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    known = {"delivery", "returns"}
    _log(engine, "q1", "when will it arrive", ("accept", "delivery"))
    _log(engine, "q2", "can I send it back", ("edit", "returns"))
    _log(engine, "q3", "do you sell bikes", ("write", None))
    _log(engine, "q4", "what is the meaning of life", ("reject", None))
    _log(engine, "q5", "track my parcel", ("flag", None))  # the bot's answer was wrong
    _log(engine, "q6", "return window?", ("flag", None), ("accept", "returns"))
    _log(engine, "q7", "refund?", ("accept", "returns"), ("flag", None))
    _log(engine, "q8", "old entry", ("accept", "gone-entry"))  # no longer in the bank
    _log(engine, "q9", None, ("write", None))  # a photo: no text
    _log(engine, "q10", "  ", ("reject", None))
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
