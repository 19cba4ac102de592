"""Product filters: category, price range and stock, checked once and applied inside the search.

A :class:`ProductFilter` is parsed from an API caller's ``filter`` object, the CLI's
``--filter key=value`` options or an evaluation query line (:func:`parse_filter`: every
mistake is an :class:`~retrieval.errors.InputError` naming the field). :meth:`ProductFilter.matches`
is the reference meaning of a filter, one product at a time. :class:`CatalogColumns` holds a
catalog's prices, stock and categories as numpy columns, so a filter becomes a mask over the
catalog and then over an index's labels in a few vectorised steps; the vector and lexical
searches take that mask and search only the products it keeps
(:meth:`~retrieval.index.VectorIndex.search`).

Meaning: ``category`` keeps the products whose category is one of the given ones (case and
surrounding spaces ignored); ``price_min`` / ``price_max`` are inclusive and drop products
without a price; ``in_stock`` true keeps products with stock above 0, false those with stock
0 (a product whose stock is not known is dropped by either); ``attributes`` keeps products
that have every one of these catalog attributes, ``exclude_attributes`` drops those with any
of them (a shopper's "organic only", "no lactose").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .catalog import Catalog, Product
from .errors import InputError

__all__ = [
    "FILTER_KEYS",
    "CatalogColumns",
    "FilterMasks",
    "ProductFilter",
    "StoreFilter",
    "normalise_category",
    "parse_filter",
]

FILTER_KEYS = ("category", "price_min", "price_max", "in_stock", "attributes", "exclude_attributes")
MAX_CATEGORIES = 50
MAX_ATTRIBUTES = 30


def _norm(category: str) -> str:
    return " ".join(category.split()).casefold()


def normalise_category(category: str) -> str:
    """A category as filters compare it: case and runs of spaces ignored."""
    return _norm(category)


@dataclass(frozen=True)
class ProductFilter:
    """Which products a question may be answered with; the empty filter keeps every one."""

    categories: frozenset[str] = frozenset()  # normalised (casefolded, single spaces)
    price_min: float | None = None
    price_max: float | None = None
    in_stock: bool | None = None
    # catalog attributes a product must all have / must have none of (lower case)
    attributes: frozenset[str] = frozenset()
    exclude_attributes: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        return (
            not self.categories
            and self.price_min is None
            and self.price_max is None
            and self.in_stock is None
            and not self.attributes
            and not self.exclude_attributes
        )

    def matches(self, product: Product) -> bool:
        """Whether ``product`` passes: the reference the vectorised form is tested against."""
        if self.categories and _norm(product.category) not in self.categories:
            return False
        if self.price_min is not None or self.price_max is not None:
            if product.price is None:
                return False
            if self.price_min is not None and product.price < self.price_min:
                return False
            if self.price_max is not None and product.price > self.price_max:
                return False
        if self.in_stock is not None:
            if product.stock is None or (product.stock > 0) != self.in_stock:
                return False
        has = set(product.attributes)
        return self.attributes <= has and not (self.exclude_attributes & has)

    def public(self) -> dict[str, Any]:
        """The filter as the API reports it (only the keys that were set)."""
        out: dict[str, Any] = {}
        if self.categories:
            out["category"] = sorted(self.categories)
        if self.price_min is not None:
            out["price_min"] = self.price_min
        if self.price_max is not None:
            out["price_max"] = self.price_max
        if self.in_stock is not None:
            out["in_stock"] = self.in_stock
        if self.attributes:
            out["attributes"] = sorted(self.attributes)
        if self.exclude_attributes:
            out["exclude_attributes"] = sorted(self.exclude_attributes)
        return out

    def describe(self) -> str:
        """In words, for a card or a log line: "in stock, price 1-2, category fruit"."""
        parts = []
        if self.in_stock is not None:
            parts.append("in stock" if self.in_stock else "out of stock")
        if self.price_min is not None and self.price_max is not None:
            parts.append(f"price {self.price_min:g} to {self.price_max:g}")
        elif self.price_max is not None:
            parts.append(f"price up to {self.price_max:g}")
        elif self.price_min is not None:
            parts.append(f"price from {self.price_min:g}")
        if self.categories:
            parts.append("category " + " or ".join(sorted(self.categories)))
        if self.attributes:
            parts.append(", ".join(sorted(self.attributes)))
        if self.exclude_attributes:
            parts.append("without " + " or ".join(sorted(self.exclude_attributes)))
        return ", ".join(parts) or "no filter"


def _price(value: object, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InputError(f"filter.{field} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"filter.{field} must be a number, got {str(value)[:40]!r}") from None
    if not math.isfinite(number) or number < 0:
        raise InputError(f"filter.{field} must be a finite number >= 0, got {str(value)[:40]}")
    return number


def _flag(value: object, field: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no"):
        return False
    raise InputError(f"filter.{field} must be true or false, got {str(value)[:40]!r}")


def parse_filter(obj: object, categories: Collection[str] | None = None) -> ProductFilter:
    """A :class:`ProductFilter` from a mapping with the keys of :data:`FILTER_KEYS`
    (``category`` is a string or a list of strings; prices numbers or numeric strings;
    ``in_stock`` a boolean or "true"/"false"). ``None`` or an empty mapping is the empty
    filter. With ``categories`` (the catalog's), an unknown category is refused, since it
    would silently match nothing."""
    if obj is None:
        return ProductFilter()
    if not isinstance(obj, Mapping):
        raise InputError(f"filter must be an object, got {type(obj).__name__}")
    unknown = sorted(str(k)[:40] for k in obj if k not in FILTER_KEYS)
    if unknown:
        raise InputError(
            f"filter.{unknown[0]}: unknown filter; the filters are {', '.join(FILTER_KEYS)}"
        )
    raw = obj.get("category")
    names: list[str]
    if raw is None:
        names = []
    elif isinstance(raw, str):
        names = [raw]
    elif isinstance(raw, (list, tuple)) and all(isinstance(c, str) for c in raw):
        names = list(raw)
    else:
        raise InputError("filter.category must be a string or a list of strings")
    if len(names) > MAX_CATEGORIES:
        raise InputError(f"filter.category: at most {MAX_CATEGORIES} categories")
    wanted = frozenset(_norm(c) for c in names if c.strip())
    if categories is not None:
        known = {_norm(c) for c in categories}
        missing = sorted(wanted - known)
        if missing:
            raise InputError(
                f"filter.category: unknown category {missing[0][:40]!r} "
                f"(the catalog has {len(known)}: {', '.join(sorted(known)[:10])}"
                + (", ..." if len(known) > 10 else "")
                + ")"
            )
    price_min = _price(obj.get("price_min"), "price_min")
    price_max = _price(obj.get("price_max"), "price_max")
    if price_min is not None and price_max is not None and price_min > price_max:
        raise InputError(
            f"filter.price_min ({price_min:g}) is above filter.price_max ({price_max:g})"
        )
    return ProductFilter(
        wanted,
        price_min,
        price_max,
        _flag(obj.get("in_stock"), "in_stock"),
        _words(obj.get("attributes"), "attributes"),
        _words(obj.get("exclude_attributes"), "exclude_attributes"),
    )


def _words(value: object, field: str) -> frozenset[str]:
    """A list of catalog attributes (or one), normalised like the catalog's."""
    if value is None:
        return frozenset()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
        raise InputError(f"filter.{field} must be a string or a list of strings")
    if len(items) > MAX_ATTRIBUTES:
        raise InputError(f"filter.{field}: at most {MAX_ATTRIBUTES} attributes")
    return frozenset(_norm(v) for v in items if v.strip())


class CatalogColumns:
    """A catalog's filterable fields as numpy columns, built once per snapshot; a filter
    becomes a boolean mask over the catalog (:meth:`mask`) or over an index's labels
    (:meth:`label_mask`)."""

    def __init__(self, catalog: Catalog):
        # (id, category, price, stock, attributes) per product, in catalog order; a catalog
        # in the vector store reads just these fields
        rows = list(catalog.filter_fields())
        self.ids = [r[0] for r in rows]
        self.row_of = {pid: i for i, pid in enumerate(self.ids)}
        self.price = np.array(
            [np.nan if r[2] is None else float(r[2]) for r in rows], dtype=np.float64
        )
        self.stock = np.array(
            [np.nan if r[3] is None else float(r[3]) for r in rows], dtype=np.float64
        )
        names = sorted({_norm(r[1]) for r in rows})
        self.category_names = names
        code = {c: i for i, c in enumerate(names)}
        self.category = np.array([code[_norm(r[1])] for r in rows], dtype=np.int64)
        # one boolean column per attribute the catalog uses
        self.attribute: dict[str, np.ndarray] = {}
        for i, r in enumerate(rows):
            for a in r[4]:
                column = self.attribute.setdefault(a, np.zeros(len(rows), dtype=bool))
                column[i] = True
        self._label_rows: dict[int, tuple[int, np.ndarray]] = {}

    def mask(self, f: ProductFilter) -> np.ndarray:
        """True for each catalog row (in catalog order) that ``f`` keeps."""
        keep = np.ones(len(self.ids), dtype=bool)
        if f.categories:
            codes = [i for i, c in enumerate(self.category_names) if c in f.categories]
            keep &= np.isin(self.category, codes)
        if f.price_min is not None:
            keep &= self.price >= f.price_min  # NaN (no price) compares False
        if f.price_max is not None:
            keep &= self.price <= f.price_max
        if f.in_stock is True:
            keep &= self.stock > 0
        elif f.in_stock is False:
            keep &= self.stock == 0
        none = np.zeros(len(self.ids), dtype=bool)
        for a in f.attributes:
            keep &= self.attribute.get(a, none)
        for a in f.exclude_attributes:
            keep &= ~self.attribute.get(a, none)
        return keep

    def allowed_ids(self, f: ProductFilter) -> frozenset[str]:
        return frozenset(self.ids[i] for i in np.flatnonzero(self.mask(f)).tolist())

    def label_mask(
        self, index: Any, f: ProductFilter, rows_kept: np.ndarray | None = None
    ) -> np.ndarray:
        """True for each label of ``index`` (a :class:`~retrieval.index.VectorIndex`) whose
        product ``f`` keeps (and ``rows_kept``, a mask over the catalog rows, when given);
        labels of deleted vectors and of products not in the catalog are False. The
        label-to-row map is cached per index and rebuilt when it changed."""
        rows = self._rows_of(index)
        kept = self.mask(f) if rows_kept is None else self.mask(f) & rows_kept
        keep = np.append(kept, False)  # row -1 (not in the catalog) -> False
        out: np.ndarray = keep[rows]
        return out

    def _rows_of(self, index: Any) -> np.ndarray:
        stamp = index.generation
        cached = self._label_rows.get(id(index))
        if cached is not None and cached[0] == stamp:
            return cached[1]
        labels, items = index.label_items()
        size = int(labels.max()) + 1 if len(labels) else 0
        rows = np.full(size, -1, dtype=np.int64)
        rows[labels] = [self.row_of.get(item, -1) for item in items]
        self._label_rows[id(index)] = (stamp, rows)
        return rows


class StoreFilter:
    """A product filter as a database-backed index applies it (``filters_in_sql``): the
    filter, which it turns into SQL, and, when a follow-up also tests each product, the ids
    that test keeps."""

    def __init__(self, where: ProductFilter, ids: Iterable[str] | None = None) -> None:
        self.where = where
        self.ids = None if ids is None else sorted(ids)


class FilterMasks:
    """One filter resolved against one snapshot's catalog: a label mask per index (made on
    first use) and the kept product ids (for the lexical index). ``keep`` narrows it further
    with a test of each product (e.g. "another brand than this one", for a follow-up)."""

    def __init__(
        self,
        columns: CatalogColumns,
        f: ProductFilter,
        keep: Callable[[str], bool] | None = None,
    ):
        self.filter = f
        self._columns = columns
        self._rows = (
            None
            if keep is None
            else np.fromiter((keep(pid) for pid in columns.ids), bool, len(columns.ids))
        )
        self._masks: dict[int, np.ndarray] = {}
        self._ids: frozenset[str] | None = None

    def labels(self, index: Any) -> Any:
        """What ``index.search_items(allowed=...)`` takes: a boolean mask over the labels of
        an in-process index, a :class:`StoreFilter` for one that filters in SQL."""
        if getattr(index, "filters_in_sql", False):
            return StoreFilter(self.filter, None if self._rows is None else self.ids)
        mask = self._masks.get(id(index))
        if mask is None:
            mask = self._masks[id(index)] = self._columns.label_mask(index, self.filter, self._rows)
        return mask

    @property
    def ids(self) -> frozenset[str]:
        if self._ids is None:
            kept = self._columns.mask(self.filter)
            if self._rows is not None:
                kept &= self._rows
            self._ids = frozenset(self._columns.ids[i] for i in np.flatnonzero(kept).tolist())
        return self._ids
