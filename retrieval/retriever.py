"""The query path: clean -> route -> encode -> search both indexes -> rank -> decide -> log.

Every caller runs it: the HTTP service, the Rasa custom actions, ``retrieval query``,
``retrieval eval`` and ``retrieval bench``. :meth:`Retriever.query` answers one question as a
shopper's question is answered; :meth:`Retriever.query_batch` answers many with the same
routing, ranking and decision, encoding them in batches (the evaluation's fast path).

:class:`Retriever` is built from settings by entry points (:mod:`retrieval.runtime`), or
from parts by tests. It holds one :class:`~retrieval.snapshot.Snapshot` (indexes, their
records and the decision policy) and swaps it as a whole, so a query always runs against
one complete version.

What happens after encoding (ranking and the decision) is :func:`retrieval.answering.answer`,
the same for both forms; the query log's rows are built by :mod:`retrieval.query_records`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
from PIL import Image

from .answering import RUNNER_UP as RUNNER_UP  # re-exported: the path's own constant
from .answering import Prepared, Route, answer, photo_sure_for
from .catalog import Product
from .decision import Verdict
from .encoders.base import Encoder
from .errors import InputError
from .filters import FilterMasks, ProductFilter, parse_filter
from .fusion import Fusion
from .images import load_image
from .index import VectorIndex
from .indexformat import MULTILINGUAL
from .product_search import ProductMatch, similar_products
from .query_records import (
    answered_rows,
    followup_verdict,
    handoff_verdict,
    unretrieved_result,
    unretrieved_rows,
)
from .querytext import clean_query, has_cjk
from .results import QueryResult
from .settings import LEXICAL_WEIGHT
from .snapshot import Snapshot
from .store.logrecord import QueryLogSink

__all__ = ["ImageInput", "InFlight", "Limits", "Retriever"]

log = logging.getLogger(__name__)

# similar products with a per-product test on pgvector: the nearest this many at most are
# tested (a test that keeps fewer than k of them returns fewer)
SIMILAR_KEEP_MAX = 4096

ImageInput: TypeAlias = bytes | str | Path | Image.Image


@dataclass(frozen=True)
class Limits:
    max_query_chars: int = 2000
    max_image_bytes: int = 20_000_000
    max_image_pixels: int = 100_000_000
    default_k_products: int = 5
    default_k_faq: int = 3
    max_k: int = 100
    # BM25's weight in text-only product ranking (settings.lexical_weight); 0 = dense only
    lexical_weight: float = LEXICAL_WEIGHT


class InFlight:
    """A count of the questions inside a ``with`` block, across threads."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __enter__(self) -> int:
        with self._lock:
            self.count += 1
            return self.count

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.count -= 1


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
        query_log: QueryLogSink | None = None,
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
        self._in_flight = InFlight()  # questions being encoded or answered now

    # ---- snapshot ------------------------------------------------------------------------
    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def swap(self, snapshot: Snapshot) -> Snapshot:
        """Make ``snapshot`` the live one; queries already running finish on the old one.
        What its first questions would wait for is computed first, off the shoppers' path
        (:meth:`Snapshot.warm`; on pgvector the first replica to calibrate the gates stores
        them for the others)."""
        self.photo_sure(snapshot)
        snapshot.warm()
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

    def product_filter(self, obj: object) -> ProductFilter | None:
        """A caller's filter object checked against the live catalog's categories (see
        :func:`~retrieval.filters.parse_filter`); None for none."""
        if obj is None:
            return None
        return parse_filter(obj, self._snapshot.catalog_columns.category_names)

    def read_image(self, image: ImageInput) -> Image.Image:
        if isinstance(image, Image.Image):
            return image.convert("RGB")
        return load_image(
            image, max_bytes=self.limits.max_image_bytes, max_pixels=self.limits.max_image_pixels
        )

    def _prepare(self, text: str | None, image: ImageInput | None) -> Prepared:
        """Clean the text and decode the photo; refuse an empty query."""
        if image is not None and isinstance(text, str) and not text.strip():
            text = None  # a photo with an empty caption is an image query
        if text is not None:
            text = clean_query(text, max_chars=self.limits.max_query_chars)
        if text is None and image is None:
            raise InputError("the query is empty: give text, an image, or both")
        return Prepared(text, self.read_image(image) if image is not None else None)

    # ---- routing ---------------------------------------------------------------------------
    def _route(self, snap: Snapshot, q: Prepared) -> Route:
        faq_view = self._multilingual_index(snap.faq_index, q.text)
        # a CJK question without a photo ranks products by their multilingual view too
        product_view = (
            self._multilingual_index(snap.product_index, q.text) if q.image is None else None
        )
        return Route(faq_view, product_view, q.text is not None)

    def _multilingual_index(self, index: VectorIndex, text: str | None) -> VectorIndex | None:
        """An index's multilingual companion (FAQ or products) when this question needs it (CJK
        characters) and it was built with this retriever's multilingual encoder; else None."""
        if text is None or self.multilingual_encoder is None or not has_cjk(text):
            return None
        companion = index.companions.get(MULTILINGUAL)
        if companion is None or companion.meta.get("text_encoder") != self.multilingual_encoder.id:
            return None
        return companion

    # ---- the query path --------------------------------------------------------------------
    def query(
        self,
        text: str | None = None,
        image: ImageInput | None = None,
        *,
        k_products: int | None = None,
        k_faq: int | None = None,
        conversation_id: str | None = None,
        channel: str = "api",
        image_ref: str | None = None,
        prefer_products: bool | None = False,
        product_filter: ProductFilter | None = None,
        log: bool = True,
    ) -> QueryResult:
        """Rank FAQ replies and products and decide. With ``prefer_products`` (a product
        question, a photo) good enough product matches are the answer; otherwise, and when
        they are not good enough, the FAQ scores decide. ``None`` (the bot, when its NLU
        did not say): products good enough for the product gate answer a question the FAQ
        cannot answer ("show me your peppers"), a confident FAQ answer still wins. ``log``
        false: nothing is logged (the bot's check whether small talk is really a question). ``product_filter`` keeps only the
        products it matches (category, price, stock), applied inside the search."""
        t0 = time.perf_counter()
        k_products = self._k(k_products, self.limits.default_k_products, "k_products")
        k_faq = self._k(k_faq, self.limits.default_k_faq, "k_faq")
        q = self._prepare(text, image)
        if conversation_id is not None:
            conversation_id = str(conversation_id)[:200]
        snap = self._snapshot  # one consistent version for the whole query
        route = self._route(snap, q)
        with self._in_flight:  # from encoding to the answer: how busy the process is
            t1 = time.perf_counter()
            assert self.multilingual_encoder is not None or not route.multilingual
            q_text = self.text_encoder.encode([q.text])[0] if route.english else None
            q_image = self.image_encoder.encode([q.image])[0] if q.image is not None else None
            q_ml = (
                self.multilingual_encoder.encode([q.text])[0]  # type: ignore[union-attr]
                if route.multilingual
                else None
            )
            t2 = time.perf_counter()
            result = answer(
                snap,
                q,
                route,
                q_text,
                q_image,
                q_ml,
                k_products,
                k_faq,
                prefer_products,
                product_filter,
                fusion=self.fusion,
                lexical_weight=self.limits.lexical_weight,
                multilingual_encoder=self.multilingual_encoder,
                alone=self._in_flight.count == 1,
            )
        t3 = time.perf_counter()
        result.timings_ms.update(
            {"encode": (t2 - t1) * 1e3, "search": (t3 - t2) * 1e3, "total": (t3 - t0) * 1e3}
        )
        if log:
            self.log_result(
                result, conversation_id=conversation_id, channel=channel, image_ref=image_ref
            )
        return result

    def log_result(
        self,
        result: QueryResult,
        *,
        conversation_id: str | None,
        channel: str = "api",
        image_ref: str | None = None,
    ) -> None:
        """Log a result (what :meth:`query` does unless told ``log=False``): for a caller
        that chose between results first, so only the one the shopper sees is on record."""
        if self.query_log is None:
            return
        if conversation_id is not None:
            conversation_id = str(conversation_id)[:200]
        t0 = time.perf_counter()
        self.query_log.record(
            answered_rows(
                result,
                conversation_id=conversation_id,
                channel=channel,
                image_ref=image_ref,
                text_encoder=self.text_encoder,
                image_encoder=self.image_encoder,
            )
        )
        result.timings_ms["log"] = (time.perf_counter() - t0) * 1e3

    def query_batch(
        self,
        texts: Sequence[str | None],
        images: Sequence[ImageInput | None] | None = None,
        *,
        k_products: int | None = None,
        k_faq: int | None = None,
        prefer_products: bool = False,
        product_filters: Sequence[ProductFilter | None] | None = None,
    ) -> list[QueryResult]:
        """Answer many queries exactly as :meth:`query` answers each (same cleaning, routing,
        ranking and decision, on one snapshot), encoding each encoder's share in one batch.
        Nothing is logged. Timings: ``encode`` is this query's share of its batches,
        ``search`` its own ranking and decision. ``product_filters``: one (or None) per query."""
        images = list(images) if images is not None else [None] * len(texts)
        if len(images) != len(texts):
            raise InputError("query_batch: one image (or None) per text expected")
        filters = list(product_filters) if product_filters is not None else [None] * len(texts)
        if len(filters) != len(texts):
            raise InputError("query_batch: one product filter (or None) per text expected")
        k_products = self._k(k_products, self.limits.default_k_products, "k_products")
        k_faq = self._k(k_faq, self.limits.default_k_faq, "k_faq")
        prepared = [self._prepare(t, i) for t, i in zip(texts, images, strict=True)]
        snap = self._snapshot
        routes = [self._route(snap, q) for q in prepared]
        n = len(prepared)
        vectors: dict[str, list[np.ndarray | None]] = {}
        share = np.zeros(n)
        cleaned: list[Any] = [q.text for q in prepared]
        photos: list[Any] = [q.image for q in prepared]
        wanted: dict[str, tuple[Encoder | None, list[bool], list[Any]]] = {
            "text": (self.text_encoder, [r.english for r in routes], cleaned),
            "image": (self.image_encoder, [p is not None for p in photos], photos),
            "multilingual": (self.multilingual_encoder, [r.multilingual for r in routes], cleaned),
        }
        for name, (encoder, needed, items) in wanted.items():
            rows = [i for i in range(n) if needed[i]]
            out: list[np.ndarray | None] = [None] * n
            if rows:
                assert encoder is not None
                t0 = time.perf_counter()
                encoded = encoder.encode([items[i] for i in rows])
                spent = (time.perf_counter() - t0) * 1e3 / len(rows)
                for i, vec in zip(rows, encoded, strict=True):
                    out[i] = vec
                    share[i] += spent
            vectors[name] = out
        results = []
        for i, (q, route) in enumerate(zip(prepared, routes, strict=True)):
            t0 = time.perf_counter()
            result = answer(
                snap,
                q,
                route,
                vectors["text"][i],
                vectors["image"][i],
                vectors["multilingual"][i],
                k_products,
                k_faq,
                prefer_products,
                filters[i],
                fusion=self.fusion,
                lexical_weight=self.limits.lexical_weight,
                multilingual_encoder=self.multilingual_encoder,
            )
            search = (time.perf_counter() - t0) * 1e3
            result.timings_ms.update(
                {"encode": float(share[i]), "search": search, "total": float(share[i]) + search}
            )
            results.append(result)
        return results

    def photo_sure(self, snap: Snapshot | None = None) -> tuple[float | None, str]:
        """The level a photo's best match must reach to be answered as sure, and its source:
        the setting, or (when it is empty) the level calibrated on the catalog's pictures."""
        return photo_sure_for(snap or self.snapshot, self.fusion)

    def record_handoff(
        self,
        text: str,
        *,
        conversation_id: str | None,
        channel: str = "rasa",
        reason: str = "the shopper asked for a person",
    ) -> str:
        """Log a hand-off that no retrieval preceded (e.g. "talk to a human"); returns its query id."""
        return self._record(text, handoff_verdict(reason), [], conversation_id, channel)

    def record_followup(
        self,
        text: str,
        products: list[ProductMatch],
        *,
        conversation_id: str | None,
        reason: str,
        channel: str = "rasa",
        suggested: bool = False,
    ) -> str:
        """Log a follow-up answered from the conversation ("how much is it?", "anything
        cheaper?"): decision ``answer`` on products, with the cards as its candidates (the
        referenced product itself with score 1.0); returns its query id. ``suggested``: the
        cards are the bot's suggestions (cheaper, similar, popular ...), not the product the
        shopper asked about, so the recommendations do not count them as interest."""
        verdict = followup_verdict(products, reason, suggested=suggested)
        return self._record(text, verdict, products, conversation_id, channel)

    def _record(
        self,
        text: str,
        verdict: Verdict,
        products: list[ProductMatch],
        conversation_id: str | None,
        channel: str,
    ) -> str:
        """Log a turn that no retrieval preceded (:mod:`retrieval.query_records`)."""
        result = unretrieved_result(
            text, verdict, products, self._snapshot, max_query_chars=self.limits.max_query_chars
        )
        if self.query_log is not None:
            self.query_log.record(
                unretrieved_rows(result, conversation_id=conversation_id, channel=channel)
            )
        return result.query_id

    def similar_products(
        self,
        product_id: str,
        k: int | None = None,
        *,
        keep: Callable[[Product], bool] | None = None,
    ) -> list[ProductMatch]:
        """Products most similar to a catalog product (see
        :func:`~retrieval.product_search.similar_products`); with ``keep``, only the products
        it accepts (searched among them, not picked from a fixed top list)."""
        k = self._k(k, self.limits.default_k_products, "k")
        snap = self._snapshot
        only = None
        if keep is not None and getattr(snap.product_index, "filters_in_sql", False):
            # a catalog in the vector store is not tested product by product: the nearest
            # products are fetched, tested, and fetched wider until k pass (or SIMILAR_KEEP_MAX)
            fetch = max(4 * k, 32)
            while True:
                found = similar_products(snap, self.fusion, product_id, fetch)
                passed = [m for m in found if keep(m.product)]
                if len(passed) >= k or len(found) < fetch or fetch >= SIMILAR_KEEP_MAX:
                    return passed[:k]
                fetch = min(4 * fetch, SIMILAR_KEEP_MAX)
        if keep is not None:
            catalog = snap.catalog

            def kept(pid: str) -> bool:
                product = catalog.get(pid)
                return product is not None and keep(product)

            only = FilterMasks(snap.catalog_columns, ProductFilter(), kept)
        return similar_products(snap, self.fusion, product_id, k, only)
