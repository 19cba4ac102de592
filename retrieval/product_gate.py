"""Whether a question is about products, and which product matches are shown.

Every question is ranked against the catalog, so a question about delivery times still gets
a "best" product (a pear at a low score). The gate decides whether those matches are shown:
a match is shown when its **gate score** reaches the **product threshold**; a question is
*about products* when its best match is shown.

* Text questions (English route): the gate score is the match's **text cosine**. The hybrid
  ranking score is not used: its BM25 part is normalised by the question's own best BM25,
  so every question that shares one word with the catalog gets a full lexical share.
  The threshold is **calibrated on the shop's own FAQ**: the FAQ phrasings are questions
  that are not about products, and the threshold is the ``1 - false_show`` quantile of
  their best product text cosines (``product_false_show``, 10 % by default: at most one in
  ten of the shop's own FAQ phrasings would show products), never below
  ``product_answer_threshold``.
* Chinese questions (the multilingual product view): text cosine of that view, against
  ``product_answer_threshold`` (the FAQ's multilingual companion holds one centroid per
  entry, too few to calibrate on).
* Photos (alone or with text): the fused score, against ``photo_answer_threshold``.

The calibration runs once per snapshot, on the first question that needs it (a k=1 search
per sampled phrasing, about 30 ms for 2,000 phrasings). Pure functions plus that one
search; nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

from .fusion import Fusion
from .index import VectorIndex
from .indexformat import TEXT_ONLY, TEXT_VIEW


class Scored(Protocol):
    """A product match as the gate reads it (:class:`retrieval.product_search.ProductMatch`)."""

    @property
    def score(self) -> float: ...

    @property
    def text_score(self) -> float | None: ...


M = TypeVar("M", bound=Scored)

__all__ = [
    "GATE_SAMPLE",
    "SURE_QUANTILE",
    "ProductGate",
    "calibrate_text_gate",
    "photo_sure_level",
    "faq_side_scores",
    "gate_threshold",
]

GATE_SAMPLE = 2000  # FAQ phrasings scored to calibrate the text gate (seeded sample above)
# a photo's match is sure when it is closer than this share of the catalog's pictures are to
# a picture of another product (chosen before measuring; docs/image-adaptation.md)
SURE_QUANTILE = 0.9
SAME_PICTURE = 0.99  # image cosine from which two products show the same picture (variants)
SAME_PICTURE_LOOKAHEAD = 8  # other products looked at for a picture that is not the same
ANSWER_VARIANT = "answer"  # the FAQ's answer texts are not questions: not calibrated on


@dataclass(frozen=True)
class ProductGate:
    """The product threshold a question was held to, and its best gate score."""

    threshold: float
    score: float | None  # the best shown-or-not match's gate score; None: no match
    measure: str  # "text cosine" or "fused score"
    source: str  # where the threshold came from, in words

    @property
    def about_products(self) -> bool:
        return self.score is not None and self.score >= self.threshold

    def gate_score(self, match: Scored) -> float:
        if self.measure == "fused score":
            return match.score
        return match.text_score if match.text_score is not None else match.score

    def shown(self, matches: list[M]) -> list[M]:
        """The matches that pass the gate, in their ranked order."""
        return [m for m in matches if self.gate_score(m) >= self.threshold]

    def describe(self) -> dict[str, object]:
        return {
            "about_products": self.about_products,
            "threshold": round(self.threshold, 4),
            "score": None if self.score is None else round(self.score, 4),
            "measure": self.measure,
            "source": self.source,
        }


def gate_threshold(non_product: np.ndarray, *, false_show: float, floor: float) -> float:
    """The ``1 - false_show`` quantile of the non-product questions' best product scores,
    never below ``floor`` (the floor alone when there are none)."""
    scores = np.asarray(non_product, dtype=np.float64).reshape(-1)
    if scores.size == 0:
        return float(floor)
    q = float(np.quantile(scores, min(1.0, max(0.0, 1.0 - false_show))))
    return max(float(floor), q)


def faq_side_scores(
    faq_index: VectorIndex, text_view: VectorIndex, *, sample: int = GATE_SAMPLE, seed: int = 0
) -> np.ndarray:
    """The best product text cosine of each FAQ phrasing (a seeded sample of at most
    ``sample``; answer texts left out). Empty when either index is empty or the two were
    encoded in different spaces (dimensions differ)."""
    if len(faq_index) == 0 or len(text_view) == 0 or faq_index.dim != text_view.dim:
        return np.zeros(0)
    labels = faq_index.labels_without_variant(ANSWER_VARIANT)
    if len(labels) > sample:
        rng = np.random.default_rng(seed)
        labels = sorted(rng.choice(labels, size=sample, replace=False).tolist())
    vectors = faq_index.vectors(labels)
    best = [max((h.score for h in text_view.search(v, 1)), default=-1.0) for v in vectors]
    return np.clip(np.asarray(best, dtype=np.float64), -1.0, 1.0)


def calibrate_text_gate(
    faq_index: VectorIndex,
    product_index: VectorIndex,
    *,
    false_show: float,
    floor: float,
) -> tuple[float, str]:
    """The English text gate's threshold and its source in words."""
    text_view = product_index.companions.get(TEXT_VIEW)
    faq_encoder = faq_index.meta.get("text_encoder")
    product_encoder = product_index.meta.get("text_encoder")
    if text_view is None or (faq_encoder and product_encoder and faq_encoder != product_encoder):
        return float(floor), "product_answer_threshold (no FAQ in the product text space)"
    scores = faq_side_scores(faq_index, text_view)
    if scores.size == 0:
        return float(floor), "product_answer_threshold (no FAQ phrasings to calibrate on)"
    threshold = gate_threshold(scores, false_show=false_show, floor=floor)
    share = f"{1 - false_show:.0%}"
    if threshold > floor:
        return threshold, (
            f"calibrated: {share} of {scores.size} FAQ phrasings score below it "
            "(product_false_show)"
        )
    return threshold, (
        f"product_answer_threshold (the {share} quantile of {scores.size} FAQ phrasings' "
        "scores is lower)"
    )


