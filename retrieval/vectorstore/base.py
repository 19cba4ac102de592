"""The vector-store contract: what every backend (hnswlib on disk, PostgreSQL + pgvector)
offers the code that builds, publishes and searches indexes.

A store holds, per kind (``faq``, ``products``), numbered **versions**. A version is a
**collection** of records: one vector per ``(item_id, variant)`` (a product may have
several photos, an FAQ entry several phrasings) with the product attributes that filters
test (category, price, stock, attributes). A new version is created empty, filled,
then **published**: from that moment every reader that opens the kind's current version
gets it, and no reader ever sees a half-filled one. Rollback publishes an older version
again; ``prune`` deletes old ones, never the current.

Searches return items, each scored by its best variant, as cosine similarities (vectors are
unit length). A filter is a :class:`~retrieval.filters.ProductFilter`; its meaning is
:meth:`ProductFilter.matches`, and each backend applies it inside its search (a mask over
the graph for hnswlib, a SQL ``WHERE`` for pgvector), so a filtered search still returns
``k`` items when that many pass.

The contract tests (``tests/integration/test_vector_store_contract.py``) run the same checks
on every backend: ranking against brute force, filters, add / update / delete, publish and
rollback, readers during a publish.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from ..catalog import Product
from ..filters import ProductFilter

__all__ = [
    "KINDS",
    "Collection",
    "Record",
    "StoreHit",
    "VectorStore",
    "check_kind",
    "check_version",
    "passes",
    "validate",
]

KINDS = ("faq", "products")
# version ids are made by indexfolders.new_version_id: "<kind>-<UTC time>-<hex>"
_VERSION = re.compile(r"[a-z]+-[0-9]{8}T[0-9]{12}-[0-9a-f]{6}")


@dataclass(frozen=True)
class Record:
    """One vector of an item, with what filters test (products; FAQ entries leave them empty)."""

    item_id: str
    variant: str
    vector: np.ndarray
    category: str = ""
    price: float | None = None
    stock: int | None = None
    attributes: frozenset[str] = field(default_factory=frozenset)
    # the vector's number in the index version it is copied from (hnswlib's label), which
    # the query path names vectors by; None: the backend numbers it
    label: int | None = None

    def as_product(self) -> Product:
        """The record's filterable fields as a product, for :meth:`ProductFilter.matches`."""
        return Product(
            id=self.item_id,
            title="",
            category=self.category,
            price=self.price,
            stock=self.stock,
            attributes=tuple(sorted(self.attributes)),
        )


class StoreHit(NamedTuple):
    """An item found by a search: its best variant and that variant's cosine similarity."""

    item_id: str
    score: float
    variant: str
    label: int = -1  # the vector's label (-1: the backend has none)


def passes(record: Record, where: ProductFilter | None) -> bool:
    """Whether ``record`` passes ``where`` (the reference meaning every backend must match)."""
    return where is None or where.empty or where.matches(record.as_product())


def validate(records: Sequence[Record], dim: int) -> None:
    """Refuse what a backend would store differently or a filter would misread: a vector of
    another size or with NaN, a price that is not a finite amount >= 0, a stock that is not
    a whole number >= 0, the same (item, variant) twice in one batch."""
    seen: set[tuple[str, str]] = set()
    for r in records:
        key = (r.item_id, r.variant)
        if key in seen:
            raise ValueError(f"{key} appears twice in one batch")
        seen.add(key)
        v = np.asarray(r.vector)
        if v.size != dim:
            raise ValueError(f"{key}: a vector of {v.size} dimensions for a {dim}-d store")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{key}: the vector contains NaN or infinity")
        if r.price is not None and not (math.isfinite(r.price) and r.price >= 0):
            raise ValueError(f"{key}: price {r.price!r} is not an amount >= 0")
        if r.stock is not None and not (isinstance(r.stock, int) and 0 <= r.stock < 2**31):
            raise ValueError(f"{key}: stock {r.stock!r} is not a whole number >= 0")


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {', '.join(KINDS)}")
    return kind


def check_version(kind: str, version: str) -> str:
    """A version id as :func:`retrieval.indexfolders.new_version_id` makes them (it becomes part of
    a table name in SQL backends, so nothing else is accepted)."""
    if not _VERSION.fullmatch(version) or not version.startswith(f"{kind}-"):
        raise ValueError(f"not a {kind} version id: {version!r}")
    return version


class Collection(Protocol):
    """One version of one kind: its records, searchable; writable until published."""

    @property
    def dim(self) -> int: ...
    @property
    def meta(self) -> dict[str, Any]: ...

    def upsert(self, records: Sequence[Record]) -> None:
        """Add records, or replace those whose (item_id, variant) exists."""

    def delete_items(self, item_ids: Iterable[str]) -> int:
        """Remove every vector of these items; returns how many vectors went."""

    def item_count(self) -> int: ...

    def vector_count(self) -> int: ...

    def set_ef(self, ef: int) -> None:
        """The search breadth (HNSW ef_search): recall against latency."""

    def search_items(
        self,
        query: np.ndarray,
        k: int,
        *,
        where: ProductFilter | None = None,
        exclude: Iterable[str] = (),
    ) -> list[StoreHit]:
        """The k best distinct items (best variant each) that pass ``where``, best first."""


class VectorStore(Protocol):
    """The versions of every kind in one place (a folder, a database)."""

    def create(self, kind: str, version: str, *, dim: int, meta: dict[str, Any]) -> Collection:
        """A new, empty, unpublished version."""

    def open(
        self, kind: str, version: str | None = None, *, expect: dict[str, Any] | None = None
    ) -> Collection:
        """A published version (default: the current one). ``expect`` maps metadata keys to
        required values (the encoders): a mismatch raises IndexMismatch."""

    def publish(self, kind: str, collection: Collection) -> None:
        """Make this filled version the current one, atomically for every reader."""

    def set_current(self, kind: str, version: str) -> None:
        """Make an already published version current again (rollback)."""

    def current(self, kind: str) -> str | None: ...

    def versions(self, kind: str) -> list[str]:
        """Published versions, oldest first."""

    def prune(self, kind: str, keep: int) -> list[str]:
        """Delete all but the newest ``keep`` versions, never the current one."""

    def close(self) -> None: ...
