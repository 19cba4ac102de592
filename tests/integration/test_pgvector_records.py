"""A products version's records on pgvector are rows of ``vs_records``, read by id, not part
of the version's metadata that every replica loads: the catalog a replica gets reads them
on demand, in catalog order, with a bounded cache; a version published before keeps working
from its metadata."""

from __future__ import annotations

import uuid

import numpy as np
import psycopg
import pytest
from psycopg.types.json import Jsonb

from retrieval.catalog import Catalog, Product
from retrieval.decision import DecisionPolicy
from retrieval.index import IndexParams, VectorIndex
from retrieval.snapshot import Snapshot
from retrieval.vectorstore import pgrecords
from retrieval.vectorstore.pgindex import open_index
from retrieval.vectorstore.pgpublish import publish_index
from retrieval.vectorstore.pgrecords import StoreCatalog
from retrieval.vectorstore.pgvector import PgvectorStore

pytestmark = [pytest.mark.scaleout]

VERSION = "products-20261204T120000000000-abc123"


def _records(n: int) -> list[dict]:
    return [
        {
            "id": f"p{i:03d}",
            "title": f"Product {i}",
            "description": "a long description " * 5,
            "price": float(i),
            "currency": "EUR",
            "category": ["Fruit", "Dairy", "Bakery"][i % 3],
            "stock": None if i % 11 == 0 else i % 4,
            "images": [],
            **({"names": {"zh": f"产品{i}"}} if i % 5 == 0 else {}),
            **({"attributes": ["vegan", "organic"][: 1 + i % 2]} if i % 3 == 0 else {}),
        }
        for i in reversed(range(n))  # catalog order is not id order
    ]


@pytest.fixture()
def store(pgvector_server):  # noqa: ANN001, ANN201
    name = "r" + uuid.uuid4().hex[:12]
    pgvector_server.create_database(name)
    s = PgvectorStore(pgvector_server.conninfo(name))
    yield s
    s.close()


def _published(store: PgvectorStore, records: list[dict]) -> None:
    rng = np.random.default_rng(0)
    index = VectorIndex(8, IndexParams(m=8, ef_construction=40, ef=20), meta={"records": records})
    vectors = rng.normal(size=(len(records), 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index.add([(r["id"], "fused") for r in records], vectors)
    text = VectorIndex(8, index.params)
    text.add([(r["id"], "text") for r in records], vectors)
    index.companions["text"] = text
    publish_index(store, "products", VERSION, index)


def test_a_replica_reads_the_catalog_by_id_not_from_the_metadata(
    store: PgvectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _records(40)
    _published(store, records)
    with psycopg.connect(store.url) as conn:
        (meta,) = conn.execute("SELECT meta FROM vs_versions").fetchone()
    assert "records" not in meta and meta["record_count"] == 40

    monkeypatch.setattr(pgrecords, "PAGE", 7)  # iteration crosses several pages
    monkeypatch.setattr(pgrecords, "CACHE", 10)
    stored = open_index(store, "products")
    catalog = stored.catalog
    assert isinstance(catalog, StoreCatalog) and len(catalog) == 40
    assert [p.id for p in catalog] == [r["id"] for r in records]  # catalog order
    assert catalog.get("p007") == Product.from_record(records[-8])
    assert dict(catalog.get("p005").names) == {"zh": "产品5"}  # type: ignore[union-attr]
    assert catalog.get("nope") is None and "nope" not in catalog._cache  # not cached
    assert "p001" in catalog and "nope" not in catalog
    assert repr(catalog) == f"StoreCatalog(products version {VERSION}, 40 products)"
    assert sorted(catalog.get_many(["p001", "nope", "p002", "p001"])) == ["p001", "p002"]
    assert catalog.categories() == ["Bakery", "Dairy", "Fruit"]
    for r in records:
        assert catalog.get(r["id"]) is not None
    assert len(catalog._cache) <= 10
    with pytest.raises(TypeError, match="by id"):
        _ = catalog.products

    # the shop page's first products, the titles and the filter columns, read as fields in
    # SQL, are those of the same records in memory
    assert catalog.first(3) == [Product.from_record(r) for r in records[:3]]
    assert catalog.first(0) == []
    assert list(catalog.titles()) == [(r["id"], r["title"]) for r in records]
    from retrieval.filters import CatalogColumns

    in_memory = Catalog({r["id"]: Product.from_record(r) for r in records})
    a, b = CatalogColumns(catalog), CatalogColumns(in_memory)
    assert a.ids == b.ids and a.category_names == b.category_names
    np.testing.assert_array_equal(a.price, b.price)
    np.testing.assert_array_equal(a.stock, b.stock)
    np.testing.assert_array_equal(a.category, b.category)
    assert sorted(a.attribute) == sorted(b.attribute) == ["organic", "vegan"]
    for name in a.attribute:
        np.testing.assert_array_equal(a.attribute[name], b.attribute[name])

    # the query path's snapshot uses it, and its matches carry the stored records
    faq = VectorIndex(8, IndexParams(), meta={"records": []})
    snap = Snapshot.from_indexes(faq, stored, DecisionPolicy())  # type: ignore[arg-type]
    assert snap.catalog is catalog and snap.categories == ["Bakery", "Dairy", "Fruit"]


def test_a_version_published_with_its_records_in_the_metadata_still_loads(
    store: PgvectorStore,
) -> None:
    records = _records(12)
    _published(store, records)
    with psycopg.connect(store.url) as conn:  # as versions were published before
        conn.execute(
            "UPDATE vs_versions SET meta = (meta - 'records_table' - 'record_count') "
            "|| jsonb_build_object('records', %s::jsonb)",
            (Jsonb(records),),
        )
        conn.execute("DELETE FROM vs_records")
    stored = open_index(store, "products")
    assert stored.catalog is None and len(stored.meta["records"]) == 12
    faq = VectorIndex(8, IndexParams(), meta={"records": []})
    snap = Snapshot.from_indexes(faq, stored, DecisionPolicy())  # type: ignore[arg-type]
    assert type(snap.catalog) is Catalog and len(snap.catalog) == 12
    assert snap.catalog.get("p003") == Product.from_record(records[-4])
