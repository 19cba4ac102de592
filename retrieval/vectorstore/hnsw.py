"""The embedded backend: hnswlib graphs in this process, versions as folders on disk.

A collection is a :class:`~retrieval.index.VectorIndex` plus each item's filterable fields;
versions are written, published and rolled back by :mod:`retrieval.indexfolders` (a folder per
version, ``CURRENT`` replaced atomically). A filter becomes a mask over the graph's labels,
which the index searches inside (exact over few labels, the graph otherwise), made by the
product search's own :class:`~retrieval.filters.CatalogColumns`, rebuilt after a write.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import indexfolders
from ..catalog import Catalog, Product
from ..errors import IndexError_
from ..filters import CatalogColumns, ProductFilter
from ..index import IndexParams, VectorIndex
from .base import Collection, Record, StoreHit, check_kind, check_version, validate

__all__ = ["HnswCollection", "HnswStore"]

ATTRS_KEY = "item_fields"  # in the index metadata: item_id -> [category, price, stock, attributes]
_NO_FIELDS: tuple[str, float | None, int | None, frozenset[str]] = ("", None, None, frozenset())


class HnswCollection:
    """One version: a VectorIndex and the items' filterable fields."""

    def __init__(self, index: VectorIndex, version: str) -> None:
        self.index = index
        self.version = version
        fields = index.meta.get(ATTRS_KEY, {})
        self._fields: dict[str, tuple[str, float | None, int | None, frozenset[str]]] = {
            item: (c, p, s, frozenset(a)) for item, (c, p, s, a) in fields.items()
        }
        self._columns: tuple[int, CatalogColumns] | None = None  # (index generation, columns)

    @property
    def dim(self) -> int:
        return self.index.dim

    @property
    def meta(self) -> dict[str, Any]:
        return self.index.meta

    def upsert(self, records: Sequence[Record]) -> None:
        if not records:
            return
        validate(records, self.dim)
        self.index.add(
            [(r.item_id, r.variant) for r in records], np.stack([r.vector for r in records])
        )
        for r in records:
            self._fields[r.item_id] = (r.category, r.price, r.stock, r.attributes)

    def delete_items(self, item_ids: Iterable[str]) -> int:
        ids = list(item_ids)
        removed = self.index.delete_items(ids)
        for item in ids:
            if item not in self.index:
                self._fields.pop(item, None)
        return removed

    def item_count(self) -> int:
        return self.index.item_count

    def vector_count(self) -> int:
        return len(self.index)

    def set_ef(self, ef: int) -> None:
        self.index._index.set_ef(int(ef))

    def _mask(self, where: ProductFilter) -> np.ndarray:
        """The labels ``where`` keeps, through the product search's own vectorised columns
        (every item is a catalog row, those without fields too), rebuilt after a write."""
        if self._columns is None or self._columns[0] != self.index.generation:
            _, items = self.index.label_items()
            catalog = Catalog(
                {
                    item: Product(
                        id=item, title="", category=c, price=p, stock=s, attributes=tuple(a)
                    )
                    for item in dict.fromkeys(items)
                    for c, p, s, a in [self._fields.get(item, _NO_FIELDS)]
                }
            )
            self._columns = (self.index.generation, CatalogColumns(catalog))
        return self._columns[1].label_mask(self.index, where)

    def search_items(
        self,
        query: np.ndarray,
        k: int,
        *,
        where: ProductFilter | None = None,
        exclude: Iterable[str] = (),
    ) -> list[StoreHit]:
        allowed = None if where is None or where.empty else self._mask(where)
        if allowed is not None and not allowed.any():
            return []
        hits = self.index.search_items(query, k, exclude=exclude, allowed=allowed)
        return [StoreHit(h.item_id, h.score, h.variant) for h in hits]

    def _save_fields(self) -> None:
        self.index.meta[ATTRS_KEY] = {
            item: [c, p, s, sorted(a)]
            for item, (c, p, s, a) in self._fields.items()
            if c or p is not None or s is not None or a
        }


class HnswStore:
    """Versions under ``root/<kind>/`` (the layout of :mod:`retrieval.indexfolders`)."""

    def __init__(self, root: Path, params: IndexParams | None = None) -> None:
        self.root = Path(root)
        self.params = params or IndexParams()

    def create(self, kind: str, version: str, *, dim: int, meta: dict[str, Any]) -> HnswCollection:
        check_version(check_kind(kind), version)
        return HnswCollection(VectorIndex(dim, self.params, meta=dict(meta)), version)

    def open(
        self, kind: str, version: str | None = None, *, expect: dict[str, Any] | None = None
    ) -> HnswCollection:
        check_kind(kind)
        version = version or indexfolders.current_version(self.root, kind)
        if version is None:
            raise IndexError_(
                f"no {kind} index in {self.root / kind}: run 'retrieval ingest' first"
            )
        index = VectorIndex.load(indexfolders.version_dir(self.root, kind, version), expect=expect)
        return HnswCollection(index, version)

    def publish(self, kind: str, collection: Collection) -> None:
        if not isinstance(collection, HnswCollection):
            raise TypeError("an hnswlib store publishes only its own collections")
        collection._save_fields()
        indexfolders.publish(collection.index, self.root, check_kind(kind), collection.version)

    def set_current(self, kind: str, version: str) -> None:
        indexfolders.set_current(self.root, check_kind(kind), version)

    def current(self, kind: str) -> str | None:
        return indexfolders.current_version(self.root, check_kind(kind))

    def versions(self, kind: str) -> list[str]:
        return indexfolders.list_versions(self.root, check_kind(kind))

    def prune(self, kind: str, keep: int) -> list[str]:
        return indexfolders.prune(self.root, check_kind(kind), keep)

    def close(self) -> None:
        pass
