"""Recommendations from what shoppers showed interest in: popular products and "goes well
with" (pure functions; the SQL that feeds them is :mod:`retrieval.store.events`).

An *interest* is one conversation's interest in one product: the product a question was
answered with (the first card of a logged ``answer`` on products), a click on a product on
the shop page, or a product an agent's reply to the conversation names by its title
(:class:`TitleIndex`). Within a time window:

- **popular**: products ranked by the number of conversations that showed interest in them
  (one conversation counts once per product, so one shopper clicking all day is one vote),
  out-of-stock products left out, optionally per category; with nothing in the log, the
  best-stocked products (:func:`best_stocked`), said to be that;
- **goes well with** X ("customers who asked about X also asked about Y"): products ranked
  by the cosine of their conversation sets, ``n(X, Y) / sqrt(n(X) * n(Y))``, where n counts
  conversations; at least :data:`MIN_TOGETHER` conversations must share the pair. Products
  with too little history (new ones) are filled in by the fused-vector similarity, and the
  answer says which basis each product came from.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from .catalog import Catalog, Product
from .filters import CatalogColumns, normalise_category

__all__ = [
    "MIN_TOGETHER",
    "Recommendation",
    "TitleIndex",
    "best_stocked",
    "conversation_sets",
    "popular",
    "together",
]

MIN_TOGETHER = 2  # conversations that must share a pair before it counts
_BATCH = 100  # products read at once while popular() walks its ranking


@dataclass(frozen=True)
class Recommendation:
    product: Product
    score: float  # popular: conversations; together: cosine (similarity: the fused score)
    basis: str  # "interest", "co-occurrence" or "similarity"


def conversation_sets(interests: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    """(conversation id, product id) pairs as each conversation's set of products."""
    sets: dict[str, set[str]] = defaultdict(set)
    for conversation, product in interests:
        sets[conversation].add(product)
    return dict(sets)


def popular(
    sets: dict[str, set[str]],
    catalog: Catalog,
    k: int,
    category: str | None = None,
) -> list[Recommendation]:
    """The ``k`` products most conversations showed interest in, in stock, of ``category``
    when given (case ignored); ties by product id, so the order is stable."""
    counts: Counter[str] = Counter(p for products in sets.values() for p in products)
    wanted = None if category is None else " ".join(category.split()).casefold()
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    out: list[Recommendation] = []
    for start in range(0, len(ranked), _BATCH):
        part = ranked[start : start + _BATCH]
        found = catalog.get_many(pid for pid, _ in part)  # one read on a store-backed catalog
        for pid, n in part:
            p = found.get(pid)
            if p is None or not p.stock:  # gone from the catalog, out of stock or unknown stock
                continue
            if wanted is not None and " ".join(p.category.split()).casefold() != wanted:
                continue
            out.append(Recommendation(p, float(n), "interest"))
            if len(out) == k:
                return out
    return out


def best_stocked(
    catalog: Catalog,
    k: int,
    category: str | None = None,
    columns: CatalogColumns | None = None,
) -> list[Recommendation]:
    """The honest fallback of :func:`popular` when the log holds too little: the ``k``
    products with the most stock (of ``category`` when given), said to be exactly that
    (ties by id). Ranked on the catalog's filter columns (pass the snapshot's, built once
    per version), so only the k products shown are read."""
    cols = columns if columns is not None else CatalogColumns(catalog)
    if k <= 0 or not cols.ids:
        return []
    keep = np.nan_to_num(cols.stock, nan=0.0) > 0
    if category is not None:
        wanted = normalise_category(category)
        code = cols.category_names.index(wanted) if wanted in cols.category_names else -1
        keep &= cols.category == code
    rows = np.flatnonzero(keep)
    if len(rows) > k:  # the k largest stocks and every row tied with the k-th
        kth = np.partition(-cols.stock[rows], k - 1)[k - 1]
        rows = rows[-cols.stock[rows] <= kth]
    order = sorted(rows.tolist(), key=lambda i: (-cols.stock[i], cols.ids[i]))[:k]
    found = catalog.get_many(cols.ids[i] for i in order)
    return [
        Recommendation(found[cols.ids[i]], float(cols.stock[i]), "best-stocked")
        for i in order
        if cols.ids[i] in found
    ]


def together(
    product_id: str,
    sets: dict[str, set[str]],
    catalog: Catalog,
    k: int,
    similar: Callable[[str, int], list[tuple[Product, float]]] | None = None,
) -> list[Recommendation]:
    """The ``k`` products that go well with ``product_id`` (see the module): co-occurrence
    first, then ``similar(product_id, n)`` (the fused-vector neighbours) for the rest.
    Out-of-stock products are left out."""
    with_it = [products for products in sets.values() if product_id in products]
    n_x = len(with_it)
    pair: Counter[str] = Counter(p for products in with_it for p in products if p != product_id)
    n: Counter[str] = Counter(p for products in sets.values() for p in products)
    scored = [
        (pid, c / math.sqrt(n_x * n[pid]))
        for pid, c in pair.items()
        if c >= MIN_TOGETHER and n[pid] > 0
    ]
    out: list[Recommendation] = []
    for pid, score in sorted(scored, key=lambda kv: (-kv[1], kv[0])):
        p = catalog.get(pid)
        if p is not None and p.stock:
            out.append(Recommendation(p, round(score, 6), "co-occurrence"))
        if len(out) == k:
            return out
    if similar is not None:
        taken = {r.product.id for r in out} | {product_id}
        for p, score in similar(product_id, k + len(taken)):
            if p.id not in taken and p.stock:
                out.append(Recommendation(p, score, "similarity"))
                taken.add(p.id)
            if len(out) == k:
                break
    return out


_WORD = re.compile(r"[\w'&-]+")


class TitleIndex:
    """The catalog's titles by their words, to find the products an agent's reply names
    ("try the Oatly Oat Milk with it"): exact titles, case ignored, at most
    :attr:`max_words` words long. Latin-script titles only: Chinese text has no word
    boundaries to match on."""

    def __init__(self, catalog: Catalog, max_words: int = 8):
        self.max_words = max_words
        self.titles: dict[str, str] = {}
        for pid, title in catalog.titles():  # (a catalog in the vector store reads titles only)
            key = " ".join(_WORD.findall(title.casefold()))
            if key and len(key.split()) <= max_words:
                self.titles.setdefault(key, pid)

    def named_in(self, text: str) -> set[str]:
        """The ids of the products whose title appears in ``text``, longest first and not
        overlapping ("Oatly Oat Milk" is that product, not also the one titled "Milk")."""
        words = _WORD.findall((text or "").casefold())
        found = set()
        i = 0
        while i < len(words):
            for j in range(min(len(words), i + self.max_words), i, -1):
                pid = self.titles.get(" ".join(words[i:j]))
                if pid is not None:
                    found.add(pid)
                    i = j
                    break
            else:
                i += 1
        return found
