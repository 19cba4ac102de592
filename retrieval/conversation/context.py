"""What one conversation remembers between turns, kept in SQL (table ``conversations``).

Rasa's tracker lives in the Rasa process's memory; a restarted Rasa would forget what the
shopper was shown. The bot's actions therefore read and write the context here on every
turn (one primary-key SELECT and one UPSERT), and only mirror it into Rasa slots.

Bounded: at most :data:`MAX_PRODUCTS` remembered products per conversation, texts cut to
:data:`MAX_QUESTION_CHARS`, and rows older than the retention setting are purged
(:meth:`ConversationStore.purge`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from ..errors import StoreError
from ..store.models import ConversationRow

__all__ = ["MAX_PRODUCTS", "ConversationStore", "Context"]

log = logging.getLogger(__name__)

MAX_PRODUCTS = 8
MAX_QUESTION_CHARS = 500


@dataclass(frozen=True)
class Context:
    """What the bot last showed: product ids in card order, the FAQ entry it answered with,
    the question they answered, and the language the shopper asked for (None: each
    message's own)."""

    products: tuple[str, ...] = ()
    faq_id: str | None = None
    question: str | None = None
    lang: str | None = None
    preferences: tuple[str, ...] = field(default=())
    # the one product the latest follow-up was about ("the second one"): what "it" means next
    focus: str | None = None

    @property
    def empty(self) -> bool:
        return not self.products and self.faq_id is None

    def showing(
        self, products: tuple[str, ...] | list[str] = (), faq_id: str | None = None,
        question: str | None = None,
    ) -> Context:  # fmt: skip
        """The context after a turn that showed these (a new topic replaces the old one)."""
        return replace(
            self,
            products=tuple(products)[:MAX_PRODUCTS],
            faq_id=faq_id,
            question=None if question is None else question[:MAX_QUESTION_CHARS],
            focus=None,
        )

    def focused(self, product_id: str | None) -> Context:
        """The same cards, with the one product a follow-up was about."""
        return replace(self, focus=product_id)


class ConversationStore:
    """Loads and saves :class:`Context` per conversation id (see the module)."""

    def __init__(self, engine: Engine, retention_days: float = 30.0):
        self.engine = engine
        self.retention = timedelta(days=retention_days)

    def _fail(self, what: str, exc: SQLAlchemyError) -> StoreError:
        url = self.engine.url.render_as_string(hide_password=True)
        return StoreError(f"cannot {what} the conversation context in {url}: {type(exc).__name__}")

    def load(self, conversation_id: str) -> Context:
        """The conversation's context; the empty one for a new (or purged) conversation."""
        try:
            with Session(self.engine) as s:
                row = s.get(ConversationRow, conversation_id[:200])
        except SQLAlchemyError as exc:
            raise self._fail("read", exc) from None
        if row is None or row.updated_at is None:
            return Context()
        updated = row.updated_at if row.updated_at.tzinfo else row.updated_at.replace(tzinfo=UTC)
        if datetime.now(UTC) - updated > self.retention:
            return Context()
        return Context(
            products=tuple(str(p) for p in (row.products or ())[:MAX_PRODUCTS]),
            faq_id=row.faq_id,
            question=row.question,
            lang=row.lang,
            preferences=tuple(str(p) for p in (row.preferences or ())),
            focus=row.focus if row.focus in (row.products or ()) else None,
        )

    def save(self, conversation_id: str, ctx: Context) -> None:
        """Store ``ctx`` as the conversation's context (insert or replace)."""
        values = {
            "updated_at": datetime.now(UTC),
            "products": list(ctx.products[:MAX_PRODUCTS]),
            "faq_id": ctx.faq_id,
            "question": None if ctx.question is None else ctx.question[:MAX_QUESTION_CHARS],
            "lang": ctx.lang,
            "preferences": list(ctx.preferences),
            "focus": ctx.focus,
        }
        cid = conversation_id[:200]
        for attempt in (1, 2):  # two first turns of one conversation racing: the second updates
            try:
                with Session(self.engine) as s, s.begin():
                    row = s.get(ConversationRow, cid)
                    if row is None:
                        s.add(ConversationRow(id=cid, **values))
                    else:
                        for key, value in values.items():
                            setattr(row, key, value)
                return
            except IntegrityError:
                if attempt == 2:
                    raise
            except SQLAlchemyError as exc:
                raise self._fail("save", exc) from None

    def forget(self, conversation_id: str) -> None:
        try:
            with Session(self.engine) as s, s.begin():
                s.execute(
                    delete(ConversationRow).where(ConversationRow.id == conversation_id[:200])
                )
        except SQLAlchemyError as exc:
            raise self._fail("delete", exc) from None

    def purge(self, now: datetime | None = None) -> int:
        """Delete the contexts not touched within the retention time; returns how many."""
        cutoff = (now or datetime.now(UTC)) - self.retention
        try:
            with Session(self.engine) as s, s.begin():
                result = s.execute(
                    delete(ConversationRow).where(ConversationRow.updated_at < cutoff)
                )
        except SQLAlchemyError as exc:
            raise self._fail("purge", exc) from None
        return int(result.rowcount or 0)
