"""The agents' actions on a waiting question: claim it, answer it (accept, edit or write a
reply), reject the suggestions, flag an automatic answer, record the reply's delivery.

Every change to a task is a conditional UPDATE that names the version the agent saw: the
first writer wins, and a second agent (or an old form) changes nothing and gets
:class:`Conflict` saying who acted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, or_, select, update
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
from .tasks import OPEN, REPLY_ACTIONS, query_and_task

__all__ = ["ActResult", "act", "check_reply", "claim", "flag", "record_delivery"]


@dataclass(frozen=True)
class ActResult:
    action_id: int
    action: str
    query_id: str
    conversation_id: str
    final_text: str | None
    version: int


def _now() -> datetime:
    return datetime.now(UTC)


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
        q, task = query_and_task(s, engine, query_id)
        if not q.conversation_id:
            raise Conflict(
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
