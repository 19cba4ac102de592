"""Shoppers' interest in products, read from SQL for the recommendations
(:mod:`retrieval.recommend`): clicks on the shop page (table ``product_events``), the
products questions were answered with (the query log: the first product candidate of a
query whose system decision answered with products, a follow-up's included), and the
products the agents' replies to a conversation name by title (table ``agent_actions``).

Reading a busy shop's log is not free, so :class:`Interests` reads the longest window once
per ``cache_s`` seconds (at most ``max_rows`` of the most recent interests of each kind)
and cuts every shorter window from that in memory.
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

MAX_DAYS = 90.0  # the longest window anyone may ask for


class Interests:
    """Records clicks and reads interests per time window (see the module).

    One scan of the longest window (``max_days``) is cached for ``cache_s`` seconds and
    every shorter window is cut from it in memory, so callers choosing other windows (the
    routes are public) cost no extra scans; concurrent misses wait for one scan."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_rows: int = 500_000,
        cache_s: float = 60.0,
        max_days: float = MAX_DAYS,
    ):
        self.engine = engine
        self.max_rows = max_rows
        self.cache_s = cache_s
        self.max_days = max_days
        # (read at, titles index id) -> the newest time of each (conversation, product)
        self._cache: tuple[float, int, dict[tuple[str, str], datetime]] | None = None
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
            self._cache = None  # the next read sees the click

    def sets(
        self, days: float, now: datetime | None = None, titles: TitleIndex | None = None
    ) -> dict[str, set[str]]:
        """Each conversation's set of products of interest in the last ``days`` days (at
        most ``max_days``); with ``titles``, also the products the agents' replies name."""
        now = now or datetime.now(UTC)
        since = now - timedelta(days=min(days, self.max_days))
        newest = self._newest(now, titles)
        return conversation_sets(pair for pair, at in newest.items() if at >= since)

    def _newest(self, now: datetime, titles: TitleIndex | None) -> dict[tuple[str, str], datetime]:
        with self._lock:  # one scan at a time; the others use its result
            hit = self._cache
            if (
                hit is not None
                and hit[1] == id(titles)
                and time.monotonic() - hit[0] < self.cache_s
            ):
                return hit[2]
            newest = self._scan(now - timedelta(days=self.max_days), titles)
            self._cache = (time.monotonic(), id(titles), newest)
            return newest

    def _scan(self, since: datetime, titles: TitleIndex | None) -> dict[tuple[str, str], datetime]:
        try:
            with Session(self.engine) as s:
                answered = s.execute(
                    select(QueryRow.conversation_id, CandidateRow.item_id, QueryRow.created_at)
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
                    select(
                        ProductEventRow.conversation_id,
                        ProductEventRow.product_id,
                        ProductEventRow.created_at,
                    )
                    .where(ProductEventRow.created_at >= since)
                    .order_by(ProductEventRow.id.desc())
                    .limit(self.max_rows)
                ).all()
                replies = (
                    s.execute(
                        select(
                            AgentActionRow.conversation_id,
                            AgentActionRow.final_text,
                            AgentActionRow.created_at,
                        )
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
            (c, pid, at)
            for c, text, at in replies
            for pid in (titles.named_in(text) if titles is not None else ())
        ]
        newest: dict[tuple[str, str], datetime] = {}
        for c, pid, at in [*answered, *clicks, *named]:
            at = at if at.tzinfo else at.replace(tzinfo=UTC)  # SQLite forgets the zone
            key = (str(c), str(pid))
            if key not in newest or at > newest[key]:
                newest[key] = at
        return newest
