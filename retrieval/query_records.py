"""What the query path writes to the query log: the rows of an answered result (with the
encoders that read the question), and the results of turns that no retrieval preceded (a
hand-off the shopper asked for, a follow-up answered from the conversation).

Pure: building a result or its rows writes nothing; :class:`~retrieval.retriever.Retriever`
hands them to its query log.
"""

from __future__ import annotations

import uuid
from typing import Any

from .decision import FOLLOW_UP_ANSWER, SUGGESTION, Decision, Verdict
from .encoders.base import Encoder
from .product_search import ProductMatch
from .querytext import clean_query
from .results import QueryResult, log_rows
from .snapshot import Snapshot

__all__ = [
    "answered_rows",
    "followup_verdict",
    "handoff_verdict",
    "unretrieved_result",
    "unretrieved_rows",
]


def answered_rows(
    r: QueryResult,
    *,
    conversation_id: str | None,
    channel: str,
    image_ref: str | None,
    text_encoder: Encoder,
    image_encoder: Encoder,
) -> dict[str, Any]:
    """The query log's rows for a result the path answered: the text was read by the
    multilingual encoder when it ranked the FAQ, else by ``text_encoder``."""
    return log_rows(
        r,
        conversation_id=conversation_id,
        channel=channel,
        image_ref=image_ref,
        text_encoder=(r.faq_encoder or text_encoder.id) if r.text is not None else None,
        image_encoder=image_encoder.id if r.has_image else None,
    )


def handoff_verdict(reason: str) -> Verdict:
    """The verdict of a hand-off that no retrieval preceded (e.g. "talk to a human")."""
    return Verdict(Decision.HANDOFF, None, None, reason)


def followup_verdict(products: list[ProductMatch], reason: str, *, suggested: bool) -> Verdict:
    """The verdict of a follow-up answered from the conversation: ``answer`` on products,
    its top score the first card's. ``suggested``: the cards are the bot's suggestions, not
    the product the shopper asked about (the reason says which, for the recommendations)."""
    top = products[0].score if products else None
    prefix = SUGGESTION if suggested else FOLLOW_UP_ANSWER
    return Verdict(Decision.ANSWER, top, None, f"{prefix} {reason}", basis="products")


def unretrieved_result(
    text: str,
    verdict: Verdict,
    products: list[ProductMatch],
    snap: Snapshot,
    *,
    max_query_chars: int,
) -> QueryResult:
    """A result for a turn that no retrieval preceded: no replies, no encoding, the cleaned
    text, and the snapshot's versions and policy."""
    return QueryResult(
        query_id=str(uuid.uuid4()),
        text=clean_query(text, max_chars=max_query_chars),
        has_image=False,
        verdict=verdict,
        policy=snap.policy,
        replies=[],
        products=products,
        faq_version=snap.faq_version,
        product_version=snap.product_version,
        timings_ms={"encode": 0.0, "search": 0.0, "total": 0.0},
    )


def unretrieved_rows(
    r: QueryResult, *, conversation_id: str | None, channel: str
) -> dict[str, Any]:
    """The query log's rows for a result of :func:`unretrieved_result`: no encoder read it,
    no photo came with it."""
    return log_rows(
        r,
        conversation_id=conversation_id,
        channel=channel,
        image_ref=None,
        text_encoder=None,
        image_encoder=None,
    )