def photo_sure_level(
    product_index: VectorIndex,
    fusion: Fusion,
    *,
    quantile: float = SURE_QUANTILE,
    sample: int = GATE_SAMPLE,
    seed: int = 0,
) -> tuple[float | None, str]:
    """The fused score a photo's best match needs to be *sure*, from the catalog's own
    pictures: each picture's image cosine to the nearest picture of another product (a
    seeded sample of at most ``sample`` pictures, found in the index), and the level is
    their ``quantile``. Below it, the match is no closer than two different products of this
    shop look to each other. None (never unsure) when fewer than two products have a
    picture."""
    labels, items = product_index.label_items()
    pictures = set(product_index.labels_without_variant(TEXT_ONLY))
    rows = [
        (int(lb), item) for lb, item in zip(labels.tolist(), items, strict=True) if lb in pictures
    ]
    if len({item for _, item in rows}) < 2:
        return None, "none (fewer than two products have a picture)"
    if len(rows) > sample:
        keep = np.random.default_rng(seed).choice(len(rows), size=sample, replace=False)
        rows = [rows[i] for i in sorted(keep.tolist())]
    k = fusion.image_part_dim
    w_image = fusion.weights[0]
    if w_image <= 0:
        return None, "none (image weight 0: photos are not matched by their picture)"
    vectors = product_index.vectors([lb for lb, _ in rows])
    best = []
    for (_, item), v in zip(rows, vectors, strict=True):
        query = np.zeros(fusion.dim, dtype=np.float32)
        query[:k] = v[:k]  # the picture alone, as a photo query is fused (a times its unit vector)
        for hit in product_index.search_items(query, SAME_PICTURE_LOOKAHEAD, exclude=(item,)):
            cosine = hit.score / w_image  # the index gives a² x the image cosine
            if cosine < SAME_PICTURE:  # one picture reused by variants is not a rival
                best.append(cosine)
                break
    if not best:
        return None, "none (no other product's picture found)"
    level = float(np.quantile(np.clip(best, -1.0, 1.0), quantile))
    return level, (
        f"calibrated: {quantile:.0%} of {len(best)} catalog pictures are less similar to "
        "another product's picture"
    )
