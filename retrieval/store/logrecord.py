"""The query log's record: one answered query with every scored candidate and the system's
decision, typed. The query path builds it from plain values; :meth:`LoggedQuery.rows` gives
the rows the writer inserts (``queries``, ``candidates``, ``decisions``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

__all__ = ["LoggedCandidate", "LoggedQuery", "QueryLogSink"]


@dataclass(frozen=True)
class LoggedCandidate:
    """One scored candidate: an FAQ entry (``kind`` "faq") or a product."""

    kind: str
    rank: int
    item_id: str
    score: float
    text_score: float | None
    image_score: float | None
    matched: str
    index_version: str | None


@dataclass(frozen=True)
class LoggedQuery:
    """One query as the log keeps it."""

    id: str
    created_at: datetime
    conversation_id: str | None
    channel: str
    text: str | None
    has_image: bool
    image_ref: str | None
    decision: str
    reason: str
    top_score: float | None
    margin: float | None
    answer_threshold: float
    suggest_threshold: float
    faq_index_version: str | None
    product_index_version: str | None
    text_encoder: str | None
    image_encoder: str | None
    encode_ms: float
    search_ms: float
    total_ms: float
    candidates: tuple[LoggedCandidate, ...] = ()

    def rows(self) -> dict[str, Any]:
        """The writer's record: ``{"query": {...}, "candidates": [...], "decisions": [...]}``."""
        query = {
            "id": self.id,
            "created_at": self.created_at,
            "conversation_id": self.conversation_id,
            "channel": self.channel[:32],
            "text": self.text,
            "has_image": self.has_image,
            "image_ref": self.image_ref,
            "decision": self.decision,
            "top_score": self.top_score,
            "margin": self.margin,
            "answer_threshold": self.answer_threshold,
            "suggest_threshold": self.suggest_threshold,
            "faq_index_version": self.faq_index_version,
            "product_index_version": self.product_index_version,
            "text_encoder": self.text_encoder,
            "image_encoder": self.image_encoder,
            "encode_ms": self.encode_ms,
            "search_ms": self.search_ms,
            "total_ms": self.total_ms,
        }
        candidates = [
            {
                "query_id": self.id,
                "kind": c.kind,
                "rank": c.rank,
                "item_id": c.item_id,
                "score": c.score,
                "text_score": c.text_score,
                "image_score": c.image_score,
                "matched": c.matched,
                "index_version": c.index_version,
            }
            for c in self.candidates
        ]
        decisions = [
            {
                "query_id": self.id,
                "created_at": self.created_at,
                "actor": "system",
                "decision": self.decision,
                "reason": self.reason,
            }
        ]
        return {"query": query, "candidates": candidates, "decisions": decisions}


class QueryLogSink(Protocol):
    """What the query path logs to (:class:`~retrieval.store.querylog.QueryLog`)."""

    def record(self, rec: dict[str, Any]) -> None: ...
