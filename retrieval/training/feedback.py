"""The agents' feedback in SQL as training anchors.

An agent who *accepted* or *edited* a suggested reply (``agent_actions.action`` ``accept`` /
``edit`` with a ``faq_id``) confirmed that entry answers the shopper's question: a positive
pair. A *rejected* suggestion (``reject`` with a ``faq_id``) is a hard negative for that
question. Questions whose text is gone, or entries no longer in the bank, are skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ..store.models import AgentActionRow, QueryRow
from .pairs import Anchor

__all__ = ["POSITIVE_ACTIONS", "feedback_anchors"]

log = logging.getLogger(__name__)

POSITIVE_ACTIONS = ("accept", "edit")
NEGATIVE_ACTIONS = ("reject",)


def feedback_anchors(engine: Engine, known_ids: Collection[str]) -> list[Anchor]:
    """One anchor per logged question an agent confirmed, with the entries agents rejected
    for it as its negatives. Returns [] when the database has no console tables yet."""
    known = set(known_ids)
    try:
        with Session(engine) as session:
            rows = session.execute(
                select(
                    AgentActionRow.query_id,
                    AgentActionRow.action,
                    AgentActionRow.faq_id,
                    QueryRow.text,
                )
                .join(QueryRow, QueryRow.id == AgentActionRow.query_id)
                .where(AgentActionRow.faq_id.is_not(None))
                .where(AgentActionRow.action.in_(POSITIVE_ACTIONS + NEGATIVE_ACTIONS))
                .order_by(AgentActionRow.id)
            ).all()
    except SQLAlchemyError as exc:
        log.warning("no agent feedback read: %s", str(exc).splitlines()[0])
        return []
    text_of: dict[str, str] = {}
    positive: dict[str, str] = {}
    negatives: dict[str, list[str]] = {}
    for query_id, action, faq_id, text in rows:
        if not text or not text.strip() or faq_id not in known:
            continue
        text_of[query_id] = text.strip()
        if action in POSITIVE_ACTIONS:
            positive[query_id] = faq_id  # the latest confirmation wins
        else:
            negatives.setdefault(query_id, []).append(faq_id)
    out = []
    for query_id, faq_id in positive.items():
        wrong = tuple(dict.fromkeys(n for n in negatives.get(query_id, ()) if n != faq_id))
        out.append(Anchor(text_of[query_id], faq_id, "feedback", wrong))
    return out
