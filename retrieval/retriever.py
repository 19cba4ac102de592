"""The query path: clean -> encode -> search both indexes -> group and rank -> decide -> log.

:class:`Retriever` is built from settings by entry points, or from parts by tests. It holds
one :class:`Snapshot` (indexes, their records and the decision policy) and swaps it as a
whole, so a query always runs against one complete version.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .answer_head import AnswerHead
from .build import MULTILINGUAL, TEXT_ONLY
from .catalog import Catalog, Product
from .decision import Decision, DecisionPolicy, Verdict, decide, decide_products
from .encoders.base import Encoder
from .encoders.multilingual import has_cjk
from .errors import InputError, NotFound
from .faq import FAQBank, FAQEntry
from .faq_calibration import head_of, rank_entries
from .fusion import Fusion, fuse, fused_scores, modality_scores
from .images import load_image
from .index import VectorIndex
from .querytext import clean_query

__all__ = ["FAQCandidate", "ProductMatch", "QueryResult", "Retriever", "Snapshot"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FAQCandidate:
    entry: FAQEntry
    score: float
    matched: str  # which phrasing scored best: question, exampleN, answer

    def public(self) -> dict[str, Any]:
        return {**self.entry.public(), "score": round(self.score, 6), "matched": self.matched}


@dataclass(frozen=True)
class ProductMatch:
    product: Product
    score: float
    text_score: float | None
    image_score: float | None
    matched: str

    def public(self, image_url: str | None = None) -> dict[str, Any]:
        return {
            **self.product.public(image_url),
            "score": round(self.score, 6),
            "text_score": None if self.text_score is None else round(self.text_score, 6),
            "image_score": None if self.image_score is None else round(self.image_score, 6),
            "matched": self.matched,
        }


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

    @property
    def decision(self) -> Decision:
        return self.verdict.decision

    @property
    def answered_with(self) -> str | None:
        """'faq' or 'products' when the decision is to answer, else None."""
        return self.verdict.basis if self.verdict.decision is Decision.ANSWER else None


@dataclass(frozen=True)
class Snapshot:
    """One consistent set of indexes, the records they were built from, and the decision policy."""

    faq_index: VectorIndex
    product_index: VectorIndex
    faq: FAQBank
    catalog: Catalog
    policy: DecisionPolicy
    # for questions with CJK characters, ranked by the FAQ index's multilingual companion
    multilingual_policy: DecisionPolicy | None = None

    @cached_property
    def answer_head(self) -> AnswerHead | None:
        """The FAQ version's answer head (re-scores its nearest entries), if it has one."""
        return head_of(self.faq_index)

    @cached_property
    def _entries_by_language(self) -> dict[tuple[str, str], FAQEntry]:
        return {(e.group or e.id, e.lang): e for e in self.faq}

    def entry_in_language(self, group: str, lang: str) -> FAQEntry | None:
        """The entry of an answer group written in ``lang``, if the bank has one."""
        return self._entries_by_language.get((group, lang))

    @property
    def faq_version(self) -> str | None:
        return self.faq_index.meta.get("version")

    @property
    def product_version(self) -> str | None:
        return self.product_index.meta.get("version")

    @classmethod
    def from_indexes(
        cls,
        faq_index: VectorIndex,
        product_index: VectorIndex,
        policy: DecisionPolicy,
        multilingual_policy: DecisionPolicy | None = None,
    ) -> Snapshot:
        faq = FAQBank({r["id"]: FAQEntry.from_record(r) for r in faq_index.meta.get("records", [])})
        catalog = Catalog(
            {r["id"]: Product.from_record(r) for r in product_index.meta.get("records", [])}
        )
        return cls(faq_index, product_index, faq, catalog, policy, multilingual_policy)


@dataclass(frozen=True)
class Limits:
    max_query_chars: int = 2000
    max_image_bytes: int = 20_000_000
    max_image_pixels: int = 100_000_000
    default_k_products: int = 5
    default_k_faq: int = 3
    max_k: int = 100


def _merge(a: list[ProductMatch], b: list[ProductMatch], k: int) -> list[ProductMatch]:
    """The k best of two rankings of different products, by score (stable: ``a`` first on ties)."""
    return sorted(a + b, key=lambda m: -m.score)[:k]


def group_scores(replies: list[FAQCandidate]) -> list[float]:
    """Best score per answer group, best first: language versions of one answer are not rivals."""
    seen: set[str] = set()
    out = []
    for c in replies:
        group = c.entry.group or c.entry.id
        if group not in seen:
            seen.add(group)
            out.append(c.score)
    return out


