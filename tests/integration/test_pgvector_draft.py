"""A re-index of the catalog on pgvector makes the next version inside the database: a copy
of the current version's tables, then only the changes (no vector read into the worker).
The result must be the version the in-process path would publish: the same vectors per
(product, variant) as the hnswlib backend given the same catalog edits, every row carrying
its product's new filterable fields (a price or stock change re-encodes nothing), the same
views; and a job that fails leaves no draft behind."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import psycopg
import pytest

from retrieval.filters import ProductFilter
from retrieval.index import VectorIndex
from retrieval.indexfolders import version_dir
from retrieval.indexformat import MULTILINGUAL
from retrieval.indexstore import current_version, pg_store
from retrieval.runtime import build_retriever
from retrieval.vectorstore.pgindex import open_index

from helpers import demo_catalog_rows, demo_settings, write_jsonl

pytestmark = [pytest.mark.scaleout, pytest.mark.models]


def _store(server) -> str:  # noqa: ANN001
    """A fresh database on the test's pgvector server."""
    name = "d" + uuid.uuid4().hex[:12]
    server.create_database(name)
    return server.conninfo(name)


def _pg_rows(url: str, table: str) -> dict[tuple[str, str], tuple]:
    with psycopg.connect(url) as conn:
        from pgvector.psycopg import register_vector

        register_vector(conn)
        rows = conn.execute(
            f"SELECT item_id, variant, v, category, price, stock, attributes FROM {table}"
        ).fetchall()
    return {
        (r[0], r[1]): (np.asarray(r[2].to_numpy(), np.float32), *r[3:6], sorted(r[6])) for r in rows
    }


def _leftovers(url: str) -> tuple[int, int]:
    """Unpublished versions, and tables of versions the store does not list."""
    with psycopg.connect(url) as conn:
        drafts = conn.execute("SELECT count(*) FROM vs_versions WHERE published_at IS NULL")
        n_drafts = drafts.fetchone()[0]
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE 'vs\\_products\\_%'"
            )
        ]
        known = [
            "vs_" + r[0].replace("-", "_").lower()
            for r in conn.execute("SELECT version FROM vs_versions WHERE kind = 'products'")
        ]
    stray = [t for t in tables if t.split("__")[0] not in known]
    return n_drafts, len(stray)


