"""The scale-out backend: PostgreSQL with pgvector, for catalogs that outgrow one machine.

Every version is a table ``vs_<kind>_<version>`` of ``(item_id, variant, v vector(dim),
category, price, stock, attributes)``; ``vs_versions`` records each version's dimension,
metadata (the encoders it was built with) and when it was published, and ``vs_current``
names each kind's live version: that row is the alias that publish and rollback switch, in
one transaction, so a reader that opens the current version gets the old or the new one,
never a half-built one. The HNSW index (inner product on unit vectors: cosine) and a
B-tree on the category are built when a version is published, after the bulk load (much
faster than maintaining them row by row); later upserts keep them current.

A filter becomes a SQL ``WHERE`` (the meaning of :meth:`ProductFilter.matches`). When the
planner expects few rows to pass (``EXACT_ROWS``), they are searched exactly; otherwise the
HNSW index is scanned with ``hnsw.iterative_scan`` on, so the scan keeps going until it has
enough rows that pass, and exact search takes over if it still comes back short.

Connections come from a small bounded pool (:mod:`.pgpool`). A server that cannot be
reached raises :class:`~retrieval.errors.IndexError_` (HTTP 503) naming the server without
its password.
Any number of service replicas can read the same database; the versions and records live
there, not in each replica's memory.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from ..errors import IndexError_, IndexMismatch
from ..filters import ProductFilter, normalise_category
from .base import Collection, Record, StoreHit, check_kind, check_version, validate
from .pgpool import ConnectionPool, safe_url, writer_lock

__all__ = ["PgvectorCollection", "PgvectorStore"]

POOL_SIZE = 8  # connections per store (and so per service process)
M, EF_CONSTRUCTION, EF_SEARCH = 24, 200, 48  # the hnswlib backend's defaults
# maintenance_work_mem while publish builds the HNSW graph: a graph that does not fit builds
# many times slower (a million 384-d vectors at M 16 make a 2 GB index); raise it for large
# catalogs when the database server has the memory
BUILD_MEMORY = "1GB"
# a filter the planner expects at most this many rows to pass is searched exactly (its rows
# through the category B-tree or a scan, then sorted): at 1M x 384, a 1% category (10,000
# rows) took p50 / p95 22 / 31 ms that way, recall 1.0, against 48 / 59 ms for the iterative
# HNSW scan in the same run (benchmarks/vector_engines.py, docs/scale-out.md)
EXACT_ROWS = 15_000
ESTIMATE_CACHE = 256  # filters whose row estimates a collection keeps ...
ESTIMATE_TTL_S = 60.0  # ... this long: other processes' writes and ANALYZE move them
# an unpublished version this old is a killed build's, which prune may drop; a younger one
# may be filling in another process right now
STALE_BUILD_HOURS = 24


def _table(version: str, view: str = "") -> str:
    """A version's table; a view of the same items (another encoder's vectors) gets its own."""
    if view and not re.fullmatch(r"[a-z]{1,16}", view):
        raise ValueError(f"not a view name: {view!r}")
    return "vs_" + version.replace("-", "_").lower() + (f"__{view}" if view else "")


def create_table(conn: Any, table: str, dim: int) -> None:
    """The table of one version (or view): a row per vector with its label and the item's
    filterable fields."""
    conn.execute(
        f"CREATE TABLE {table} (item_id text NOT NULL, variant text NOT NULL, "
        f"v vector({int(dim)}) NOT NULL, category text NOT NULL DEFAULT '', "
        "category_norm text NOT NULL DEFAULT '', price double precision, stock int, "
        "attributes text[] NOT NULL DEFAULT '{}', label bigint, PRIMARY KEY (item_id, variant))"
    )


def view_tables(conn: Any, table: str) -> list[str]:
    """The tables of a version's views (``<table>__<view>``)."""
    rows = conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
        "AND starts_with(tablename, %s)",
        (table + "__",),
    ).fetchall()
    return sorted(r[0] for r in rows)


