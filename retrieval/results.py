"""What the query path returns: the ranked FAQ replies and products with the decision
(:class:`QueryResult`), and its rows for the query log."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .decision import Decision, DecisionPolicy, Verdict
from .faq import FAQEntry
from .filters import ProductFilter
from .product_gate import ProductGate
from .product_search import ProductMatch
from .ranking import best_per_group
from .store.logrecord import LoggedCandidate, LoggedQuery

__all__ = ["FAQCandidate", "QueryResult", "group_scores", "log_rows"]


@dataclass(frozen=True)
class FAQCandidate:
    entry: FAQEntry
    score: float
    matched: str  # which phrasing scored best: question, exampleN, answer

    def public(self) -> dict[str, Any]:
        return {**self.entry.public(), "score": round(self.score, 6), "matched": self.matched}


@dataclass(frozen=True)
class QueryResult:
    query_id: str
    text: str | None
    has_image: bool
    verdict: Verdict
    policy: DecisionPolicy
    replies: list[FAQCandidate]
    products: list[ProductMatch]
    faq_version: str | None
    product_version: str | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    faq_encoder: str | None = None  # the multilingual encoder's id when it ranked the FAQ
    product_filter: ProductFilter | None = None  # the filter the products were found with
    # whether the question is about products and which matches are shown
    # (retrieval.product_gate); None: no product search ran
    product_gate: ProductGate | None = None

    @property
    def shown_products(self) -> list[ProductMatch]:
        """The product matches that pass the gate (all of them without a gate)."""
        return (
            self.products if self.product_gate is None else self.product_gate.shown(self.products)
        )

    @property
    def decision(self) -> Decision:
        return self.verdict.decision

    @property
    def answered_with(self) -> str | None:
        """'faq' or 'products' when the decision is to answer, else None."""
        return self.verdict.basis if self.verdict.decision is Decision.ANSWER else None


def group_scores(replies: list[FAQCandidate]) -> list[float]:
    """Best score per answer group, best first: language versions of one answer are not rivals."""
    return best_per_group((c.entry.group or c.entry.id, c.score) for c in replies)


def log_rows(
    r: QueryResult,
    *,
    conversation_id: str | None,
    channel: str,
    image_ref: str | None,
    text_encoder: str | None,
    image_encoder: str | None,
) -> dict[str, Any]:
    """The query log's rows for a result (:class:`~retrieval.store.logrecord.LoggedQuery`);
    ``text_encoder`` / ``image_encoder``: the ids of the encoders that read the question."""
    candidates = [
        LoggedCandidate("faq", rank, c.entry.id, c.score, c.score, None, c.matched, r.faq_version)
        for rank, c in enumerate(r.replies, start=1)
    ] + [
        LoggedCandidate(
            "product",
            rank,
            m.product.id,
            m.score,
            m.text_score,
            m.image_score,
            m.matched,
            r.product_version,
        )
        for rank, m in enumerate(r.products, start=1)
    ]
    return LoggedQuery(
        id=r.query_id,
        created_at=datetime.now(UTC),
        conversation_id=conversation_id,
        channel=channel,
        text=r.text,
        has_image=r.has_image,
        image_ref=image_ref,
        decision=r.decision.value,
        reason=r.verdict.reason,
        top_score=r.verdict.top_score,
        margin=r.verdict.margin,
        answer_threshold=r.policy.answer_threshold,
        suggest_threshold=r.policy.suggest_threshold,
        faq_index_version=r.faq_version,
        product_index_version=r.product_version,
        text_encoder=text_encoder,
        image_encoder=image_encoder,
        encode_ms=r.timings_ms["encode"],
        search_ms=r.timings_ms["search"],
        total_ms=r.timings_ms["total"],
        candidates=tuple(candidates),
    ).rows()
