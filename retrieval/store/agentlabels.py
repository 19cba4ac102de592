"""The agents' actions in the console read as labelled questions for the FAQ's calibration.

What an agent did with a logged question says what the question was:

* **accepted** or **edited** suggestion X: an in-scope question of entry X;
* **wrote** a new reply, or **rejected** every suggestion: a question the bank does not
  answer (out of scope). This label is noisy: a written reply can also mean that the right
  entry was ranked below the suggestions shown;
* **flagged** the bot's automatic answer: the answer was wrong; the question is taken as out
  of scope, unless an agent later answered it with a suggestion (then that wins).

The latest decisive action on a question wins. Questions without text, and entries no
longer in the bank, are skipped. Re-index and ingest add these labels to the calibration
file's when they fit the hand-off signal and the thresholds; ``retrieval train`` reads the
accept/edit pairs through :mod:`retrieval.training.feedback`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from .models import AgentActionRow, QueryRow

__all__ = ["IN_SCOPE_ACTIONS", "OUT_OF_SCOPE_ACTIONS", "AgentLabel", "agent_labels"]

log = logging.getLogger(__name__)

IN_SCOPE_ACTIONS = ("accept", "edit")
OUT_OF_SCOPE_ACTIONS = ("write", "reject", "flag")


@dataclass(frozen=True)
class AgentLabel:
    query_id: str
    text: str
    entry_id: str | None  # None: out of scope
    action: str  # the action the label comes from

    @property
    def relevant(self) -> set[str]:
        """The calibration file's form: the relevant entry ids (empty: out of scope)."""
        return set() if self.entry_id is None else {self.entry_id}


def agent_labels(engine: Engine, known_ids: Collection[str]) -> list[AgentLabel]:
    """One label per logged question an agent acted on (see the module), oldest first.
    Returns [] when the database has no console tables yet or cannot be read."""
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
                .where(AgentActionRow.action.in_(IN_SCOPE_ACTIONS + OUT_OF_SCOPE_ACTIONS))
                .order_by(AgentActionRow.id)
            ).all()
    except SQLAlchemyError as exc:
        log.warning("no agent labels read: %s", str(exc).splitlines()[0])
        return []
    labels: dict[str, AgentLabel] = {}
    for query_id, action, faq_id, text in rows:
        if not text or not text.strip():
            continue
        if action in IN_SCOPE_ACTIONS:
            if faq_id not in known:
                continue  # the entry left the bank: the label says nothing about this bank
            labels[query_id] = AgentLabel(query_id, text.strip(), faq_id, action)
        elif action == "flag" and query_id in labels and labels[query_id].entry_id is not None:
            continue  # an agent's confirmed answer outranks a flag on the bot's
        else:
            labels[query_id] = AgentLabel(query_id, text.strip(), None, action)
    return list(labels.values())
