"""The agents' feedback in SQL as training anchors.

An agent who *accepted* or *edited* a suggested reply (``agent_actions.action`` ``accept`` /
``edit`` with a ``faq_id``) confirmed that entry answers the shopper's question: a positive
pair. A *rejected* suggestion (``reject`` with a ``faq_id``) is a hard negative for that
question. Questions whose text is gone, or entries no longer in the bank, are skipped.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import Engine

from ..store.agentlabels import IN_SCOPE_ACTIONS, agent_actions
from .pairs import Anchor

__all__ = ["POSITIVE_ACTIONS", "feedback_anchors"]

POSITIVE_ACTIONS = IN_SCOPE_ACTIONS
NEGATIVE_ACTIONS = ("reject",)


def feedback_anchors(engine: Engine, known_ids: Collection[str]) -> list[Anchor]:
    """One anchor per logged question an agent confirmed, with the entries agents rejected
    for it as its negatives. Returns [] when the database has no console tables yet."""
    known = set(known_ids)
    text_of: dict[str, str] = {}
    positive: dict[str, str] = {}
    negatives: dict[str, list[str]] = {}
    for row in agent_actions(engine, POSITIVE_ACTIONS + NEGATIVE_ACTIONS):
        if row.faq_id is None or row.faq_id not in known:
            continue
        text_of[row.query_id] = row.text
        if row.action in POSITIVE_ACTIONS:
            positive[row.query_id] = row.faq_id  # the latest confirmation wins
        else:
            negatives.setdefault(row.query_id, []).append(row.faq_id)
    out = []
    for query_id, faq_id in positive.items():
        wrong = tuple(dict.fromkeys(n for n in negatives.get(query_id, ()) if n != faq_id))
        out.append(Anchor(text_of[query_id], faq_id, "feedback", wrong))
    return out
