"""Ranking products for a query vector: the text view for text-only queries, the fused index
(re-scored exactly per modality) for photos, and products without a picture merged in by
their text. Pure functions over one :class:`~retrieval.snapshot.Snapshot` (docs/fusion.md).

A text-only query with its text and a lexical weight ``w`` > 0 is ranked hybrid when the
product index has a lexical index (:mod:`retrieval.lexical`): the text view's and the BM25
index's top candidates, each scored ``(1 - w) * text cosine + w * BM25 / the query's best
BM25`` (model numbers, which dense vectors blur, count through BM25)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .catalog import Product
from .errors import NotFound
from .filters import FilterMasks
from .fusion import Fusion, fuse, fused_scores, modality_scores
from .index import Hit, VectorIndex
from .indexformat import TEXT_ONLY, TEXT_VIEW
from .lexical.hybrid import max_normalized, weighted
from .snapshot import Snapshot

__all__ = ["ProductMatch", "rank_products", "similar_products", "text_matches"]


@dataclass(frozen=True)
class ProductMatch:
    """A product, its fused score and what each modality contributed.

    ``lexical_score``: the product's BM25 score divided by the query's best (1 = the best
    lexical match, 0 = no shared token); None when the query was ranked without the lexical
    signal. ``text_score`` stays the text cosine; ``score`` is then the hybrid score."""

    product: Product
    score: float
    text_score: float | None
    image_score: float | None
    matched: str
    lexical_score: float | None = None

    def public(self, image_url: str | None = None) -> dict[str, Any]:
        return {
            **self.product.public(image_url),
            "score": round(self.score, 6),
            "text_score": None if self.text_score is None else round(self.text_score, 6),
            "image_score": None if self.image_score is None else round(self.image_score, 6),
            "lexical_score": None if self.lexical_score is None else round(self.lexical_score, 6),
            "matched": self.matched,
        }


def _merge(a: list[ProductMatch], b: list[ProductMatch], k: int) -> list[ProductMatch]:
    """The k best of two rankings of different products, by score (stable: ``a`` first on ties)."""
    return sorted(a + b, key=lambda m: -m.score)[:k]


def rank_products(
    snap: Snapshot,
    fusion: Fusion,
    q_text: np.ndarray | None,
    q_image: np.ndarray | None,
    k: int,
    exclude: tuple[str, ...] = (),
    *,
    query_text: str | None = None,
    lexical_weight: float = 0.0,
    only: FilterMasks | None = None,
) -> list[ProductMatch]:
    """The ``k`` best products for a text and/or image query vector; a text-only query with
    its ``query_text`` and a ``lexical_weight`` > 0 is ranked hybrid (see the module). With
    ``only`` (a product filter resolved on this snapshot), only the products it keeps, found
    inside the search."""
    text_view = snap.product_index.companions.get(TEXT_VIEW)
    if q_image is None and q_text is not None and text_view is not None and not exclude:
        # a text-only query: its fused score is the text cosine (docs/fusion.md), blended
        # with BM25 when a lexical weight is given
        return text_matches(
            snap, q_text, k, query_text=query_text, lexical_weight=lexical_weight, only=only
        )
    query = fuse(
        None if q_image is None else q_image[None, :],
        None if q_text is None else q_text[None, :],
        fusion,
        n=1,
    )[0]
    # over-fetch, then re-score exactly per modality (see docs/fusion.md)
    index = snap.product_index
    hits = index.search_items(
        query, k * 2 + 8, exclude=exclude, allowed=None if only is None else only.labels(index)
    )
    matches = _rescore(snap, fusion, query, hits, k)
    if q_text is not None and text_view is not None:
        pictureless = text_matches(snap, q_text, k, exclude, pictureless=True, only=only)
        matches = _merge(matches, pictureless, k)
    return matches


def text_matches(
    snap: Snapshot,
    q_text: np.ndarray,
    k: int,
    exclude: tuple[str, ...] = (),
    *,
    pictureless: bool = False,
    view: VectorIndex | None = None,
    query_text: str | None = None,
    lexical_weight: float = 0.0,
    only: FilterMasks | None = None,
) -> list[ProductMatch]:
    """Products ranked by text cosine in the text view (or ``view``, e.g. the multilingual
    one); with ``pictureless``, only those without an image (which have no fused vector):
    a query with text and a photo scores them by their text alone, the one modality both
    sides have. With ``query_text`` and ``lexical_weight`` > 0 (and a lexical index in the
    snapshot), ranked hybrid by cosine and BM25 (:func:`_hybrid_matches`)."""
    if view is None:
        view = snap.product_index.companions[TEXT_VIEW]
    lexical = snap.product_index.lexical
    if not pictureless and query_text and lexical_weight > 0 and lexical is not None:
        hybrid = _hybrid_matches(snap, view, q_text, query_text, k, exclude, lexical_weight, only)
        if hybrid is not None:
            return hybrid
    fetch = k * 2 + 8 if pictureless else k
    out = []
    allowed = None if only is None else only.labels(view)
    hits = [
        hit
        for hit in view.search_items(q_text, fetch, exclude=exclude, allowed=allowed)
        if not (pictureless and hit.item_id in snap.product_index)
    ]
    products = snap.catalog.get_many(hit.item_id for hit in hits)  # one read on pgvector
    for hit in hits:
        product = products.get(hit.item_id)
        if product is not None:
            score = float(np.clip(hit.score, -1.0, 1.0))
            out.append(ProductMatch(product, score, score, None, hit.variant))
    return out[:k]


def _hybrid_matches(
    snap: Snapshot,
    view: VectorIndex,
    q_text: np.ndarray,
    query_text: str,
    k: int,
    exclude: tuple[str, ...],
    weight: float,
    only: FilterMasks | None = None,
) -> list[ProductMatch] | None:
    """The ``k`` best products by ``(1 - weight) * cosine + weight * normalised BM25`` over
    the union of the view's and the lexical index's top ``max(4k, 50)``; every candidate gets
    its exact cosine (its best stored vector in ``view``) and its BM25 score. None when the
    query shares no token with any product (no lexical signal: the dense ranking stands)."""
    lexical = snap.product_index.lexical
    assert lexical is not None
    n = max(k * 4, 50)
    scores = lexical.scores(query_text)  # one tokenising and BM25 pass for both uses below
    if scores is None:
        return None
    lex_hits = scores.top(n, exclude=exclude, allowed=None if only is None else only.ids)
    if not lex_hits:
        return None
    dense: dict[str, float] = {}
    variant: dict[str, str] = {}
    allowed = None if only is None else only.labels(view)
    for hit in view.search_items(q_text, n, exclude=exclude, allowed=allowed):
        dense[hit.item_id] = float(np.clip(hit.score, -1.0, 1.0))
        variant[hit.item_id] = hit.variant
    missing = (item_id for item_id, _ in lex_hits if item_id not in dense)
    for item_id, (sim, best) in view.best_variants(missing, q_text).items():
        dense[item_id] = float(np.clip(sim, -1.0, 1.0))
        variant[item_id] = best
    bm25 = scores.of(dense)
    lex = max_normalized(bm25)
    out = []
    ranked = weighted(dense, bm25, weight)
    products = snap.catalog.get_many(item_id for item_id, _ in ranked[:k])
    for item_id, score in ranked:
        product = products.get(item_id) or snap.catalog.get(item_id)
        if product is None:
            continue
        out.append(
            ProductMatch(
                product, score, dense[item_id], None, variant[item_id], lex.get(item_id, 0.0)
            )
        )
        if len(out) == k:
            break
    return out


def _rescore(
    snap: Snapshot, fusion: Fusion, query: np.ndarray, hits: list[Hit], k: int
) -> list[ProductMatch]:
    if not hits:
        return []
    image_cos, text_cos = _modality_scores(snap, fusion, query, hits)
    scores = fused_scores(image_cos, text_cos, fusion)
    order = [
        i
        for i in np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
        if not np.isnan(scores[i])
    ]
    out = []
    products = snap.catalog.get_many(hits[i].item_id for i in order[:k])
    for i in order[:k]:
        product = products.get(hits[i].item_id)
        if product is None:
            continue
        out.append(
            ProductMatch(
                product,
                float(scores[i]),
                None if np.isnan(text_cos[i]) else float(text_cos[i]),
                None if np.isnan(image_cos[i]) else float(image_cos[i]),
                hits[i].variant,
            )
        )
    return out


def _modality_scores(
    snap: Snapshot, f: Fusion, query: np.ndarray, hits: list[Hit]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-modality cosines of the hits. A one-modality query needs no stored vectors: the
    index similarity is that modality's cosine times its weight a² or b² (docs/fusion.md)."""
    k = f.image_part_dim
    has_image_q, has_text_q = bool(np.any(query[:k])), bool(np.any(query[k:]))
    sims = np.array([h.score for h in hits], dtype=np.float32)
    nan = np.full(len(hits), np.nan, dtype=np.float32)
    w_image, w_text = f.weights
    if has_text_q and not has_image_q and w_text > 0:
        return nan, np.clip(sims / w_text, -1.0, 1.0)  # every product has a text part
    if has_image_q and not has_text_q and w_image > 0:
        has_image = np.array([h.variant != TEXT_ONLY for h in hits])
        return np.where(has_image, np.clip(sims / w_image, -1.0, 1.0), np.nan).astype(
            np.float32
        ), nan
    return modality_scores(query, snap.product_index.vectors([h.label for h in hits]), f)


def similar_products(
    snap: Snapshot, fusion: Fusion, product_id: str, k: int, only: FilterMasks | None = None
) -> list[ProductMatch]:
    """Products most similar to a catalog product: its first fused vector (first image with
    its text) as the query, or its text vector when it has no image. With ``only``, only the
    products it keeps (e.g. cheaper ones of the same category, for a follow-up question)."""
    view = snap.product_index.companions.get(TEXT_VIEW)
    exclude = (product_id,)
    if product_id in snap.product_index:
        _, vectors = snap.product_index.item_vectors(product_id)
        query = vectors[0]
        index = snap.product_index
        allowed = None if only is None else only.labels(index)
        hits = index.search_items(query, k * 2 + 8, exclude=exclude, allowed=allowed)
        matches = _rescore(snap, fusion, query, hits, k)
        if view is not None and product_id in view:
            q_text = view.item_vectors(product_id)[1][0]
            pictureless = text_matches(snap, q_text, k, exclude, pictureless=True, only=only)
            matches = _merge(matches, pictureless, k)
        return matches
    if view is not None and product_id in view:
        return text_matches(snap, view.item_vectors(product_id)[1][0], k, exclude, only=only)
    raise NotFound(f"no product with id '{product_id}'")
