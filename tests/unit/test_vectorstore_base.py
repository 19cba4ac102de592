"""The vector-store contract's pure parts: version ids, record validation, the filter
reference, the SQL a filter becomes, and URLs in messages (retrieval/vectorstore/)."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.filters import ProductFilter
from retrieval.indexfolders import new_version_id
from retrieval.vectorstore.base import Record, check_kind, check_version, passes, validate
from retrieval.vectorstore.pgpool import safe_url
from retrieval.vectorstore.pgvector import _table, _where


def test_only_version_ids_the_product_makes_are_accepted() -> None:
    good = new_version_id("faq")
    assert check_version("faq", good) == good
    assert _table(good).startswith("vs_faq_") and len(_table(good)) < 63  # a PostgreSQL name
    for bad in (good + "\n", good.replace("faq", "products"), "faq-1; DROP TABLE x", ""):
        with pytest.raises(ValueError):
            check_version("faq", bad)
    with pytest.raises(ValueError, match="unknown index kind"):
        check_kind("orders")


def test_records_that_a_backend_would_misread_are_refused() -> None:
    v = np.ones(4, np.float32) / 2
    validate([Record("a", "v0", v, price=0.0, stock=0), Record("a", "v1", v)], 4)
    cases = {
        "dimensions": Record("a", "v0", v[:3]),
        "NaN": Record("a", "v0", np.array([np.nan, 0, 0, 0], np.float32)),
        "price": Record("a", "v0", v, price=float("inf")),
        "stock": Record("a", "v0", v, stock=2**31),
    }
    for words, record in cases.items():
        with pytest.raises(ValueError, match=words):
            validate([record], 4)
    with pytest.raises(ValueError, match="twice"):
        validate([Record("a", "v0", v), Record("a", "v0", v)], 4)


def test_a_filters_sql_keeps_what_matches_keeps() -> None:
    """The SQL conditions, one per field the filter sets, parameters never inlined."""
    where = ProductFilter(
        categories=frozenset({"fruit"}),
        price_min=1.0,
        price_max=2.5,
        in_stock=False,
        attributes=frozenset({"organic"}),
        exclude_attributes=frozenset({"vegan"}),
    )
    cond, params = _where(where, ["x'; DROP TABLE y"])
    assert cond.count("%s") == len(params) == 6
    for part in (
        "category_norm = ANY",
        "price >=",
        "price <=",
        "stock = 0",
        "attributes @>",
        "NOT (attributes &&",
        "item_id <> ALL",
    ):
        assert part in cond
    assert "DROP" not in cond and params[-1] == ["x'; DROP TABLE y"]
    assert _where(None, []) == ("", [])
    assert _where(ProductFilter(), []) == ("", [])
    # the reference: unknown prices and stock fail any condition on them
    r = Record("p", "v0", np.zeros(1), category=" Fruit ")
    assert passes(r, ProductFilter(categories=frozenset({"fruit"})))
    assert not passes(r, ProductFilter(price_max=5.0))
    assert not passes(r, ProductFilter(in_stock=False))
    assert passes(r, ProductFilter(exclude_attributes=frozenset({"vegan"})))


def test_messages_never_carry_a_password() -> None:
    for url in (
        "postgresql://shop:s3cret@db.example/vectors",
        "postgresql+psycopg://shop@db/x?password=s3cret&sslmode=require",
        "host=db password=s3cret dbname=x",
    ):
        assert "s3cret" not in safe_url(url) and "***" in safe_url(url)
    assert safe_url("postgresql://shop@/x?host=/tmp/pg") == "postgresql://shop@/x?host=/tmp/pg"
