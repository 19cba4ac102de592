"""One consistent set of indexes, the records they were built from, and the decision policy.

A query reads the live :class:`Snapshot` once at its start, so swapping in a new index
version never mixes versions inside one answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from .answer_head import AnswerHead
from .catalog import Catalog, Product
from .decision import DecisionPolicy
from .faq import FAQBank, FAQEntry
from .filters import CatalogColumns, FilterMasks, ProductFilter
from .fusion import Fusion
from .index import VectorIndex
from .indexformat import MULTILINGUAL
from .outofscope import OutOfScopeModel
from .product_gate import GATE_SAMPLE, SURE_QUANTILE, calibrate_text_gate, photo_sure_level
from .ranking import head_of, out_of_scope_of
from .recommend import TitleIndex

__all__ = ["Snapshot"]

_PHOTO_SURE_LOCK = threading.Lock()
# names the calibration code in a stored calibration's name (PgIndex.shared_calibration):
# raise it when calibrate_text_gate or photo_sure_level change what they compute
CALIBRATION_FORMAT = 1


def _shared(index: VectorIndex, name: str, compute: Callable[[], list[Any]]) -> list[Any]:
    """A calibration of ``index``'s version: on pgvector computed by the first replica and
    read by the others (:meth:`~retrieval.vectorstore.pgindex.PgIndex.shared_calibration`);
    in-process indexes compute it."""
    shared = getattr(index, "shared_calibration", None)
    return shared(name, compute) if shared is not None else compute()


@dataclass(frozen=True)
class Snapshot:
    """Both indexes, their records and the decision policies of one moment."""

    faq_index: VectorIndex
    product_index: VectorIndex
    faq: FAQBank
    catalog: Catalog
    policy: DecisionPolicy
    # for questions with CJK characters, ranked by the FAQ index's multilingual companion
    multilingual_policy: DecisionPolicy | None = None

    @cached_property
    def catalog_columns(self) -> CatalogColumns:
        """The catalog's filterable fields as columns (built on the first filtered query)."""
        return CatalogColumns(self.catalog)

    def filter_masks(self, f: ProductFilter | None) -> FilterMasks | None:
        """``f`` resolved against this version's catalog; None for no or an empty filter."""
        return None if f is None or f.empty else FilterMasks(self.catalog_columns, f)

    @cached_property
    def categories(self) -> list[str]:
        """The catalog's categories as written, sorted (read once per version)."""
        return self.catalog.categories()

    @cached_property
    def title_index(self) -> TitleIndex:
        """The catalog's titles by their words (the products agents' replies name)."""
        return TitleIndex(self.catalog)

    @cached_property
    def answer_head(self) -> AnswerHead | None:
        """The FAQ version's answer head (re-scores its nearest entries), if it has one."""
        return head_of(self.faq_index)

    @cached_property
    def text_gate(self) -> tuple[float, str]:
        """The product threshold of English text questions and its source, calibrated on
        this version's FAQ phrasings on first use (:mod:`retrieval.product_gate`)."""
        false_show, floor = self.policy.product_false_show, self.policy.product_threshold

        def compute() -> list[Any]:
            return list(
                calibrate_text_gate(
                    self.faq_index, self.product_index, false_show=false_show, floor=floor
                )
            )

        name = (
            f"text_gate/{CALIBRATION_FORMAT} sample={GATE_SAMPLE} faq={self.faq_version} "
            f"false_show={false_show!r} floor={floor!r}"
        )
        threshold, source = _shared(self.product_index, name, compute)
        return float(threshold), str(source)

    def photo_sure(self, fusion: Fusion) -> tuple[float | None, str]:
        """The fused score a photo's best match needs to be sure, and its source: calibrated
        on this version's catalog pictures on first use (:func:`photo_sure_level`)."""
        cached = self.__dict__.get("_photo_sure")
        if cached is None:
            with _PHOTO_SURE_LOCK:  # concurrent first photos wait for one calibration
                cached = self.__dict__.get("_photo_sure")
                if cached is None:
                    name = (
                        f"photo_sure/{CALIBRATION_FORMAT} sample={GATE_SAMPLE} "
                        f"quantile={SURE_QUANTILE!r} weights={list(fusion.weights)!r}"
                    )
                    level, source = _shared(
                        self.product_index,
                        name,
                        lambda: list(photo_sure_level(self.product_index, fusion)),
                    )
                    cached = (None if level is None else float(level), str(source))
                    object.__setattr__(self, "_photo_sure", cached)  # once per snapshot
        return cached

    def warm(self) -> None:
        """Compute now what the first questions on this version would otherwise wait for:
        the product gate, the catalog's categories, filter columns and title index, the
        FAQ's language versions and (a bank stored on pgvector) its entries, up to the
        records cache's bound (on pgvector read from the store: seconds for a large
        catalog). Called off the shoppers'
        path, at start-up and before a version swap, with the photo sure level
        (:meth:`Retriever.photo_sure`, which knows whether a setting replaces it)."""
        _ = self.text_gate, self.categories, self.catalog_columns, self.title_index
        _ = self._language_versions
        preload = getattr(self.faq, "preload", None)
        if preload is not None:  # a stored bank: its answers read before the first question
            preload()

    @cached_property
    def out_of_scope(self) -> OutOfScopeModel | None:
        """The FAQ version's hand-off signal (questions without CJK characters), if any."""
        return out_of_scope_of(self.faq_index)

    @cached_property
    def multilingual_out_of_scope(self) -> OutOfScopeModel | None:
        """The hand-off signal of the multilingual view (Chinese questions), if any."""
        view = self.faq_index.companions.get(MULTILINGUAL)
        return out_of_scope_of(view) if view is not None else None

    @cached_property
    def _language_versions(self) -> dict[tuple[str, str], str]:
        return self.faq.language_versions()  # ids only: a stored bank's entries stay rows

    def entry_in_language(self, group: str, lang: str) -> FAQEntry | None:
        """The entry of an answer group written in ``lang``, if the bank has one."""
        entry_id = self._language_versions.get((group, lang))
        return None if entry_id is None else self.faq.get(entry_id)

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
        # on pgvector a version's records stay in the store, read by id
        stored_bank = getattr(faq_index, "faq_bank", None)
        faq = (
            stored_bank
            if isinstance(stored_bank, FAQBank)
            else FAQBank(
                {r["id"]: FAQEntry.from_record(r) for r in faq_index.meta.get("records", [])}
            )
        )
        stored = getattr(product_index, "catalog", None)
        catalog = (
            stored
            if isinstance(stored, Catalog)
            else Catalog(
                {r["id"]: Product.from_record(r) for r in product_index.meta.get("records", [])}
            )
        )
        return cls(faq_index, product_index, faq, catalog, policy, multilingual_policy)