def _where(
    where: ProductFilter | None, exclude: Sequence[str], ids: Sequence[str] | None = None
) -> tuple[str, list[Any]]:
    """SQL conditions and their parameters for a filter (ProductFilter.matches' meaning),
    items to leave out, and ``ids``: the only items allowed (None: no such limit)."""
    parts: list[str] = []
    params: list[Any] = []
    if ids is not None:
        parts.append("item_id = ANY(%s)")
        params.append(list(ids))
    if where is not None and not where.empty:
        if where.categories:
            parts.append("category_norm = ANY(%s)")
            params.append(sorted(where.categories))
        if where.price_min is not None:
            parts.append("price >= %s")
            params.append(where.price_min)
        if where.price_max is not None:
            parts.append("price <= %s")
            params.append(where.price_max)
        if where.in_stock is not None:
            parts.append("stock > 0" if where.in_stock else "stock = 0")
        if where.attributes:
            parts.append("attributes @> %s")
            params.append(sorted(where.attributes))
        if where.exclude_attributes:
            parts.append("NOT (attributes && %s)")
            params.append(sorted(where.exclude_attributes))
    if exclude:
        parts.append("item_id <> ALL(%s)")
        params.append(list(exclude))
    return (" WHERE " + " AND ".join(parts)) if parts else "", params


