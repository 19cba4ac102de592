"""Shoppers' interest in products, read from SQL for the recommendations
(:mod:`retrieval.recommend`): clicks on the shop page (table ``product_events``), the
products questions were answered with (the query log: the first product candidate of a
query whose system decision answered with products, a follow-up's included), and the
products the agents' replies to a conversation name by title (table ``agent_actions``).

Reading a week of a busy shop's log is not free, so :class:`Interests` caches each window's
conversation sets for ``cache_s`` seconds (a few windows at most) and reads at most
``max_rows`` of the most recent interests.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ..decision import FOLLOW_UP_ANSWER, PRODUCT_ANSWER
from ..errors import StoreError
from ..recommend import TitleIndex, conversation_sets
from .models import AgentActionRow, CandidateRow, DecisionRow, ProductEventRow, QueryRow

__all__ = ["Interests"]

MAX_WINDOWS = 8


class Interests:
    """Records clicks and reads interests per time window (see the module)."""

    def __init__(self, engine: Engine, *, max_rows: int = 500_000, cache_s: float = 60.0):
        self.engine = engine
        self.max_rows = max_rows
        self.cache_s = cache_s
        self._cache: dict[tuple[float, int], tuple[float, dict[str, set[str]]]] = {}
        self._lock = threading.Lock()

    def _fail(self, what: str, exc: SQLAlchemyError) -> StoreError:
        url = self.engine.url.render_as_string(hide_password=True)
        return StoreError(f"cannot {what} product interests in {url}: {type(exc).__name__}")

    def record_click(self, conversation_id: str, product_id: str) -> None:
        try:
            with Session(self.engine) as s, s.begin():
                s.add(
                    ProductEventRow(
                        created_at=datetime.now(UTC),
                        conversation_id=conversation_id[:200],
                        product_id=product_id[:200],
                        kind="click",
                    )
                )
        except SQLAlchemyError as exc:
            raise self._fail("record", exc) from None
        with self._lock:
            self._cache.clear()  # the next read sees the click

    def sets(
        self, days: float, now: datetime | None = None, titles: TitleIndex | None = None
    ) -> dict[str, set[str]]:
        """Each conversation's set of products of interest in the last ``days`` days; with
        ``titles``, also the products the agents' replies name."""
        key = (days, id(titles))
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and time.monotonic() - hit[0] < self.cache_s and now is None:
                return hit[1]
        since = (now or datetime.now(UTC)) - timedelta(days=days)
        try:
            with Session(self.engine) as s:
                answered = s.execute(
                    select(QueryRow.conversation_id, CandidateRow.item_id)
                    .join(CandidateRow, CandidateRow.query_id == QueryRow.id)
                    .join(DecisionRow, DecisionRow.query_id == QueryRow.id)
                    .where(
                        QueryRow.created_at >= since,
                        QueryRow.conversation_id.is_not(None),
                        QueryRow.decision == "answer",
                        CandidateRow.kind == "product",
                        CandidateRow.rank == 1,
                        DecisionRow.actor == "system",
                        or_(
                            DecisionRow.reason.startswith(PRODUCT_ANSWER),
                            DecisionRow.reason.startswith(FOLLOW_UP_ANSWER),
                        ),
                    )
                    .order_by(QueryRow.created_at.desc())
                    .limit(self.max_rows)
                ).all()
                clicks = s.execute(
                    select(ProductEventRow.conversation_id, ProductEventRow.product_id)
                    .where(ProductEventRow.created_at >= since)
                    .order_by(ProductEventRow.id.desc())
                    .limit(self.max_rows)
                ).all()
                replies = (
                    s.execute(
                        select(AgentActionRow.conversation_id, AgentActionRow.final_text)
                        .where(
                            AgentActionRow.created_at >= since,
                            AgentActionRow.conversation_id.is_not(None),
                            AgentActionRow.final_text.is_not(None),
                            AgentActionRow.action.in_(("accept", "edit", "write")),
                        )
                        .order_by(AgentActionRow.id.desc())
                        .limit(self.max_rows)
                    ).all()
                    if titles is not None
                    else []
                )
        except SQLAlchemyError as exc:
            raise self._fail("read", exc) from None
        named = [
            (str(c), pid)
            for c, text in replies
            for pid in (titles.named_in(text) if titles is not None else ())
        ]
        sets = conversation_sets([(str(c), str(p)) for c, p in [*answered, *clicks]] + named)
        if now is None:
            with self._lock:
                if len(self._cache) >= MAX_WINDOWS:
                    self._cache.clear()
                self._cache[key] = (time.monotonic(), sets)
        return sets
