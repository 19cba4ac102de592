"""Agents' replies in a conversation, as the shop page's chat reads them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from ..store.models import AgentActionRow
from .auth import utc
from .tasks import REPLY_ACTIONS

__all__ = ["replies_for"]


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