class PgvectorCollection:
    """One version's table."""

    def __init__(
        self,
        store: PgvectorStore,
        kind: str,
        version: str,
        dim: int,
        meta: dict[str, Any],
        view: str = "",
    ) -> None:
        self.store = store
        self.kind = kind
        self.version = version
        self.view = view
        self.table = _table(version, view)
        self._dim = dim
        self._meta = meta
        self.ef = store.ef
        self.exact_rows = store.exact_rows
        self._estimates: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()
        self._estimates_lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def meta(self) -> dict[str, Any]:
        return self._meta

    def upsert(self, records: Sequence[Record]) -> None:
        if not records:
            return
        validate(records, self._dim)
        with self._estimates_lock:
            self._estimates.clear()
        cols = "item_id, variant, v, category, category_norm, price, stock, attributes, label"
        with self.store._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            # one binary COPY into a staging table, then one merge: a million rows load in
            # about a minute, where a statement per row takes many times longer
            cur.execute(
                f"CREATE TEMP TABLE vs_stage (LIKE {self.table} INCLUDING DEFAULTS, "
                "ord int NOT NULL) ON COMMIT DROP"
            )
            with cur.copy(f"COPY vs_stage ({cols}, ord) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(
                    [
                        "text", "text", "vector", "text", "text", "float8", "int4", "text[]",
                        "int8", "int4",
                    ]
                )  # fmt: skip
                for n, r in enumerate(records):
                    copy.write_row(
                        (
                            r.item_id,
                            r.variant,
                            np.asarray(r.vector, dtype=np.float32).reshape(-1),
                            r.category,
                            normalise_category(r.category),
                            r.price,
                            r.stock,
                            sorted(r.attributes),
                            r.label,
                            n,
                        )
                    )
            cur.execute(
                f"INSERT INTO {self.table} ({cols}) SELECT {cols} FROM vs_stage "
                "ON CONFLICT (item_id, variant) DO UPDATE SET v = EXCLUDED.v, "
                "category = EXCLUDED.category, category_norm = EXCLUDED.category_norm, "
                "price = EXCLUDED.price, stock = EXCLUDED.stock, attributes = EXCLUDED.attributes, "
                f"label = COALESCE(EXCLUDED.label, {self.table}.label)"
            )
            # an item's fields are the same on all its vectors: the newest record's
            cur.execute(
                f"UPDATE {self.table} t SET category = s.category, "
                "category_norm = s.category_norm, price = s.price, stock = s.stock, "
                "attributes = s.attributes FROM (SELECT DISTINCT ON (item_id) item_id, category, "
                "category_norm, price, stock, attributes FROM vs_stage ORDER BY item_id, ord DESC) s "
                "WHERE t.item_id = s.item_id AND (t.category, t.price, t.stock, t.attributes) "
                "IS DISTINCT FROM (s.category, s.price, s.stock, s.attributes)"
            )

    def delete_items(self, item_ids: Iterable[str]) -> int:
        ids = list(dict.fromkeys(item_ids))
        if not ids:
            return 0
        with self._estimates_lock:
            self._estimates.clear()
        with self.store._pool.connection() as conn:
            cur = conn.execute(f"DELETE FROM {self.table} WHERE item_id = ANY(%s)", (ids,))
            return int(cur.rowcount)

    def item_count(self) -> int:
        with self.store._pool.connection() as conn:
            row = conn.execute(f"SELECT count(DISTINCT item_id) FROM {self.table}").fetchone()
        return int(row[0])

    def vector_count(self) -> int:
        with self.store._pool.connection() as conn:
            row = conn.execute(f"SELECT count(*) FROM {self.table}").fetchone()
        return int(row[0])

    def set_ef(self, ef: int) -> None:
        self.ef = int(ef)

    def search_items(
        self,
        query: np.ndarray,
        k: int,
        *,
        where: ProductFilter | None = None,
        exclude: Iterable[str] = (),
        ids: Sequence[str] | None = None,
    ) -> list[StoreHit]:
        """The contract's search; ``ids`` (this backend's own) also limits it to those items
        (a test of each product that SQL cannot express, e.g. a follow-up's "another brand")."""
        wanted = int(k)
        if wanted <= 0:
            return []
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        cond, params = _where(where, list(dict.fromkeys(exclude)), ids)
        fetch = wanted * 2 + 8  # vectors: items with several variants take several rows
        sql = (
            f"SELECT item_id, variant, -(v <#> %s) AS score, label FROM {self.table}{cond} "
            "ORDER BY v <#> %s LIMIT %s"  # no tie-break here: it would keep the index unused
        )
        # ordered by an expression the HNSW index does not serve: exact search
        exact_sql = (
            f"SELECT item_id, variant, -(v <#> %s) AS score, label FROM {self.table}{cond} "
            "ORDER BY score DESC LIMIT %s"
        )
        with self.store._pool.connection(self.ef) as conn:
            # the filter alone decides (an exclude list drops a handful of items)
            only, only_params = _where(where, [], ids)
            exact = bool(only) and self._estimate(conn, only, only_params) <= self.exact_rows
            while True:
                if exact:
                    rows = conn.execute(exact_sql, (q, *params, fetch)).fetchall()
                else:
                    rows = conn.execute(sql, (q, *params, q, fetch)).fetchall()
                    if len(rows) < fetch and cond:
                        # fewer rows than asked: either that is all that pass, or the HNSW
                        # scan gave up (hnsw.max_scan_tuples) on a rare filter; exact tells
                        rows = conn.execute(exact_sql, (q, *params, fetch)).fetchall()
                # the iterative HNSW scan may return rows slightly out of order
                rows.sort(key=lambda r: (-r[2], r[0], r[1]))
                best: dict[str, StoreHit] = {}
                for item, variant, score, label in rows:
                    if item not in best:
                        best[item] = StoreHit(
                            item, float(score), variant, -1 if label is None else int(label)
                        )
                if len(best) >= wanted or len(rows) < fetch:
                    return list(best.values())[:wanted]
                fetch *= 2

    def _estimate(self, conn: Any, cond: str, params: list[Any]) -> float:
        """The planner's estimate of the rows that pass ``cond`` (cached per filter for
        ``ESTIMATE_TTL_S``; cleared when this collection writes)."""
        key = (cond, repr(params))
        now = time.monotonic()
        with self._estimates_lock:
            if key in self._estimates and now - self._estimates[key][1] < ESTIMATE_TTL_S:
                self._estimates.move_to_end(key)
                return self._estimates[key][0]
        plan = conn.execute(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {self.table}{cond}", params)
        rows = float(plan.fetchone()[0][0]["Plan"]["Plan Rows"])
        with self._estimates_lock:
            self._estimates[key] = (rows, now)
            self._estimates.move_to_end(key)
            while len(self._estimates) > ESTIMATE_CACHE:
                self._estimates.popitem(last=False)
        return rows


class PgvectorStore:
    """Versions of every kind in one PostgreSQL database with the pgvector extension."""

    def __init__(
        self,
        url: str,
        *,
        m: int = M,
        ef_construction: int = EF_CONSTRUCTION,
        ef: int = EF_SEARCH,
        pool_size: int = POOL_SIZE,
        build_memory: str = BUILD_MEMORY,
        exact_rows: int = EXACT_ROWS,
    ) -> None:
        self.url = url
        self.m = int(m)
        self.ef_construction = int(ef_construction)
        self.ef = int(ef)
        self.exact_rows = int(exact_rows)
        if not re.fullmatch(r"[0-9]+(kB|MB|GB)", build_memory):
            raise ValueError(f"build_memory must look like 512MB or 2GB, not {build_memory!r}")
        self.build_memory = build_memory
        self._pool = ConnectionPool(url, pool_size)
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(7240331)")  # one schema creator at a time
            conn.execute(
                "CREATE TABLE IF NOT EXISTS vs_versions (kind text NOT NULL, version text NOT "
                "NULL, dim int NOT NULL, meta jsonb NOT NULL, created_at timestamptz NOT NULL "
                "DEFAULT now(), published_at timestamptz, PRIMARY KEY (kind, version))"
            )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS vs_current (kind text PRIMARY KEY, version text NOT "
                "NULL, FOREIGN KEY (kind, version) REFERENCES vs_versions (kind, version))"
            )

    def create(
        self, kind: str, version: str, *, dim: int, meta: dict[str, Any]
    ) -> PgvectorCollection:
        from psycopg.types.json import Jsonb

        check_version(check_kind(kind), version)
        table = _table(version)
        with self._pool.connection() as conn, conn.transaction():
            create_table(conn, table, dim)
            conn.execute(
                "INSERT INTO vs_versions (kind, version, dim, meta) VALUES (%s, %s, %s, %s)",
                (kind, version, int(dim), Jsonb(meta)),
            )
        return PgvectorCollection(self, kind, version, int(dim), dict(meta))

    def open(
        self, kind: str, version: str | None = None, *, expect: dict[str, Any] | None = None
    ) -> PgvectorCollection:
        check_kind(kind)
        with self._pool.connection() as conn:
            if version is None:
                row = conn.execute(
                    "SELECT v.version, v.dim, v.meta FROM vs_current c JOIN vs_versions v "
                    "USING (kind, version) WHERE c.kind = %s",
                    (kind,),
                ).fetchone()
            else:
                row = conn.execute(
                    "SELECT version, dim, meta FROM vs_versions WHERE kind = %s AND version = %s "
                    "AND published_at IS NOT NULL",
                    (kind, version),
                ).fetchone()
        if row is None:
            what = f"{kind} version '{version}'" if version else f"{kind} index"
            raise IndexError_(
                f"no {what} in the vector store at {safe_url(self.url)}: run 'retrieval ingest' first"
            )
        found, dim, meta = row
        for key, want in (expect or {}).items():
            if meta.get(key) != want:
                raise IndexMismatch(
                    f"{kind} version {found} in the vector store was built with "
                    f"{key}={meta.get(key)!r} but the settings give {want!r}; rebuild it with "
                    "'retrieval ingest'"
                )
        return PgvectorCollection(self, kind, found, int(dim), dict(meta))

    def publish(self, kind: str, collection: Collection) -> None:
        check_kind(kind)
        if not isinstance(collection, PgvectorCollection) or collection.store is not self:
            raise TypeError("a pgvector store publishes only its own collections")
        with self._pool.connection() as conn:
            conn.execute(f"SET maintenance_work_mem = '{self.build_memory}'")
            # the version's table and its views' (other encoders' vectors of the same items)
            for table in [collection.table, *view_tables(conn, collection.table)]:
                conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {table}_v ON {table} USING hnsw "
                    f"(v vector_ip_ops) WITH (m = {self.m}, ef_construction = {self.ef_construction})"
                )
                conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_cat ON {table} (category_norm)")
                conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_label ON {table} (label)")
                conn.execute(f"ANALYZE {table}")
            with conn.transaction():
                conn.execute(
                    "UPDATE vs_versions SET published_at = now() WHERE kind = %s AND version = %s",
                    (kind, collection.version),
                )
                self._point(conn, kind, collection.version)

    @staticmethod
    def _point(conn: Any, kind: str, version: str) -> None:
        conn.execute(
            "INSERT INTO vs_current (kind, version) VALUES (%s, %s) "
            "ON CONFLICT (kind) DO UPDATE SET version = EXCLUDED.version",
            (kind, version),
        )

    def set_current(self, kind: str, version: str) -> None:
        check_kind(kind)
        with self._pool.connection() as conn, conn.transaction():
            row = conn.execute(
                "SELECT 1 FROM vs_versions WHERE kind = %s AND version = %s "
                "AND published_at IS NOT NULL",
                (kind, version),
            ).fetchone()
            if row is None:
                raise IndexError_(f"no {kind} version '{version}' in the vector store")
            self._point(conn, kind, version)

    def current(self, kind: str) -> str | None:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT version FROM vs_current WHERE kind = %s", (check_kind(kind),)
            ).fetchone()
        return None if row is None else str(row[0])

    def versions(self, kind: str) -> list[str]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT version FROM vs_versions WHERE kind = %s AND published_at IS NOT NULL",
                (check_kind(kind),),
            ).fetchall()
        return sorted(r[0] for r in rows)  # ids start with their UTC time

    def prune(self, kind: str, keep: int) -> list[str]:
        """Drop all but the newest ``keep`` published versions (never the current one) and
        unpublished versions older than ``STALE_BUILD_HOURS`` (killed builds'); returns the
        versions dropped."""
        current = self.current(kind)
        published = self.versions(kind)
        doomed = [v for v in published[: max(0, len(published) - keep)] if v != current]
        with self._pool.connection() as conn:
            stale = conn.execute(
                "SELECT version FROM vs_versions WHERE kind = %s AND published_at IS NULL "
                f"AND created_at < now() - interval '{STALE_BUILD_HOURS} hours'",
                (kind,),
            ).fetchall()
            doomed += sorted(r[0] for r in stale)
            for version in doomed:
                with conn.transaction():
                    self._drop(conn, kind, version)
        return doomed

    def drop_unpublished(self, kind: str, version: str) -> None:
        """Drop a version that was never published (a build that failed); a published one
        is left alone (``prune`` decides about those)."""
        check_version(check_kind(kind), version)
        with self._pool.connection() as conn, conn.transaction():
            row = conn.execute(
                "SELECT published_at FROM vs_versions WHERE kind = %s AND version = %s FOR UPDATE",
                (kind, version),
            ).fetchone()
            if row is not None and row[0] is None:
                self._drop(conn, kind, version)

    @staticmethod
    def _drop(conn: Any, kind: str, version: str) -> None:
        """A version's row (its views' and blobs' rows go with it) and its tables."""
        conn.execute("DELETE FROM vs_versions WHERE kind = %s AND version = %s", (kind, version))
        for table in view_tables(conn, _table(version)):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"DROP TABLE IF EXISTS {_table(version)}")

    def writer_lock(self, *, wait: bool = False) -> AbstractContextManager[None]:
        """One index job at a time on this store, from any machine (:func:`.pgpool.writer_lock`)."""
        return writer_lock(self.url, wait=wait)

    def close(self) -> None:
        self._pool.close()
