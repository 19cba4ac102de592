"""Product filters: parsing with errors that name the field, the vectorised catalog mask
against the one-product-at-a-time reference, and filtered vector search against brute-force
filtered search (exact below the switch, recall above it)."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.bench.data import embedding_like
from retrieval.catalog import Catalog, Product
from retrieval.errors import InputError
from retrieval.filters import CatalogColumns, ProductFilter, parse_filter
from retrieval.index import EXACT_FILTERED, IndexParams, VectorIndex

CATEGORIES = ["Fruit", "Vegetables", "Dairy", "Juice & Drinks"]


def catalog(n: int, seed: int = 0) -> Catalog:
    rng = np.random.default_rng(seed)
    products = {}
    for i in range(n):
        price = None if rng.random() < 0.05 else round(float(rng.uniform(0.2, 10)), 2)
        stock = None if rng.random() < 0.05 else int(rng.integers(0, 4)) * int(rng.integers(0, 9))
        pid = f"p{i}"
        products[pid] = Product(pid, f"product {i}", "", price, "EUR", CATEGORIES[i % 4], stock)
    return Catalog(products)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"colour": "red"}, "filter.colour: unknown filter"),
        ({"price_min": 3, "price_max": 2}, "filter.price_min (3) is above filter.price_max (2)"),
        ({"price_max": "cheap"}, "filter.price_max must be a number"),
        ({"price_max": float("nan")}, "filter.price_max must be a finite number"),
        ({"price_min": -1}, "filter.price_min must be a finite number >= 0"),
        ({"price_max": True}, "filter.price_max must be a number"),
        ({"in_stock": "maybe"}, "filter.in_stock must be true or false"),
        ({"category": 3}, "filter.category must be a string or a list of strings"),
        ({"category": "Toys"}, "filter.category: unknown category 'toys'"),
        ([1, 2], "filter must be an object"),
    ],
)
def test_bad_filters_name_the_field(obj: object, message: str) -> None:
    with pytest.raises(InputError) as err:
        parse_filter(obj, CATEGORIES)
    assert message in str(err.value)


def test_parsing_normalises_categories_and_accepts_strings_from_forms() -> None:
    f = parse_filter(
        {"category": ["  fruit ", "JUICE &  drinks"], "price_max": "2.5", "in_stock": "true"},
        CATEGORIES,
    )
    assert f == ProductFilter(frozenset({"fruit", "juice & drinks"}), None, 2.5, True)
    assert f.public() == {
        "category": ["fruit", "juice & drinks"],
        "price_max": 2.5,
        "in_stock": True,
    }
    assert f.describe() == "in stock, price up to 2.5, category fruit or juice & drinks"
    assert parse_filter(None).empty and parse_filter({}).empty


def test_the_catalog_mask_equals_the_reference_on_every_product() -> None:
    cat = catalog(3000, seed=1)
    cols = CatalogColumns(cat)
    rng = np.random.default_rng(2)
    for _ in range(200):
        lo = None if rng.random() < 0.5 else float(rng.uniform(0, 8))
        hi = None if rng.random() < 0.5 else float(rng.uniform(lo or 0, 10))
        f = ProductFilter(
            frozenset(c.casefold() for c in rng.choice(CATEGORIES, rng.integers(0, 3))),
            lo,
            hi,
            [None, True, False][int(rng.integers(3))],
        )
        want = [f.matches(p) for p in cat]
        assert cols.mask(f).tolist() == want
        assert cols.allowed_ids(f) == {p.id for p in cat if f.matches(p)}


def _index(n: int, dim: int = 48, seed: int = 0) -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    x, queries = embedding_like(n, dim, n_queries=40, seed=seed)
    index = VectorIndex(dim, IndexParams(m=16, ef_construction=100, ef=64), capacity=n)
    index.add([(f"p{i}", "v") for i in range(n)], x)
    return index, x, queries


def _brute(x: np.ndarray, q: np.ndarray, keep: np.ndarray, k: int) -> list[str]:
    sims = np.where(keep, x @ q, -np.inf)
    top = np.argsort(-sims, kind="stable")[:k]
    return [f"p{i}" for i in top if keep[i]]


N = 20_000


@pytest.fixture(scope="module")
def priced() -> tuple[VectorIndex, np.ndarray, np.ndarray, CatalogColumns]:
    """20k vectors whose products are priced 0..N-1: a price range keeps a known share."""
    index, x, queries = _index(N)
    cat = Catalog({f"p{i}": Product(f"p{i}", "t", price=float(i)) for i in range(N)})
    return index, x, queries, CatalogColumns(cat)


@pytest.mark.parametrize("share", [0.002, 0.01, 0.05, 0.3, 1.0])
def test_filtered_search_against_brute_force(priced, share: float) -> None:  # noqa: ANN001
    n, k = N, 10
    index, x, queries, cols = priced
    rng = np.random.default_rng(3)
    recalls = []
    for q in queries:
        cut = int(rng.integers(0, n - int(n * share) + 1))
        f = ProductFilter(price_min=float(cut), price_max=float(cut + int(n * share) - 1))
        keep = cols.mask(f)
        got = [h.item_id for h in index.search_items(q, k, allowed=cols.label_mask(index, f))]
        want = _brute(x, q, keep, k)
        assert all(keep[int(g[1:])] for g in got)  # nothing the filter drops
        assert len(got) == min(k, int(keep.sum()))  # a selective filter still fills k
        if keep.sum() <= EXACT_FILTERED:
            assert got == want  # searched exactly
        recalls.append(len(set(got) & set(want)) / len(want))
    assert np.mean(recalls) >= 0.95


def test_the_label_mask_follows_deletions_and_additions() -> None:
    index, x, queries = _index(500)
    cat = Catalog({f"p{i}": Product(f"p{i}", "t", price=1.0) for i in range(600)})
    cols = CatalogColumns(cat)
    f = ProductFilter(price_max=5.0)
    assert cols.label_mask(index, f).sum() == 500
    index.delete_items([f"p{i}" for i in range(100)])
    index.add([(f"p{i}", "v") for i in range(500, 600)], x[:100])
    mask = cols.label_mask(index, f)
    assert mask.sum() == 500
    got = index.search_items(queries[0], 600, allowed=mask)
    assert {h.item_id for h in got} == {f"p{i}" for i in range(100, 600)}
    assert index.search_items(queries[0], 5, allowed=np.zeros(len(mask), bool)) == []


def test_product_query_files_carry_filters_and_bad_ones_name_file_and_line(tmp_path) -> None:  # noqa: ANN001
    from retrieval.errors import SourceError
    from retrieval.labelled import read_labelled

    good = tmp_path / "q.jsonl"
    good.write_text(
        '{"query": "milk", "relevant": ["p1"], "filter": {"in_stock": true, "price_max": 2}}\n'
        '{"query": "milk", "relevant": ["p1"], "filter": {}}\n'
        '{"query": "milk", "relevant": ["p1"]}\n',
        encoding="utf-8",
    )
    got = read_labelled(good, known_ids={"p1"}, images=True)
    assert got[0].filter == ProductFilter(price_max=2.0, in_stock=True)
    assert got[1].filter is None and got[2].filter is None
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"query": "milk", "relevant": ["p1"]}\n'
        '{"query": "milk", "relevant": ["p1"], "filter": {"price_min": 3, "price_max": 1}}\n',
        encoding="utf-8",
    )
    with pytest.raises(SourceError, match=r"bad.jsonl.*2.*filter.*price_min \(3\) is above"):
        read_labelled(bad, known_ids={"p1"}, images=True)
    with pytest.raises(SourceError, match="filters are for product queries"):
        read_labelled(good, known_ids={"p1"}, images=False)
