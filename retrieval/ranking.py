"""Ranking FAQ entries for one question: nearest phrasings, re-scored by the version's answer
head, one score per answer group. The query side of the answer head (fitting it is
:mod:`retrieval.faq_calibration`'s job, at build time)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .answer_head import ARRAY_BIAS, ARRAY_WEIGHTS, AnswerHead
from .index import Hit, VectorIndex
from .outofscope import OutOfScopeModel

__all__ = [
    "HEAD_META",
    "HEAD_POOL",
    "OOS_META",
    "best_per_group",
    "head_of",
    "out_of_scope_of",
    "rank_entries",
]

HEAD_META = "answer_head"  # the head's description in an FAQ index version's metadata
HEAD_POOL = 16  # nearest entries the head re-ranks
OOS_META = "out_of_scope"  # the hand-off signal's description in an FAQ version's metadata


def head_of(index: VectorIndex) -> AnswerHead | None:
    """The answer head stored in an FAQ index version, if it has one."""
    info = index.meta.get(HEAD_META)
    if not info or ARRAY_WEIGHTS not in index.arrays:
        return None
    return AnswerHead(
        tuple(info["entry_ids"]),
        np.asarray(index.arrays[ARRAY_WEIGHTS], dtype=np.float32),
        np.asarray(index.arrays[ARRAY_BIAS], dtype=np.float32),
        float(info["blend"]),
        float(info["strength"]),
        bool(info.get("out_of_scope", False)),
    )


def out_of_scope_of(index: VectorIndex) -> OutOfScopeModel | None:
    """The hand-off signal stored in an FAQ index version, if it has one."""
    meta = index.meta.get(OOS_META)
    if not meta:
        return None
    return OutOfScopeModel.from_arrays(index.arrays, meta)


def rank_entries(
    index: VectorIndex, head: AnswerHead | None, vector: np.ndarray, k: int
) -> list[tuple[Hit, float]]:
    """The ``k`` best entries for one question with their scores, best first: cosine of the
    closest phrasing, plus the head's blended probability when the version has a head (it
    re-ranks a pool of at least ``HEAD_POOL`` nearest entries)."""
    hits = index.search_items(vector, max(k, HEAD_POOL) if head is not None else k)
    scores = [float(np.clip(h.score, -1.0, 1.0)) for h in hits]
    if head is not None and hits:
        scores = head.rescore(vector, [h.item_id for h in hits], scores)
    ranked = sorted(zip(hits, scores, strict=True), key=lambda pair: -pair[1])
    return ranked[:k]


def best_per_group(ranked: Iterable[tuple[str, float]]) -> list[float]:
    """Best score per answer group from (group, score) pairs sorted best first: language
    versions of one answer are not rivals."""
    seen: set[str] = set()
    out = []
    for group, score in ranked:
        if group not in seen:
            seen.add(group)
            out.append(float(score))
    return out
