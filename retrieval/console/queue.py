"""The agents' work: the queue of waiting questions, acting on one, the audit list, flags.

A question waits for an agent when the query log holds it with decision ``suggest`` or
``handoff`` and a conversation id (it came through the chat). The console keeps one
``agent_tasks`` row per such question, created when a queue is read. Every change to a task
is a conditional UPDATE that names the version the agent saw: the first writer wins, and a
second agent (or an old form) changes nothing and gets :class:`Conflict` saying who acted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ..errors import Conflict, InputError, NotFound, TooLarge
from ..store.models import (
    AgentActionRow,
    AgentRow,
    AgentTaskRow,
    CandidateRow,
    DecisionRow,
    QueryRow,
)
from .auth import AgentSession, utc

__all__ = [
    "REPLY_ACTIONS",
    "ActResult",
    "AuditItem",
    "Question",
    "QueueItem",
    "Suggestion",
    "Turn",
    "act",
    "audit",
    "claim",
    "flag",
    "question",
    "queue",
    "replies_for",
    "sync_tasks",
]

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class ActResult:
    action_id: int
    action: str
    query_id: str
    conversation_id: str
    final_text: str | None
    version: int


@dataclass(frozen=True)
class AuditItem:
    query_id: str
    created_at: datetime
    conversation_id: str | None
    text: str
    decision: str
    top_score: float | None
    top_faq: str | None
    flags: int


def _now() -> datetime:
    return datetime.now(UTC)


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


def _task(s: Session, engine: Engine, query_id: str) -> tuple[QueryRow, AgentTaskRow | None]:
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
        q, task = _task(s, engine, query_id)
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


def claim(engine: Engine, agent: AgentSession, query_id: str, ttl_s: float) -> bool:
    """Reserve an open question for this agent (or take over an expired claim)."""
    now = _now()
    with engine.begin() as conn:
        res = conn.execute(
            update(AgentTaskRow)
            .where(
                AgentTaskRow.query_id == query_id,
                or_(
                    AgentTaskRow.status == "open",
                    and_(
                        AgentTaskRow.status == "claimed",
                        AgentTaskRow.claimed_by != agent.agent_id,
                        AgentTaskRow.claimed_at < now - timedelta(seconds=ttl_s),
                    ),
                ),
            )
            .values(
                status="claimed",
                claimed_by=agent.agent_id,
                claimed_at=now,
                version=AgentTaskRow.version + 1,
            )
        )
        return res.rowcount == 1


def _why_not(s: Session, query_id: str, version: int, agent: AgentSession) -> Conflict:
    task = s.get(AgentTaskRow, query_id)
    if task is None:
        return Conflict("this question is not waiting for an agent")
    if task.status in ("answered", "rejected"):
        who = s.get(AgentRow, task.resolved_by) if task.resolved_by else None
        name = "you" if who and who.id == agent.agent_id else (who.name if who else "another agent")
        at = utc(task.resolved_at).strftime("%H:%M:%S UTC") if task.resolved_at else ""
        return Conflict(
            f"{name} already {task.status} this question at {at}; nothing was sent again"
        )
    if task.status == "claimed" and task.claimed_by != agent.agent_id:
        who = s.get(AgentRow, task.claimed_by)
        return Conflict(
            f"{who.name if who else 'another agent'} is answering this question; nothing was sent"
        )
    return Conflict(
        f"this question changed since you opened it (version {version}, now {task.version}): "
        "reload the page; nothing was sent"
    )


def check_reply(text: object, max_chars: int) -> str:
    if not isinstance(text, str):
        raise InputError("the reply must be text")
    text = text.replace("\x00", "").replace("\r\n", "\n").strip()
    if not text:
        raise InputError("the reply is empty: write a reply or accept a suggestion")
    if len(text) > max_chars:
        raise TooLarge(f"the reply is {len(text):,} characters long; keep it under {max_chars:,}")
    return text


def act(
    engine: Engine,
    agent: AgentSession,
    query_id: str,
    *,
    action: str,
    version: int,
    faq: Any = None,
    candidate_id: int | None = None,
    text: str | None = None,
    reason: str = "",
    opened_ms: float | None = None,
    claim_ttl_s: float = 600,
    max_chars: int = 4000,
) -> ActResult:
    """Accept a suggestion, send it edited, write a new reply, or reject all suggestions.

    Stores the action (with the decision it makes) only if the task is still at ``version``
    and not held by another agent; otherwise raises :class:`Conflict` naming who acted."""
    if action not in (*REPLY_ACTIONS, "reject"):
        raise InputError(f"unknown action {action!r}: use accept, edit, write or reject")
    reason = (reason or "").strip()
    if len(reason) > 2000:
        raise TooLarge("the reason is too long; keep it under 2,000 characters")
    now = _now()
    with Session(engine) as s:
        q, task = _task(s, engine, query_id)
        if not q.conversation_id:
            raise InputError(
                "this question came without a conversation (an API call): there is no chat to reply to"
            )
        if task is None:
            raise Conflict(
                f"this question was {q.decision}ed by the bot; it is not waiting for an agent"
            )
        cand: CandidateRow | None = None
        suggested = None
        if action in ("accept", "edit"):
            if candidate_id is None:
                raise InputError(f"choose the suggestion to {action}")
            cand = s.get(CandidateRow, candidate_id)
            if cand is None or cand.query_id != q.id or cand.kind != "faq":
                raise InputError(f"suggestion {candidate_id} does not belong to this question")
            entry = faq.get(cand.item_id) if faq is not None else None
            if entry is None:
                raise InputError(
                    f"FAQ entry '{cand.item_id}' is no longer in the answer bank: write the reply"
                )
            suggested = entry.answer
        if action == "accept":
            final = suggested
        elif action in ("edit", "write"):
            final = check_reply(text, max_chars)
            if action == "edit" and final == (suggested or "").strip():
                action = "accept"  # sent unchanged
        else:
            final = None
        conversation_id = q.conversation_id
        wait_ms = (now - utc(q.created_at)).total_seconds() * 1e3
    handle_ms = None
    if opened_ms is not None and 0 <= now.timestamp() * 1e3 - opened_ms <= 86_400_000:
        handle_ms = now.timestamp() * 1e3 - opened_ms
    status = "rejected" if action == "reject" else "answered"
    with Session(engine) as s, s.begin():
        res = s.execute(
            update(AgentTaskRow)
            .where(
                AgentTaskRow.query_id == query_id,
                AgentTaskRow.version == version,
                AgentTaskRow.status.in_(OPEN),
                or_(
                    AgentTaskRow.claimed_by.is_(None),
                    AgentTaskRow.claimed_by == agent.agent_id,
                    AgentTaskRow.claimed_at < now - timedelta(seconds=claim_ttl_s),
                ),
            )
            .values(
                status=status,
                version=version + 1,
                resolved_by=agent.agent_id,
                resolved_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if res.rowcount != 1:
            raise _why_not(s, query_id, version, agent)
        row = AgentActionRow(
            query_id=query_id,
            conversation_id=conversation_id,
            agent_id=agent.agent_id,
            agent_name=agent.name,
            created_at=now,
            action=action,
            candidate_id=cand.id if cand else None,
            faq_id=cand.item_id if cand else None,
            candidate_rank=cand.rank if cand else None,
            suggested_text=suggested,
            final_text=final,
            reason=reason,
            wait_ms=wait_ms,
            handle_ms=handle_ms,
            rasa_delivered=None,
            rasa_detail="",
        )
        s.add(row)
        s.add(
            DecisionRow(
                query_id=query_id,
                created_at=now,
                actor=agent.name,
                decision="reject" if action == "reject" else "answer",
                reason=f"agent {action}" + (f": {reason}" if reason else ""),
            )
        )
        s.flush()
        return ActResult(row.id, action, query_id, conversation_id, final, version + 1)


def record_delivery(engine: Engine, action_id: int, delivered: bool, detail: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(AgentActionRow)
            .where(AgentActionRow.id == action_id)
            .values(rasa_delivered=delivered, rasa_detail=detail[:2000])
        )


def flag(engine: Engine, agent: AgentSession, query_id: str, reason: str = "") -> int:
    """Flag an automatic answer as bad; returns the flag's action id."""
    reason = (reason or "").strip()
    if len(reason) > 2000:
        raise TooLarge("the reason is too long; keep it under 2,000 characters")
    with Session(engine) as s, s.begin():
        q = s.get(QueryRow, query_id)
        if q is None:
            raise NotFound(f"no query with id '{query_id}'")
        if s.scalar(
            select(AgentActionRow.id).where(
                AgentActionRow.query_id == query_id,
                AgentActionRow.action == "flag",
                AgentActionRow.agent_id == agent.agent_id,
            )
        ):
            raise Conflict("you already flagged this answer")
        top = next((c for c in q.candidates if c.kind == "faq" and c.rank == 1), None)
        row = AgentActionRow(
            query_id=query_id,
            conversation_id=q.conversation_id,
            agent_id=agent.agent_id,
            agent_name=agent.name,
            created_at=_now(),
            action="flag",
            candidate_id=top.id if top else None,
            faq_id=top.item_id if top else None,
            candidate_rank=1 if top else None,
            reason=reason,
            rasa_detail="",
        )
        s.add(row)
        s.flush()
        return row.id


