"""The agents' actions in the console read as labelled questions.

What an agent did with a logged question says what the question was:

* **accepted** or **edited** suggestion X: an in-scope question of entry X;
* **wrote** a new reply, or **rejected** every suggestion: a question the bank does not
  answer (out of scope). This label is noisy: a written reply can also mean that the right
  entry was ranked below the suggestions shown (``benchmarks/agent_labels.py`` measures
  how often, and the hand-off fit weighs these labels with ``agent_label_weight``);
* **flagged** the bot's automatic answer: the answer was wrong; the question is taken as out
  of scope, unless an agent later answered it with a suggestion (then that wins).

The latest decisive action on a question wins. Questions without text, and entries no
longer in the bank, are skipped. :func:`agent_labels` is what ingest and re-index add to the
calibration file's labels (:mod:`retrieval.shop_labels`); ``retrieval train`` reads the
accept/edit pairs, with the rejected entries as hard negatives, through
:mod:`retrieval.training.feedback`. Both read the one query of :func:`agent_actions`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from .models import AgentActionRow, QueryRow

__all__ = [
    "IN_SCOPE_ACTIONS",
    "OUT_OF_SCOPE_ACTIONS",
    "ActionRow",
    "AgentLabel",
    "agent_actions",
    "agent_labels",
]

log = logging.getLogger(__name__)

IN_SCOPE_ACTIONS = ("accept", "edit")
OUT_OF_SCOPE_ACTIONS = ("write", "reject", "flag")


@dataclass(frozen=True)
class ActionRow:
    """One agent action on a logged question, with the question's text (stripped)."""

    query_id: str
    action: str
    faq_id: str | None
    text: str


def agent_actions(engine: Engine, actions: Sequence[str]) -> list[ActionRow]:
    """The agents' ``actions`` on logged questions that still have text, oldest first.
    Returns [] (with a warning) when the database has no console tables yet or cannot be
    read: learning from agents is an extra, never a reason for a build to fail."""
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
                .where(AgentActionRow.action.in_(tuple(actions)))
                .order_by(AgentActionRow.id)
            ).all()
    except SQLAlchemyError as exc:
        log.warning("no agent actions read: %s", str(exc).splitlines()[0])
        return []
    return [
        ActionRow(query_id, action, faq_id, text.strip())
        for query_id, action, faq_id, text in rows
        if text and text.strip()
    ]


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
    """One label per logged question an agent acted on (see the module), oldest first."""
    known = set(known_ids)
    labels: dict[str, AgentLabel] = {}
    for row in agent_actions(engine, IN_SCOPE_ACTIONS + OUT_OF_SCOPE_ACTIONS):
        if row.action in IN_SCOPE_ACTIONS:
            if row.faq_id not in known:
                continue  # the entry left the bank: the label says nothing about this bank
            labels[row.query_id] = AgentLabel(row.query_id, row.text, row.faq_id, row.action)
        elif (
            row.action == "flag"
            and row.query_id in labels
            and labels[row.query_id].entry_id is not None
        ):
            continue  # an agent's confirmed answer outranks a flag on the bot's
        else:
            labels[row.query_id] = AgentLabel(row.query_id, row.text, None, row.action)
    return list(labels.values())
