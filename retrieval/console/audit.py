"""The audit of logged queries: the bot's decisions by day, with the top FAQ entry and the
number of agents' flags on each."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from ..errors import InputError
from ..store.models import AgentActionRow, CandidateRow, QueryRow
from .auth import utc

__all__ = ["AuditItem", "audit", "parse_day"]


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