def parse_day(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InputError(f"{name} must be a date like 2026-11-30, not {value[:40]!r}") from None


def audit(
    engine: Engine,
    *,
    day_from: date | None = None,
    day_to: date | None = None,
    decision: str | None = "answer",
    limit: int = 200,
) -> list[AuditItem]:
    """Logged queries, newest first, filtered by day (UTC, inclusive) and decision."""
    if decision and decision not in ("answer", "suggest", "handoff"):
        raise InputError(f"decision must be answer, suggest or handoff, not {decision[:40]!r}")
    cond = []
    if decision:
        cond.append(QueryRow.decision == decision)
    if day_from:
        cond.append(
            QueryRow.created_at >= datetime(day_from.year, day_from.month, day_from.day, tzinfo=UTC)
        )
    if day_to:
        end = datetime(day_to.year, day_to.month, day_to.day, tzinfo=UTC) + timedelta(days=1)
        cond.append(QueryRow.created_at < end)
    flags = (
        select(AgentActionRow.query_id, func.count().label("n"))
        .where(AgentActionRow.action == "flag")
        .group_by(AgentActionRow.query_id)
        .subquery()
    )
    top = (
        select(CandidateRow.query_id, CandidateRow.item_id)
        .where(CandidateRow.kind == "faq", CandidateRow.rank == 1)
        .subquery()
    )
    with Session(engine) as s:
        rows = s.execute(
            select(QueryRow, top.c.item_id, flags.c.n)
            .outerjoin(top, top.c.query_id == QueryRow.id)
            .outerjoin(flags, flags.c.query_id == QueryRow.id)
            .where(*cond)
            .order_by(QueryRow.created_at.desc())
            .limit(limit)
        ).all()
    return [
        AuditItem(
            q.id,
            utc(q.created_at),
            q.conversation_id,
            q.text or ("(a photo)" if q.has_image else ""),
            q.decision,
            q.top_score,
            faq_id,
            n or 0,
        )
        for q, faq_id, n in rows
    ]


def replies_for(engine: Engine, conversation_id: str, after: int = 0) -> list[dict[str, Any]]:
    """Agents' replies in one conversation with an id above ``after`` (for the shop page)."""
    with Session(engine) as s:
        rows = s.execute(
            select(
                AgentActionRow.id,
                AgentActionRow.final_text,
                AgentActionRow.agent_name,
                AgentActionRow.created_at,
            )
            .where(
                AgentActionRow.conversation_id == conversation_id,
                AgentActionRow.id > after,
                AgentActionRow.action.in_(REPLY_ACTIONS),
            )
            .order_by(AgentActionRow.id)
            .limit(50)
        ).all()
    return [{"id": i, "text": t, "agent": n, "at": utc(c).isoformat()} for i, t, n, c in rows]
