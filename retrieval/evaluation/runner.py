"""Answering an evaluation's questions with the service's query path.

Every question is answered by :meth:`Retriever.query_batch` (the same cleaning, routing,
ranking and decision as one shopper's question, encoded in batches for speed). Up to
``latency_sample`` of them are also answered one at a time by :meth:`Retriever.query`, the
path a request takes, which gives the latency figures; those answers must equal the batch
ones (a difference is counted and reported, never hidden).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..decision import Decision
from ..filters import ProductFilter
from ..results import QueryResult
from ..retriever import ImageInput, Retriever
from .metrics import Outcome

__all__ = ["Answered", "answer_all", "gate_info"]

log = logging.getLogger(__name__)

BATCH = 256  # questions per query_batch call
LATENCY_SAMPLE = 200  # questions timed one at a time


@dataclass(frozen=True)
class Answered:
    """Each question's result, the one-at-a-time results of the timed ones, and a note."""

    results: list[QueryResult]
    timed: dict[int, QueryResult]
    info: dict[str, Any]

    def timing(self, i: int) -> tuple[float | None, float | None]:
        """(total ms, encode ms) of question ``i`` when it was timed, else (None, None)."""
        t = self.timed.get(i)
        return (None, None) if t is None else (t.timings_ms["total"], t.timings_ms["encode"])

    def outcomes(
        self,
        relevant: Sequence[frozenset[str]],
        judged: Callable[[QueryResult], tuple[tuple[str, ...], float | None, bool]],
    ) -> list[Outcome]:
        """One :class:`Outcome` per question: ``judged(result)`` gives (ranked ids, top
        score, answered), ``relevant`` the question's relevant ids, the timing comes from
        the one-at-a-time sample."""
        out = []
        for i, (rel, r) in enumerate(zip(relevant, self.results, strict=True)):
            ranked, top, answered = judged(r)
            out.append(Outcome(ranked, rel, top, answered, *self.timing(i)))
        return out


def answer_all(
    retriever: Retriever,
    texts: Sequence[str | None],
    images: Sequence[ImageInput | None] | None = None,
    *,
    same: Callable[[QueryResult, QueryResult], bool],
    k_faq: int,
    k_products: int,
    prefer_products: bool = False,
    product_filters: Sequence[ProductFilter | None] | None = None,
    latency_sample: int = LATENCY_SAMPLE,
    progress: bool = False,
) -> Answered:
    """Answer every question in batches and time a seeded sample one at a time; ``same``
    says whether a timed answer equals its batch answer."""
    images = list(images) if images is not None else [None] * len(texts)
    filters = list(product_filters) if product_filters is not None else [None] * len(texts)
    results: list[QueryResult] = []
    for start in tqdm(
        range(0, len(texts), BATCH), desc="answering", unit="batch", disable=not progress
    ):
        results += retriever.query_batch(
            texts[start : start + BATCH],
            images[start : start + BATCH],
            k_faq=k_faq,
            k_products=k_products,
            prefer_products=prefer_products,
            product_filters=filters[start : start + BATCH],
        )
    order = np.random.default_rng(0).permutation(len(texts))[: max(0, latency_sample)]
    timed: dict[int, QueryResult] = {}
    for i in tqdm(sorted(order), desc="timing", unit="q", disable=not progress):
        timed[int(i)] = retriever.query(
            texts[i],
            images[i],
            k_faq=k_faq,
            k_products=k_products,
            prefer_products=prefer_products,
            product_filter=filters[i],
        )
    mismatches = sum(not same(r, results[i]) for i, r in timed.items())
    if mismatches:
        log.warning(
            "%d of %d questions answered one at a time differ from their batch answer "
            "(float rounding of batched encoding at a near-tie)",
            mismatches,
            len(timed),
        )
    info = {
        "latency": (
            f"Retriever.query one question at a time on {len(timed)} of {len(texts)} "
            "questions (clean, route, encode, search, decide; no query log), as the service "
            "runs it; the others answered by Retriever.query_batch"
        ),
        "batch_mismatches": mismatches,
    }
    return Answered(results, timed, info)


def gate_info(results: Sequence[QueryResult]) -> dict[str, Any]:
    """The product gate's part of an evaluation's output: the share of questions for which
    the service would show product matches at all, and the thresholds it held them to.
    Empty when no question was ranked against products."""
    gates = [r.product_gate for r in results if r.product_gate is not None]
    gates = [g for g in gates if g.score is not None]
    if not gates:
        return {}
    return {
        "product_gate": {
            "shown": sum(g.about_products for g in gates) / len(gates),
            "thresholds": sorted({f"{g.threshold:.4f} ({g.measure}: {g.source})" for g in gates}),
        }
    }


def photo_decision_info(
    results: Sequence[QueryResult],
    relevant: Sequence[Collection[str]],
    level: tuple[float | None, str],
) -> dict[str, Any]:
    """How questions with a photo were decided (``photo_sure_threshold``): the share answered
    as sure and how often their first card is right, the share asked "is it one of these?"
    and how often the right product is among the cards they show, and the share shown
    nothing. ``level``: the sure level the questions were held to and its source. Empty when no
    question has a photo."""
    pairs = [(r, rel) for r, rel in zip(results, relevant, strict=True) if r.has_image]
    if not pairs:
        return {}
    sure = [(r, rel) for r, rel in pairs if r.answered_with == "products"]
    unsure = [
        (r, rel)
        for r, rel in pairs
        if r.decision is Decision.SUGGEST and r.verdict.basis == "products"
    ]
    n = len(pairs)

    def share(part: Sequence[object]) -> float:
        return round(len(part) / n, 4)

    return {
        "photo_decisions": {
            "sure_threshold": None if level[0] is None else round(level[0], 4),
            "sure_source": level[1],
            "answered_as_sure": share(sure),
            "sure_first_card_right": (
                round(sum(r.products[0].product.id in rel for r, rel in sure) / len(sure), 4)
                if sure
                else None
            ),
            "asked_is_it_one_of_these": share(unsure),
            "one_of_these_first_card_right": (
                round(sum(r.products[0].product.id in rel for r, rel in unsure) / len(unsure), 4)
                if unsure
                else None
            ),
            "one_of_these_right_in_cards": (
                round(
                    sum(any(m.product.id in rel for m in r.shown_products) for r, rel in unsure)
                    / len(unsure),
                    4,
                )
                if unsure
                else None
            ),
            "nothing_shown": round(1 - (len(sure) + len(unsure)) / n, 4),
        }
    }
