"""The answer to one encoded question: rank the FAQ and the products, then decide.

This is the part of the query path after encoding (:mod:`retrieval.retriever` cleans,
routes and encodes, then calls :func:`answer`). Both :meth:`Retriever.query` and
:meth:`Retriever.query_batch` end here, so one question gets the same answer either way.
Nothing is encoded or logged here; the only searches are the index lookups.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .decision import (
    Decision,
    DecisionPolicy,
    Verdict,
    decide,
    decide_products,
    hand_off_out_of_scope,
)
from .encoders.base import Encoder
from .filters import ProductFilter
from .fusion import Fusion
from .index import VectorIndex
from .product_gate import ProductGate
from .product_search import ProductMatch, rank_products, text_matches
from .ranking import rank_entries
from .results import FAQCandidate, QueryResult, group_scores
from .snapshot import Snapshot

__all__ = [
    "RUNNER_UP",
    "Prepared",
    "Route",
    "answer",
    "photo_sure_for",
    "product_gate_for",
    "rank_faq",
]

RUNNER_UP = 4  # extra entries ranked so the top-1/top-2 margin sees the runner-up group
# FAQ searches run beside the product search when the indexes are searched by a database
# server (``vector_store`` names one store for both) and this process answers no other
# question: a spare core then runs the second search. Under load every core is busy and a
# second thread only adds switching (measured: the 8-client p95 got worse), so questions
# then search in turn.
BESIDE_SLOTS = 1
_BESIDE = ThreadPoolExecutor(max_workers=BESIDE_SLOTS, thread_name_prefix="faq-search")
_beside_free = threading.Semaphore(BESIDE_SLOTS)


def _beside(
    fn: Callable[..., list[FAQCandidate]], snap: Snapshot, *args: Any, alone: bool = False
) -> Callable[[], list[FAQCandidate]]:
    """``fn(snap, *args)`` started now on a worker thread when the snapshot's indexes are
    searched by a database server, the question is ``alone`` in this process and the slot is
    free (the two searches then run at once), else run when its result is asked for; call
    the returned function for the result."""
    remote = getattr(snap.faq_index, "remote", False)
    if not (remote and alone) or not _beside_free.acquire(blocking=False):
        return lambda: fn(snap, *args)

    def run() -> list[FAQCandidate]:
        try:
            return fn(snap, *args)
        finally:
            _beside_free.release()  # before the result is handed over

    try:
        return _BESIDE.submit(run).result
    except RuntimeError:  # no new thread (the interpreter is shutting down): search in turn
        _beside_free.release()
        return lambda: fn(snap, *args)


@dataclass(frozen=True)
class Prepared:
    """A question as the path reads it: the cleaned text and the decoded photo."""

    text: str | None
    image: Image.Image | None


@dataclass(frozen=True)
class Route:
    """Which views answer one question: the multilingual FAQ companion and product view for
    a question with CJK characters (when built with this retriever's multilingual encoder),
    else the main indexes."""

    faq_view: VectorIndex | None
    product_view: VectorIndex | None
    has_text: bool

    @property
    def multilingual(self) -> bool:
        return self.faq_view is not None or self.product_view is not None

    @property
    def english(self) -> bool:
        """Whether the English text vector is needed (not when both views are multilingual)."""
        return self.has_text and (self.faq_view is None or self.product_view is None)


def answer(
    snap: Snapshot,
    q: Prepared,
    route: Route,
    q_text: np.ndarray | None,
    q_image: np.ndarray | None,
    q_ml: np.ndarray | None,
    k_products: int,
    k_faq: int,
    prefer_products: bool | None,
    product_filter: ProductFilter | None = None,
    *,
    fusion: Fusion,
    lexical_weight: float,
    multilingual_encoder: Encoder | None,
    alone: bool = False,
) -> QueryResult:
    """Rank and decide for one encoded question: the part of the path after encoding.

    ``q_text``, ``q_image``, ``q_ml``: the question's English text, photo and multilingual
    vectors (None where the route does not need them). ``fusion``, ``lexical_weight`` and
    ``multilingual_encoder`` are the retriever's own (see :class:`Retriever`); ``alone``:
    no other question is being answered by the retriever (see :func:`_beside`)."""
    only = snap.filter_masks(product_filter)
    q_faq = q_ml if route.faq_view is not None else q_text
    # a few extra entries so the top-1/top-2 margin sees the runner-up group even when k_faq is 1
    faq_index = route.faq_view or snap.faq_index
    faq_search = (
        _beside(rank_faq, snap, q_faq, k_faq + RUNNER_UP, faq_index, alone=alone)
        if q_faq is not None
        else None
    )
    policy = (
        snap.multilingual_policy
        if route.faq_view is not None and snap.multilingual_policy is not None
        else snap.policy
    )
    products = (
        text_matches(
            snap,
            q_ml,
            k_products,
            view=route.product_view,
            only=only,
            query_text=q.text,
            lexical_weight=lexical_weight,
        )
        if route.product_view is not None and q_ml is not None
        else rank_products(
            snap,
            fusion,
            q_text,
            q_image,
            k_products,
            query_text=q.text,
            lexical_weight=lexical_weight,
            only=only,
        )
    )
    ranked = faq_search() if faq_search is not None else []
    verdict = (
        decide(group_scores(ranked), policy)
        if ranked
        else Verdict(
            Decision.HANDOFF,
            None,
            None,
            "no text to match against the FAQ" if q.text is None else "no FAQ entries",
        )
    )
    oos = snap.out_of_scope if route.faq_view is None else snap.multilingual_out_of_scope
    if oos is not None and q_faq is not None and ranked:
        in_scope = float(oos.in_scope_scores(q_faq[None, :])[0])
        verdict = hand_off_out_of_scope(verdict, in_scope, oos.threshold)
    gate = product_gate_for(snap, route, q, products, policy)
    if prefer_products or (prefer_products is None and verdict.decision is not Decision.ANSWER):
        verdict = (
            decide_products(
                gate.score,
                q.text is not None,
                policy,
                threshold=gate.threshold,
                # photos alone: the level is an image cosine, which the fused score of
                # a photo with words is not
                sure=(
                    photo_sure_for(snap, fusion)[0]
                    if q.image is not None and q.text is None and gate.about_products
                    else None
                ),
            )
            or verdict
        )
    return QueryResult(
        query_id=str(uuid.uuid4()),
        text=q.text,
        has_image=q.image is not None,
        verdict=verdict,
        policy=policy,
        replies=ranked[:k_faq],
        products=products,
        faq_version=snap.faq_version,
        product_version=snap.product_version,
        faq_encoder=(
            multilingual_encoder.id
            if route.faq_view is not None and multilingual_encoder is not None
            else None
        ),
        product_filter=None if only is None else only.filter,
        product_gate=gate,
    )


def photo_sure_for(snap: Snapshot, fusion: Fusion) -> tuple[float | None, str]:
    """The level a photo's best match must reach to be answered as sure, and its source:
    the setting, or (when it is empty) the level calibrated on the catalog's pictures."""
    if snap.policy.photo_sure_threshold is not None:
        return snap.policy.photo_sure_threshold, "photo_sure_threshold"
    return snap.photo_sure(fusion)


def product_gate_for(
    snap: Snapshot,
    route: Route,
    q: Prepared,
    products: list[ProductMatch],
    policy: DecisionPolicy,
) -> ProductGate:
    """The product threshold this question is held to and its best gate score (see
    :mod:`retrieval.product_gate`): photos by fused score, Chinese questions by the
    multilingual view's cosine against the setting, English ones by text cosine against
    the threshold calibrated on the FAQ."""
    if q.image is not None:
        gate = ProductGate(policy.photo_threshold, None, "fused score", "photo_answer_threshold")
    elif route.product_view is not None:
        gate = ProductGate(
            policy.product_threshold,
            None,
            "text cosine",
            "product_answer_threshold (Chinese questions: not calibrated)",
        )
    else:
        threshold, source = snap.text_gate
        gate = ProductGate(threshold, None, "text cosine", source)
    best = max((gate.gate_score(m) for m in products), default=None)
    return dataclasses.replace(gate, score=best)


def rank_faq(
    snap: Snapshot, q_text: np.ndarray, k: int, index: VectorIndex | None = None
) -> list[FAQCandidate]:
    """The best ``k`` FAQ entries for a question vector in ``index`` (default the snapshot's
    FAQ index, re-scored by its answer head; a companion view is not)."""
    index = index or snap.faq_index
    head = snap.answer_head if index is snap.faq_index else None
    ranked = rank_entries(index, head, q_text, k)
    entries = snap.faq.get_many(hit.item_id for hit, _ in ranked)  # one read on a stored bank
    return [
        FAQCandidate(entries[hit.item_id], score, hit.variant)
        for hit, score in ranked
        if hit.item_id in entries
    ]