class Retriever:
    """Answers text and/or image queries with ranked FAQ replies, product matches and a decision."""

    def __init__(
        self,
        *,
        text_encoder: Encoder,
        image_encoder: Encoder,
        fusion: Fusion,
        snapshot: Snapshot,
        limits: Limits = Limits(),
        query_log: Any = None,
        multilingual_encoder: Encoder | None = None,
    ):
        self.text_encoder = text_encoder
        self.multilingual_encoder = multilingual_encoder
        self.image_encoder = image_encoder
        self.fusion = fusion
        self.limits = limits
        self.query_log = query_log
        self._snapshot = snapshot
        self._swap_lock = threading.Lock()

    # ---- snapshot ------------------------------------------------------------------------
    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def swap(self, snapshot: Snapshot) -> Snapshot:
        """Make ``snapshot`` the live one; queries already running finish on the old one."""
        with self._swap_lock:
            old, self._snapshot = self._snapshot, snapshot
        return old

    # ---- inputs --------------------------------------------------------------------------
    def _k(self, k: int | None, default: int, what: str) -> int:
        if k is None:
            return default
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise InputError(f"{what} must be a whole number")
        if k < 1 or k > self.limits.max_k:
            raise InputError(f"{what} must be between 1 and {self.limits.max_k}, got {k}")
        return int(k)

    def read_image(self, image: bytes | str | Path | Image.Image) -> Image.Image:
        if isinstance(image, Image.Image):
            return image.convert("RGB")
        return load_image(
            image, max_bytes=self.limits.max_image_bytes, max_pixels=self.limits.max_image_pixels
        )

    # ---- the query path --------------------------------------------------------------------
    def query(
        self,
        text: str | None = None,
        image: bytes | str | Path | Image.Image | None = None,
        *,
        k_products: int | None = None,
        k_faq: int | None = None,
        conversation_id: str | None = None,
        channel: str = "api",
        image_ref: str | None = None,
        prefer_products: bool = False,
    ) -> QueryResult:
        """Rank FAQ replies and products and decide. With ``prefer_products`` (a product
        question, a photo) good enough product matches are the answer; otherwise, and when
        they are not good enough, the FAQ scores decide."""
        t0 = time.perf_counter()
        k_products = self._k(k_products, self.limits.default_k_products, "k_products")
        k_faq = self._k(k_faq, self.limits.default_k_faq, "k_faq")
        if image is not None and isinstance(text, str) and not text.strip():
            text = None  # a photo with an empty caption is an image query
        if text is not None:
            text = clean_query(text, max_chars=self.limits.max_query_chars)
        if text is None and image is None:
            raise InputError("the query is empty: give text, an image, or both")
        if conversation_id is not None:
            conversation_id = str(conversation_id)[:200]
        pil = self.read_image(image) if image is not None else None

        snap = self._snapshot  # one consistent version for the whole query
        ml_index = self._multilingual_index(snap.faq_index, text)
        # a CJK question without a photo ranks products by their multilingual view too
        ml_products = self._multilingual_index(snap.product_index, text) if pil is None else None
        ml = self.multilingual_encoder if ml_index is not None or ml_products is not None else None
        t1 = time.perf_counter()
        # a CJK question answered by both multilingual companions needs no English vector
        english = text is not None and (ml_index is None or ml_products is None)
        q_text = self.text_encoder.encode([text])[0] if english else None
        q_image = self.image_encoder.encode([pil])[0] if pil is not None else None
        q_ml = ml.encode([text])[0] if ml is not None else None
        q_faq = q_ml if ml_index is not None else q_text
        t2 = time.perf_counter()

        # a few extra entries so the top-1/top-2 margin sees the runner-up group even when k_faq is 1
        ranked = (
            self._faq(snap, q_faq, k_faq + 4, ml_index if ml_index is not None else snap.faq_index)
            if q_faq is not None
            else []
        )
        replies = ranked[:k_faq]
        policy = (
            snap.multilingual_policy
            if ml_index is not None and snap.multilingual_policy is not None
            else snap.policy
        )
        products = (
            self._text_matches(snap, q_ml, k_products, view=ml_products)
            if ml_products is not None and q_ml is not None
            else self._products(snap, q_text, q_image, k_products)
        )
        t3 = time.perf_counter()

        verdict = (
            decide(group_scores(ranked), policy)
            if ranked
            else Verdict(
                Decision.HANDOFF,
                None,
                None,
                "no text to match against the FAQ" if text is None else "no FAQ entries",
            )
        )
        if prefer_products:
            verdict = (
                decide_products(products[0].score if products else None, text is not None, policy)
                or verdict
            )
        result = QueryResult(
            query_id=str(uuid.uuid4()),
            text=text,
            has_image=pil is not None,
            verdict=verdict,
            policy=policy,
            replies=replies,
            products=products,
            faq_version=snap.faq_version,
            product_version=snap.product_version,
            timings_ms={
                "encode": (t2 - t1) * 1e3,
                "search": (t3 - t2) * 1e3,
            },
            faq_encoder=None if ml_index is None or ml is None else ml.id,
        )
        result.timings_ms["total"] = (time.perf_counter() - t0) * 1e3
        if self.query_log is not None:
            t4 = time.perf_counter()
            self.query_log.record(self._log_record(result, conversation_id, channel, image_ref))
            result.timings_ms["log"] = (time.perf_counter() - t4) * 1e3
        return result

    def record_handoff(
        self,
        text: str,
        *,
        conversation_id: str | None,
        channel: str = "rasa",
        reason: str = "the shopper asked for a person",
    ) -> str:
        """Log a hand-off that no retrieval preceded (e.g. "talk to a human"); returns its query id."""
        snap = self._snapshot
        result = QueryResult(
            query_id=str(uuid.uuid4()),
            text=clean_query(text, max_chars=self.limits.max_query_chars),
            has_image=False,
            verdict=Verdict(Decision.HANDOFF, None, None, reason),
            policy=snap.policy,
            replies=[],
            products=[],
            faq_version=snap.faq_version,
            product_version=snap.product_version,
            timings_ms={"encode": 0.0, "search": 0.0, "total": 0.0},
        )
        if self.query_log is not None:
            self.query_log.record(
                self._log_record(result, conversation_id, channel, None, encoded=False)
            )
        return result.query_id

    def _multilingual_index(self, index: VectorIndex, text: str | None) -> VectorIndex | None:
        """An index's multilingual companion (FAQ or products) when this question needs it (CJK
        characters) and it was built with this retriever's multilingual encoder; else None."""
        if text is None or self.multilingual_encoder is None or not has_cjk(text):
            return None
        companion = index.companions.get(MULTILINGUAL)
        if companion is None or companion.meta.get("text_encoder") != self.multilingual_encoder.id:
            return None
        return companion

    def _faq(
        self, snap: Snapshot, q_text: np.ndarray, k: int, index: VectorIndex | None = None
    ) -> list[FAQCandidate]:
        index = index or snap.faq_index
        head = snap.answer_head if index is snap.faq_index else None
        out = []
        for hit, score in rank_entries(index, head, q_text, k):
            entry = snap.faq.get(hit.item_id)
            if entry is not None:
                out.append(FAQCandidate(entry, score, hit.variant))
        return out

    def _products(
        self,
        snap: Snapshot,
        q_text: np.ndarray | None,
        q_image: np.ndarray | None,
        k: int,
        exclude: tuple[str, ...] = (),
    ) -> list[ProductMatch]:
        text_view = snap.product_index.companions.get("text")
        if q_image is None and q_text is not None and text_view is not None and not exclude:
            # a text-only query: its fused score is the text cosine (docs/fusion.md)
            return self._text_matches(snap, q_text, k)
        query = fuse(
            None if q_image is None else q_image[None, :],
            None if q_text is None else q_text[None, :],
            self.fusion,
            n=1,
        )[0]
        # over-fetch, then re-score exactly per modality (see docs/fusion.md)
        hits = snap.product_index.search_items(query, k * 2 + 8, exclude=exclude)
        matches = self._rescore(snap, query, hits, k)
        if q_text is not None and text_view is not None:
            matches = _merge(
                matches, self._text_matches(snap, q_text, k, exclude, pictureless=True), k
            )
        return matches

    def _text_matches(
        self,
        snap: Snapshot,
        q_text: np.ndarray,
        k: int,
        exclude: tuple[str, ...] = (),
        *,
        pictureless: bool = False,
        view: VectorIndex | None = None,
    ) -> list[ProductMatch]:
        """Products ranked by text cosine in the text view (or ``view``, e.g. the multilingual
        one); with ``pictureless``, only those without an image (which have no fused vector):
        a query with text and a photo scores them by their text alone, the one modality both
        sides have."""
        if view is None:
            view = snap.product_index.companions["text"]
        fetch = k * 2 + 8 if pictureless else k
        out = []
        for hit in view.search_items(q_text, fetch, exclude=exclude):
            if pictureless and hit.item_id in snap.product_index:
                continue
            product = snap.catalog.get(hit.item_id)
            if product is not None:
                score = float(np.clip(hit.score, -1.0, 1.0))
                out.append(ProductMatch(product, score, score, None, hit.variant))
        return out[:k]

    def _rescore(self, snap: Snapshot, query: np.ndarray, hits: list, k: int) -> list[ProductMatch]:
        if not hits:
            return []
        image_cos, text_cos = self._modality_scores(snap, query, hits)
        scores = fused_scores(image_cos, text_cos, self.fusion)
        order = [
            i
            for i in np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
            if not np.isnan(scores[i])
        ]
        out = []
        for i in order[:k]:
            product = snap.catalog.get(hits[i].item_id)
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
        self, snap: Snapshot, query: np.ndarray, hits: list
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-modality cosines of the hits. A one-modality query needs no stored vectors: the
        index similarity is that modality's cosine times its weight a² or b² (docs/fusion.md)."""
        f = self.fusion
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

    def similar_products(self, product_id: str, k: int | None = None) -> list[ProductMatch]:
        """Products most similar to a catalog product: its first fused vector (first image with
        its text) as the query, or its text vector when it has no image."""
        k = self._k(k, self.limits.default_k_products, "k")
        snap = self._snapshot
        view = snap.product_index.companions.get("text")
        exclude = (product_id,)
        if product_id in snap.product_index:
            _, vectors = snap.product_index.item_vectors(product_id)
            query = vectors[0]
            hits = snap.product_index.search_items(query, k * 2 + 8, exclude=exclude)
            matches = self._rescore(snap, query, hits, k)
            if view is not None and product_id in view:
                q_text = view.item_vectors(product_id)[1][0]
                matches = _merge(
                    matches, self._text_matches(snap, q_text, k, exclude, pictureless=True), k
                )
            return matches
        if view is not None and product_id in view:
            return self._text_matches(snap, view.item_vectors(product_id)[1][0], k, exclude)
        raise NotFound(f"no product with id '{product_id}'")

    # ---- logging -----------------------------------------------------------------------
    def _log_record(
        self,
        r: QueryResult,
        conversation_id: str | None,
        channel: str,
        image_ref: str | None,
        encoded: bool = True,
    ) -> dict[str, Any]:
        now = datetime.now(UTC)
        query = {
            "id": r.query_id,
            "created_at": now,
            "conversation_id": conversation_id,
            "channel": channel[:32],
            "text": r.text,
            "has_image": r.has_image,
            "image_ref": image_ref,
            "decision": r.decision.value,
            "top_score": r.verdict.top_score,
            "margin": r.verdict.margin,
            "answer_threshold": r.policy.answer_threshold,
            "suggest_threshold": r.policy.suggest_threshold,
            "faq_index_version": r.faq_version,
            "product_index_version": r.product_version,
            "text_encoder": (r.faq_encoder or self.text_encoder.id)
            if encoded and r.text is not None
            else None,
            "image_encoder": self.image_encoder.id if r.has_image else None,
            "encode_ms": r.timings_ms["encode"],
            "search_ms": r.timings_ms["search"],
            "total_ms": r.timings_ms["total"],
        }
        candidates = [
            {
                "query_id": r.query_id,
                "kind": "faq",
                "rank": rank,
                "item_id": c.entry.id,
                "score": c.score,
                "text_score": c.score,
                "image_score": None,
                "matched": c.matched,
                "index_version": r.faq_version,
            }
            for rank, c in enumerate(r.replies, start=1)
        ] + [
            {
                "query_id": r.query_id,
                "kind": "product",
                "rank": rank,
                "item_id": m.product.id,
                "score": m.score,
                "text_score": m.text_score,
                "image_score": m.image_score,
                "matched": m.matched,
                "index_version": r.product_version,
            }
            for rank, m in enumerate(r.products, start=1)
        ]
        decisions = [
            {
                "query_id": r.query_id,
                "created_at": now,
                "actor": "system",
                "decision": r.decision.value,
                "reason": r.verdict.reason,
            }
        ]
        return {"query": query, "candidates": candidates, "decisions": decisions}
