"""Fitting the decision thresholds and the fusion weights on held-out labelled data.

Pure functions over numpy arrays: no model, no I/O. Both search a grid exhaustively, so
the result is the true optimum over that grid, which the property tests check against
synthetic data with a known optimum. Thresholds follow the one rule of
:func:`retrieval.decision.best_threshold` (ties: the middle of the first best plateau).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..decision import best_threshold

__all__ = [
    "FusionFit",
    "ThresholdFit",
    "fit_fusion_weights",
    "fit_thresholds",
    "fused_score_matrix",
    "mrr_of_scores",
    "overall_accuracy_of",
]

MARGINS = (0.0, 0.01, 0.02, 0.03, 0.05)


@dataclass(frozen=True)
class ThresholdFit:
    answer_threshold: float
    suggest_threshold: float
    margin: float
    accuracy: float  # overall accuracy on the fitting data with these values
    n: int


@dataclass(frozen=True)
class FusionFit:
    image_weight: float
    text_weight: float
    mrr: float
    n: int


def overall_accuracy_of(
    top: np.ndarray,
    second: np.ndarray,
    correct: np.ndarray,
    in_scope: np.ndarray,
    threshold: float,
    margin: float,
) -> float:
    """Overall accuracy as ``retrieval eval`` counts it: answered with a relevant top-1, or
    out of scope and not answered (an answer needs score >= threshold and the margin)."""
    answered = (top >= threshold) & (top - second >= margin - 1e-9)
    return float(np.mean(np.where(answered, correct & in_scope, ~in_scope)))


def fit_thresholds(
    top_scores: Sequence[float],
    second_scores: Sequence[float],
    correct: Sequence[bool],
    in_scope: Sequence[bool],
    *,
    margins: Sequence[float] = MARGINS,
    suggest_gap: float = 0.15,
) -> ThresholdFit:
    """The answer threshold and margin that maximise overall accuracy; at each margin the
    threshold is :func:`~retrieval.decision.best_threshold`'s, the rule ingest calibrates with.

    ``second_scores`` is each question's runner-up score (-1 when there is none). The
    suggest threshold is the answer threshold less ``suggest_gap``.
    """
    top = np.asarray(top_scores, dtype=np.float64)
    second = np.asarray(second_scores, dtype=np.float64)
    if len(top) == 0:
        raise ValueError("no labelled questions to fit thresholds on")
    best: tuple[float, float, float] | None = None
    for m in margins:  # the shipped threshold rule at each margin; ties: the smaller margin
        threshold, acc = best_threshold(top, correct, in_scope, eligible=top - second >= m - 1e-9)
        if best is None or acc > best[0] + 1e-12:
            best = (acc, threshold, float(m))
    assert best is not None
    accuracy, threshold, margin = best
    suggest = threshold - suggest_gap
    return ThresholdFit(threshold, float(min(suggest, threshold)), margin, accuracy, len(top))


def mrr_of_scores(scores: np.ndarray, relevant: np.ndarray, k: int = 10) -> float:
    """Mean reciprocal rank at ``k`` of a (queries, items) score matrix and boolean labels."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hits = np.take_along_axis(relevant, order, axis=1)
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0)
    return float(np.mean(np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0)))


def fused_score_matrix(image_scores: np.ndarray, text_scores: np.ndarray, w: float) -> np.ndarray:
    """The retriever's fused score for image-score weight ``w`` = A² (text: B² = 1 - w).

    Where one modality is missing (NaN) the score is the weighted mean over the modalities
    both sides have, as in :mod:`retrieval.fusion`; where both are missing it is -inf.
    """
    has_img, has_txt = ~np.isnan(image_scores), ~np.isnan(text_scores)
    num = w * np.nan_to_num(image_scores) + (1 - w) * np.nan_to_num(text_scores)
    den = w * has_img + (1 - w) * has_txt
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    return np.where(den > 0, out, -np.inf)


def fit_fusion_weights(
    image_scores: np.ndarray,
    text_scores: np.ndarray,
    relevant: np.ndarray,
    *,
    steps: int = 21,
    k: int = 10,
) -> FusionFit:
    """Scalar weights A (image) and B (text) that maximise MRR@k on held-out product queries.

    With A² + B² = 1 (the retriever normalises them so) a product's fused score is
    A²·cos_img + B²·cos_text (:mod:`retrieval.fusion`); the grid runs over A² in ``steps``
    even steps from 0 to 1. ``image_scores`` and ``text_scores`` are (queries, products)
    cosine matrices, NaN where a side lacks the modality; ``relevant`` marks right products.
    Both weights are kept above 0 (the settings refuse two zeros and a zero weight drops a
    modality from the index), so the grid's ends are nudged to 0.01 and 0.99.
    """
    img = np.asarray(image_scores, dtype=np.float64)
    txt = np.asarray(text_scores, dtype=np.float64)
    rel = np.asarray(relevant, dtype=bool)
    if img.shape != txt.shape or img.shape != rel.shape or img.size == 0:
        raise ValueError("image_scores, text_scores and relevant must share a non-empty shape")
    best: FusionFit | None = None
    for w in np.clip(np.linspace(0.0, 1.0, steps), 0.01, 0.99):
        mrr = mrr_of_scores(fused_score_matrix(img, txt, float(w)), rel, k)
        if best is None or mrr > best.mrr + 1e-12:
            best = FusionFit(float(np.sqrt(w)), float(np.sqrt(1 - w)), mrr, img.shape[0])
    assert best is not None
    return best
