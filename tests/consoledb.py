"""The agent console's tables for store tests: a migrated database, a shopper's question
waiting for an agent, and four agents racing to answer it."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from retrieval.console import actions, auth, tasks
from retrieval.console.replies import replies_for
from retrieval.errors import Conflict
from retrieval.store import make_engine, migrate
from retrieval.store.models import AgentActionRow, AgentRow, CandidateRow, QueryRow


def console_engine(url: str):  # noqa: ANN202
    engine = make_engine(url)
    migrate(engine)
    return engine


def query_row(
    qid: str,
    conversation: str | None,
    text: str | None,
    decision: str = "suggest",
    when: datetime | None = None,
) -> QueryRow:
    """A logged query row with plausible figures (the fields a test does not care about)."""
    return QueryRow(
        id=qid,
        created_at=when or datetime.now(UTC),
        conversation_id=conversation,
        channel="rasa",
        text=text,
        has_image=False,
        decision=decision,
        top_score=0.5,
        answer_threshold=0.6,
        suggest_threshold=0.45,
        encode_ms=1.0,
        search_ms=1.0,
        total_ms=2.0,
    )


def waiting_query(engine, conversation: str = "c" * 20) -> str:  # noqa: ANN001
    qid = str(uuid.uuid4())
    with Session(engine) as s, s.begin():
        s.add(query_row(qid, conversation, "<script>where is my order</script>"))
        s.add(CandidateRow(query_id=qid, kind="faq", rank=1, item_id="order-tracking", score=0.5))
    return qid


def first_writer_race(url: str) -> None:
    """Four agents send a reply to one question at once: one wins, three get a conflict
    naming the winner, and the conversation holds exactly the winner's reply."""
    engine = console_engine(url)
    sessions = []
    for name in ("alice", "bob", "carol", "dave"):
        auth.add_agent(engine, name, "a long enough password")
        sessions.append(auth.login(engine, name, "a long enough password", 60)[1])
    qid = waiting_query(engine)
    version = tasks.question(engine, qid).version
    outcomes: list[object] = []
    barrier = threading.Barrier(len(sessions))

    def send(agent: auth.AgentSession) -> None:
        barrier.wait()
        try:
            outcomes.append(
                actions.act(engine, agent, qid, action="write", version=version, text=agent.name)
            )
        except Conflict as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=send, args=(a,)) for a in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [o for o in outcomes if isinstance(o, actions.ActResult)]
    lost = [o for o in outcomes if isinstance(o, Conflict)]
    assert len(won) == 1 and len(lost) == 3, outcomes
    assert all(f"{won[0].final_text} already answered" in str(e) for e in lost)
    replies = replies_for(engine, "c" * 20)
    assert [r["text"] for r in replies] == [won[0].final_text]
    engine.dispose()


def agent_db(tmp_path):  # noqa: ANN001, ANN201
    """A migrated SQLite log with one agent, ana (id 1), for tests of the agents' labels."""
    engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(engine)
    with Session(engine) as s:
        s.add(AgentRow(id=1, name="ana", password_hash="x"))
        s.commit()
    return engine


def log_agent_actions(
    engine,  # noqa: ANN001
    query_id: str,
    text: str | None,
    *actions: tuple[str, str | None],
) -> None:
    """A logged question and ana's actions on it, in order."""
    with Session(engine) as s:
        s.add(query_row(query_id, "c", text))
        s.flush()
        for action, faq_id in actions:
            s.add(
                AgentActionRow(
                    query_id=query_id, agent_id=1, agent_name="ana", action=action, faq_id=faq_id
                )
            )
        s.commit()
