"""Fusion weights A and B fitted on labelled photos that carry the shopper's words.

A query with a photo and words is scored against each product as
``A²·cos_img + B²·cos_text`` (:mod:`retrieval.fusion`). Which balance ranks best depends on
the shop: how alike its products look, how much its shoppers say. ``retrieval train
--photos`` (and ``retrieval eval products --train``) fit it on the photos that the image
projection held out from its training: each such photo that has a ``query`` text is one
labelled query, scored against every product with the new projection and the text model
the version will run, and :func:`~retrieval.training.fitting.fit_fusion_weights` picks the
A² that gives the best MRR@10. Photo-only lines say nothing about the balance and are not
used. With fewer than ``MIN_FUSION_QUERIES`` usable queries, or a gain over the configured
weights under ``MIN_FUSION_GAIN``, the configured weights stay.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..answer_head import entry_scores
from ..encoders.base import Encoder, l2_normalize
from ..fusion import normalized_weights
from .fitting import fit_fusion_weights, fused_score_matrix, mrr_of_scores

__all__ = [
    "MIN_FUSION_GAIN",
    "MIN_FUSION_QUERIES",
    "adopted_weights",
    "describe_fusion",
    "fit_photo_fusion",
    "photo_text_scores",
]

log = logging.getLogger(__name__)

MIN_FUSION_QUERIES = 20  # held-out photos with words needed before A and B are fitted
# the fitted weights replace the configured ones only when they gain this much MRR@10 on
# the held-out photos. Those photos come from the same sessions at the shelf as the ones
# the projection was trained on, so the image side looks better there than on a new
# shopper's photo (Grocery: catalog hit@1 0.99 on the held-out slice, 0.76 on the
# validation photos); a small gain there is as likely a tilt towards the image as a real
# improvement
MIN_FUSION_GAIN = 0.01


def photo_text_scores(
    photos: np.ndarray,
    words: np.ndarray,
    gallery: np.ndarray,
    gallery_owners: np.ndarray,
    product_texts: np.ndarray,
    projection: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(image scores, text scores), each (queries x products), as the product index scores
    them: photos and gallery images through the projection, then cosine; query words
    against each product's text vector."""
    proj = (lambda m: m) if projection is None else (lambda m: m @ projection.T)
    img = l2_normalize(proj(np.asarray(photos, dtype=np.float32)))
    gal = l2_normalize(proj(np.asarray(gallery, dtype=np.float32)))
    # a product without images: NaN, so its fused score falls back to the text alone
    image_scores = entry_scores(
        img, gal, np.asarray(gallery_owners), len(product_texts), missing=np.nan
    )
    text_scores = (l2_normalize(words) @ l2_normalize(product_texts).T).astype(np.float64)
    return image_scores, text_scores


def fit_photo_fusion(
    photos: np.ndarray,
    texts: Sequence[str | None],
    labels: Sequence[int],
    gallery: np.ndarray,
    gallery_owners: Sequence[int],
    product_texts: Sequence[str],
    projection: np.ndarray | None,
    text_encoder: Encoder,
    current: tuple[float, float],
    *,
    min_gain: float = MIN_FUSION_GAIN,
) -> dict[str, Any]:
    """Fit A and B on the photos with words; returns what to record in the version.

    ``photos`` are held-out photo features (not projected), ``texts`` their words (None:
    a photo alone), ``labels`` their product rows, ``gallery`` the image features the
    index holds per product (``gallery_owners``), ``current`` the configured (A, B). The
    record has ``fitted`` False and a ``reason`` when there are too few queries, and
    ``better`` False unless the fitted weights beat the configured ones by ``min_gain``
    MRR@10.
    """
    keep = [i for i, t in enumerate(texts) if t]
    if len(keep) < MIN_FUSION_QUERIES:
        reason = (
            f"{len(keep)} held-out photos with a 'query' text; fitting the fusion weights "
            f"needs at least {MIN_FUSION_QUERIES}"
        )
        log.info("fusion weights not fitted: %s", reason)
        return {"fitted": False, "reason": reason, "n_queries": len(keep)}
    words = text_encoder.encode([texts[i] for i in keep])
    product_vecs = text_encoder.encode(list(product_texts))
    image_scores, text_scores = photo_text_scores(
        np.asarray(photos)[keep],
        np.asarray(words),
        np.asarray(gallery),
        np.asarray(gallery_owners, dtype=np.int64),
        np.asarray(product_vecs),
        projection,
    )
    relevant = np.zeros(image_scores.shape, dtype=bool)
    relevant[np.arange(len(keep)), np.asarray(labels, dtype=np.int64)[keep]] = True
    fit = fit_fusion_weights(image_scores, text_scores, relevant)
    a, _ = normalized_weights(*current)

    def measured(w: float) -> tuple[float, float]:
        scores = fused_score_matrix(image_scores, text_scores, w)
        return mrr_of_scores(scores, relevant), mrr_of_scores(scores, relevant, k=1)

    mrr_now, hit_now = measured(a * a)
    _, hit = measured(fit.image_weight**2)
    log.info(
        "fusion weights fitted on %d photos with words: A %.3f, B %.3f (MRR@10 %.3f; "
        "%.3f with the configured A %.3f)",
        len(keep),
        fit.image_weight,
        fit.text_weight,
        fit.mrr,
        mrr_now,
        a,
    )
    return {
        "fitted": True,
        "better": fit.mrr >= mrr_now + min_gain - 1e-12,
        "image_weight": round(fit.image_weight, 6),
        "text_weight": round(fit.text_weight, 6),
        "n_queries": len(keep),
        "mrr_at_10": round(fit.mrr, 6),
        "hit_at_1": round(hit, 6),
        "configured": {
            "image_weight": round(a, 6),
            "mrr_at_10": round(mrr_now, 6),
            "hit_at_1": round(hit_now, 6),
        },
    }


def adopted_weights(record: dict[str, Any] | None) -> dict[str, float]:
    """The settings a fit changes: ``image_weight`` and ``text_weight`` when it was fitted
    and gained enough over the configured ones, else nothing."""
    if record and record["fitted"] and record["better"]:
        return {"image_weight": record["image_weight"], "text_weight": record["text_weight"]}
    return {}


def describe_fusion(record: dict[str, Any] | None) -> str | None:
    """One line about a :func:`fit_photo_fusion` record, for the person running the command
    (None when no photo came with words: there is nothing to say)."""
    if not record or not record["n_queries"]:
        return None
    if not record["fitted"]:
        return f"not fitted: {record['reason']}"
    now = record["configured"]
    line = (
        f"fitted A {record['image_weight']:.3f}, B {record['text_weight']:.3f} on "
        f"{record['n_queries']} held-out photos with words: MRR@10 {record['mrr_at_10']:.3f}, "
        f"hit@1 {record['hit_at_1']:.3f}; configured A {now['image_weight']:.3f}: "
        f"{now['mrr_at_10']:.3f}, {now['hit_at_1']:.3f}"
    )
    if not record["better"]:
        line += f"; a gain under {MIN_FUSION_GAIN} MRR@10, so the configured weights stay"
    return line