def test_a_changed_catalog_is_reindexed_in_the_database_as_the_files_would_be(
    tmp_path: Path, pgvector_server, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    import retrieval.indexstore as indexstore
    from retrieval.ingest import ingest
    from retrieval.reindex import reindex

    url = _store(pgvector_server)
    rows = demo_catalog_rows()
    catalog = tmp_path / "products.jsonl"
    write_jsonl(catalog, rows[:30])
    files = demo_settings(tmp_path / "files", catalog_path=catalog)
    pg = demo_settings(
        tmp_path / "pg", vector_store="pgvector", vector_store_url=url, catalog_path=catalog
    )
    ingest(files)
    ingest(pg)
    first = current_version(pg, "products")

    # the edits: a price and stock change (nothing to encode), a new title (encoded again),
    # a product gone, two new ones
    edited = [dict(r) for r in rows[:30]] + rows[30:32]
    edited[0]["price"], edited[0]["stock"] = 9.99, 0
    edited[1]["title"] = "Organic Hass avocados, ripe and ready"
    gone = edited.pop(2)["id"]
    write_jsonl(catalog, edited)

    def no_reading(*_a, **_k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the re-index read the whole version into the worker")

    monkeypatch.setattr(indexstore, "_writable", no_reading)
    (pg_report,) = [r for r in reindex(pg).reports if r.kind == "products"]
    monkeypatch.undo()
    (files_report,) = [r for r in reindex(files).reports if r.kind == "products"]
    for report in (pg_report, files_report):
        assert report.mode == "incremental", report
        assert (report.added, report.updated, report.deleted) == (2, 1, 1), report
        assert report.encoded == 3  # the price and stock change re-encoded nothing
    second = current_version(pg, "products")
    assert second not in (None, first)

    stored = open_index(pg_store(pg), "products")
    built = VectorIndex.load(version_dir(files.index_dir, "products", files_report.version))
    assert sorted(stored.companions) == sorted(built.companions)
    by_id = {r["id"]: r for r in edited}
    for view_name, pg_view, file_view in [
        ("", stored, built),
        *((n, stored.companions[n], built.companions[n]) for n in built.companions),
    ]:
        table = pg_view.table
        got = _pg_rows(url, table)
        assert sorted(got) == sorted(file_view.keys()), view_name
        for item in file_view.item_ids():
            variants, want = file_view.item_vectors(item)
            have = np.stack([got[(item, variant)][0] for variant in variants])
            assert np.allclose(have, want, atol=1e-5), (view_name, item)
        for (item, _), (_, category, price, stock, attributes) in got.items():
            record = by_id[item]
            assert (category, price, stock) == (
                record.get("category") or "",
                record.get("price"),
                record.get("stock"),
            ), (view_name, item)
            assert attributes == sorted(record.get("attributes") or []), (view_name, item)
        assert gone not in {item for item, _ in got}
    assert stored.meta["item_hashes"] == built.meta["item_hashes"]
    assert stored.lexical is not None and built.lexical is not None
    assert sorted(stored.lexical.keys()) == sorted(built.lexical.keys())
    assert stored.lexical.item_count == len(edited)

    # the service on the new version: the new title is found, the sold-out product filtered
    retriever = build_retriever(pg)
    assert retriever.snapshot.product_version == second
    hits = retriever.query("Hass avocados ripe and ready", k_products=3, log=False).products
    assert hits and hits[0].product.id == edited[1]["id"]
    in_stock = retriever.query(
        edited[0]["title"], k_products=5, product_filter=ProductFilter(in_stock=True), log=False
    ).products
    assert edited[0]["id"] not in {m.product.id for m in in_stock}
    assert _leftovers(url) == (0, 0)

    # a view the settings no longer want is dropped with its table; one built whole again
    # (the multilingual encoder back) is copied in beside the drafted ones
    no_ml = demo_settings(
        tmp_path / "pg",
        vector_store="pgvector",
        vector_store_url=url,
        catalog_path=catalog,
        multilingual_model="",
    )
    reindex(no_ml)
    assert MULTILINGUAL not in open_index(pg_store(pg), "products").companions
    reindex(pg)
    again = open_index(pg_store(pg), "products")
    assert sorted(again.companions) == sorted(built.companions)
    got = _pg_rows(url, again.companions[MULTILINGUAL].table)
    assert sorted(got) == sorted(built.companions[MULTILINGUAL].keys())
    assert _leftovers(url) == (0, 0)


def test_a_reindex_that_fails_leaves_no_draft_and_the_live_version_as_it_was(
    tmp_path: Path, pgvector_server, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    import retrieval.reindex.products as products_job
    from retrieval.ingest import ingest
    from retrieval.reindex import reindex

    url = _store(pgvector_server)
    rows = demo_catalog_rows()
    catalog = tmp_path / "products.jsonl"
    write_jsonl(catalog, rows[:20])
    pg = demo_settings(
        tmp_path / "pg", vector_store="pgvector", vector_store_url=url, catalog_path=catalog
    )
    ingest(pg)
    first = current_version(pg, "products")
    write_jsonl(catalog, rows[:22])

    def broken(*_a, **_k):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("the image encoder ran out of memory")

    monkeypatch.setattr(products_job, "product_rows", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        reindex(pg)
    assert current_version(pg, "products") == first
    assert _leftovers(url) == (0, 0)
    monkeypatch.undo()
    (report,) = [r for r in reindex(pg).reports if r.kind == "products"]
    assert report.mode == "incremental" and report.added == 2
    assert _leftovers(url) == (0, 0)
    # the same products in another order (the shop page's) are a change, encoding nothing
    write_jsonl(catalog, list(reversed(rows[:22])))
    (report,) = [r for r in reindex(pg).reports if r.kind == "products"]
    assert report.mode == "incremental" and report.encoded == 0
    (report,) = [r for r in reindex(pg).reports if r.kind == "products"]
    assert report.mode == "unchanged"
    shown = build_retriever(pg).snapshot.catalog.first(3)
    assert [p.id for p in shown] == [r["id"] for r in reversed(rows[:22])][:3]
