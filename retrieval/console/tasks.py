"""Questions waiting for an agent: their task rows, the queue, and one question as the agent
sees it.

A question waits for an agent when the query log holds it with decision ``suggest`` or
``handoff`` and a conversation id (it came through the chat). The console keeps one
``agent_tasks`` row per such question, created when a queue is read (:func:`sync_tasks`).
:func:`question` shows one with the bot's suggestions, its product matches, the conversation
so far and what agents did with it; acting on it is :mod:`.actions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ..conversation.preferences import describe
from ..errors import NotFound
from ..store.models import AgentActionRow, AgentRow, AgentTaskRow, ConversationRow, QueryRow
from .auth import utc

__all__ = [
    "OPEN",
    "REPLY_ACTIONS",
    "WAITING",
    "Question",
    "QueueItem",
    "ShownProduct",
    "Suggestion",
    "Turn",
    "query_and_task",
    "question",
    "queue",
    "sync_tasks",
]

WAITING = ("suggest", "handoff")
OPEN = ("open", "claimed")
REPLY_ACTIONS = ("accept", "edit", "write")


@dataclass(frozen=True)
class Suggestion:
    candidate_id: int
    rank: int
    faq_id: str
    score: float
    matched: str | None
    question: str
    answer: str | None  # None: the entry is no longer in the FAQ bank


@dataclass(frozen=True)
class ShownProduct:
    """A product the query log shows for a question (the agent sees what the bot matched)."""

    product_id: str
    rank: int
    score: float
    title: str
    price: str


@dataclass(frozen=True)
class Turn:
    at: datetime
    who: str  # "shopper" | "bot" | "agent"
    text: str
    note: str = ""
    current: bool = False


@dataclass(frozen=True)
class QueueItem:
    query_id: str
    conversation_id: str
    created_at: datetime
    text: str
    decision: str
    top_score: float | None
    status: str
    claimed_by: str | None
    waiting_in_conversation: int


@dataclass
class Question:
    query_id: str
    conversation_id: str | None
    created_at: datetime
    text: str
    image_ref: str | None
    decision: str
    top_score: float | None
    status: str
    version: int
    claimed_by: str | None
    claimed_at: datetime | None
    suggestions: list[Suggestion] = field(default_factory=list)
    products: list[ShownProduct] = field(default_factory=list)
    conversation: list[Turn] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    # what the bot remembers of the conversation: the cards it last showed (id, title) and
    # the shopper's preferences in words (docs/conversation.md)
    remembered_products: list[dict[str, str]] = field(default_factory=list)
    preferences: list[str] = field(default_factory=list)


def _insert(engine: Engine):  # noqa: ANN202 - a dialect's INSERT with ON CONFLICT
    return (postgresql if engine.dialect.name == "postgresql" else sqlite).insert


def sync_tasks(engine: Engine, limit: int = 2000) -> int:
    """Create task rows for waiting questions that have none yet; returns how many."""
    with Session(engine) as s:
        rows = s.execute(
            select(QueryRow.id, QueryRow.conversation_id, QueryRow.created_at)
            .outerjoin(AgentTaskRow, AgentTaskRow.query_id == QueryRow.id)
            .where(
                QueryRow.decision.in_(WAITING),
                QueryRow.conversation_id.is_not(None),
                AgentTaskRow.query_id.is_(None),
            )
            .order_by(QueryRow.created_at)
            .limit(limit)
        ).all()
    if not rows:
        return 0
    values = [
        {"query_id": q, "conversation_id": c, "created_at": t, "status": "open", "version": 1}
        for q, c, t in rows
    ]
    stmt = _insert(engine)(AgentTaskRow).values(values).on_conflict_do_nothing()
    with engine.begin() as conn:
        conn.execute(stmt)
    return len(rows)


def queue(engine: Engine, limit: int = 200) -> list[QueueItem]:
    """Questions waiting for an agent, oldest first."""
    sync_tasks(engine)
    with Session(engine) as s:
        rows = s.execute(
            select(AgentTaskRow, QueryRow, AgentRow.name)
            .join(QueryRow, QueryRow.id == AgentTaskRow.query_id)
            .outerjoin(AgentRow, AgentRow.id == AgentTaskRow.claimed_by)
            .where(AgentTaskRow.status.in_(OPEN))
            .order_by(AgentTaskRow.created_at)
            .limit(limit)
        ).all()
    per_conversation: dict[str, int] = {}
    for task, _, _ in rows:
        per_conversation[task.conversation_id] = per_conversation.get(task.conversation_id, 0) + 1
    return [
        QueueItem(
            query_id=task.query_id,
            conversation_id=task.conversation_id,
            created_at=utc(task.created_at),
            text=q.text or ("(a photo)" if q.has_image else ""),
            decision=q.decision,
            top_score=q.top_score,
            status=task.status,
            claimed_by=name,
            waiting_in_conversation=per_conversation[task.conversation_id],
        )
        for task, q, name in rows
    ]


def query_and_task(
    s: Session, engine: Engine, query_id: str
) -> tuple[QueryRow, AgentTaskRow | None]:
    """A logged query and its task row (made now if the question waits without one)."""
    q = s.get(QueryRow, query_id)
    if q is None:
        raise NotFound(f"no question with id '{query_id}': the conversation may have been deleted")
    task = s.get(AgentTaskRow, query_id)
    if task is None and q.decision in WAITING and q.conversation_id:
        sync_tasks(engine)
        task = s.get(AgentTaskRow, query_id)
    return q, task


def _bot_text(q: QueryRow, faq: Any, catalog: Any) -> tuple[str, str]:
    """What the bot said to a logged query, as far as the log tells (text, note)."""
    faqs = [c for c in q.candidates if c.kind == "faq"]
    products = [c for c in q.candidates if c.kind == "product"]
    if q.decision == "answer":
        if faqs and (faqs[0].score >= q.answer_threshold):
            entry = faq.get(faqs[0].item_id) if faq is not None else None
            text = entry.answer if entry is not None else f"(FAQ entry {faqs[0].item_id})"
            return text, f"FAQ {faqs[0].item_id}, score {faqs[0].score:.3f}"
        titles = []
        for c in products[:3]:
            p = catalog.get(c.item_id) if catalog is not None else None
            titles.append(p.title if p is not None else c.item_id)
        return "Product matches: " + ", ".join(titles), "product cards"
    return "(handed to an agent)", q.decision


def question(engine: Engine, query_id: str, faq: Any = None, catalog: Any = None) -> Question:
    """One question with its suggestions, product matches and the conversation so far."""
    with Session(engine) as s:
        q, task = query_and_task(s, engine, query_id)
        claimer = s.get(AgentRow, task.claimed_by) if task and task.claimed_by else None
        out = Question(
            query_id=q.id,
            conversation_id=q.conversation_id,
            created_at=utc(q.created_at),
            text=q.text or "",
            image_ref=q.image_ref,
            decision=q.decision,
            top_score=q.top_score,
            status=task.status if task else "not-waiting",
            version=task.version if task else 0,
            claimed_by=claimer.name if claimer else None,
            claimed_at=utc(task.claimed_at) if task and task.claimed_at else None,
        )
        for c in q.candidates:
            if c.kind == "faq":
                entry = faq.get(c.item_id) if faq is not None else None
                out.suggestions.append(
                    Suggestion(
                        c.id,
                        c.rank,
                        c.item_id,
                        c.score,
                        c.matched,
                        entry.question if entry is not None else "",
                        entry.answer if entry is not None else None,
                    )
                )
            elif c.kind == "product":
                p = catalog.get(c.item_id) if catalog is not None else None
                price = (
                    f"{p.price:.2f} {p.currency}".strip()
                    if p is not None and p.price is not None
                    else ""
                )
                out.products.append(
                    ShownProduct(c.item_id, c.rank, c.score, p.title if p else c.item_id, price)
                )
        out.suggestions.sort(key=lambda x: x.rank)
        out.products.sort(key=lambda x: x.rank)
        if q.conversation_id:
            turns: list[Turn] = []
            history = s.scalars(
                select(QueryRow)
                .where(QueryRow.conversation_id == q.conversation_id)
                .order_by(QueryRow.created_at)
                .limit(200)
            ).all()
            for h in history:
                text = h.text or ("(a photo)" if h.has_image else "")
                turns.append(Turn(utc(h.created_at), "shopper", text, current=h.id == q.id))
                bot, note = _bot_text(h, faq, catalog)
                turns.append(Turn(utc(h.created_at), "bot", bot, note))
            for a in s.scalars(
                select(AgentActionRow)
                .where(
                    AgentActionRow.conversation_id == q.conversation_id,
                    AgentActionRow.action.in_(REPLY_ACTIONS),
                )
                .order_by(AgentActionRow.id)
            ):
                turns.append(Turn(utc(a.created_at), "agent", a.final_text or "", a.agent_name))
            out.conversation = sorted(turns, key=lambda t: t.at)
            context = s.get(ConversationRow, q.conversation_id)
            if context is not None:
                for pid in context.products or ():
                    p = catalog.get(pid) if catalog is not None else None
                    out.remembered_products.append(
                        {"id": str(pid), "title": p.title if p is not None else str(pid)}
                    )
                out.preferences = [describe([p]) for p in context.preferences or ()]
        out.actions = [
            {
                "id": a.id,
                "at": utc(a.created_at),
                "agent": a.agent_name,
                "action": a.action,
                "faq_id": a.faq_id,
                "text": a.final_text,
                "reason": a.reason,
                "rasa_delivered": a.rasa_delivered,
            }
            for a in s.scalars(
                select(AgentActionRow)
                .where(AgentActionRow.query_id == q.id)
                .order_by(AgentActionRow.id)
            )
        ]
        return out
