"""A product version's records in the store, read by id: what keeps the catalog out of each
service replica's memory on the pgvector backend.

A published products version keeps its records (title, description, price, images, names...)
as rows of ``vs_records``, one per product, in catalog order, instead of inside the version's
metadata. A replica that opens the version gets a :class:`StoreCatalog`: a
:class:`~retrieval.catalog.Catalog` whose products are read from those rows when asked for
(one query for a result list's products) and kept in a bounded cache, and whose iteration
reads the rows page by page. Iterating still costs a pass over the catalog: the features that
do it on first use (the filter columns, the title index of agents' replies) keep what they
derive, not the records.

The FAQ bank stays in its version's metadata: the answer head, the hand-off signal and the
agents' console read it whole, and a bank holds what agents write (thousands of entries).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

from ..catalog import Catalog, Product
from .pgvector import PgvectorStore

__all__ = ["CACHE", "StoreCatalog", "prepare_records", "record_order", "write_records"]

CACHE = 20_000  # products a StoreCatalog keeps (about 1 KB each): the busiest part of a catalog
PAGE = 2_000  # rows per query while a catalog is iterated
FLAG = "records_table"  # in a version's metadata: its records are rows of vs_records


def prepare_records(conn: Any) -> None:
    """The records table (created once per store, with the other version tables)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS vs_records (kind text NOT NULL, version text NOT NULL, "
        "item_id text NOT NULL, ord int NOT NULL, record jsonb NOT NULL, "
        "PRIMARY KEY (kind, version, item_id), UNIQUE (kind, version, ord), "
        "FOREIGN KEY (kind, version) REFERENCES vs_versions (kind, version) ON DELETE CASCADE)"
    )


def record_order(records: list[dict[str, Any]]) -> str:
    """A digest of the records' ids in their order: the version's metadata keeps it, so a
    re-index sees a catalog whose products were only reordered (the shop page's order)."""
    ids = "\n".join(str(r["id"]) for r in records)
    return hashlib.sha256(ids.encode()).hexdigest()[:16]


def write_records(
    store: PgvectorStore, kind: str, version: str, records: list[dict[str, Any]]
) -> None:
    """An unpublished version's records as rows, in their order (one binary COPY)."""
    from psycopg.types.json import Jsonb

    with store._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        cur.execute("DELETE FROM vs_records WHERE kind = %s AND version = %s", (kind, version))
        with cur.copy(
            "COPY vs_records (kind, version, item_id, ord, record) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["text", "text", "text", "int4", "jsonb"])
            for n, record in enumerate(records):
                copy.write_row((kind, version, str(record["id"]), n, Jsonb(record)))
    with store._pool.connection() as conn:
        conn.execute("ANALYZE vs_records")  # reads by id use the key, not a scan


class StoreCatalog(Catalog):
    """A published version's catalog read from ``vs_records``: ``get`` by id (cached, at
    most :data:`CACHE` products), ``len``, and iteration in catalog order, page by page.
    It has no ``products`` dict: code that needs every product iterates."""

    def __init__(self, store: PgvectorStore, kind: str, version: str, count: int) -> None:
        object.__setattr__(self, "source", None)
        self._store = store
        self._kind = kind
        self._version = version
        self._count = int(count)
        self._cache: OrderedDict[str, Product] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def products(self) -> dict[str, Product]:
        raise TypeError(
            "this catalog is read from the vector store by id: use get() or iterate over it"
        )

    def __repr__(self) -> str:
        return f"StoreCatalog({self._kind} version {self._version}, {self._count} products)"

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def __len__(self) -> int:
        return self._count

    def _pages(self, columns: str) -> Iterator[tuple[Any, ...]]:
        """``columns`` (SQL over ``item_id`` and ``record``) of every row in catalog order,
        read page by page."""
        last = -1
        while True:
            with self._store._pool.connection() as conn:
                rows = conn.execute(
                    f"SELECT ord, {columns} FROM vs_records WHERE kind = %s AND version = %s "
                    "AND ord > %s ORDER BY ord LIMIT %s",
                    (self._kind, self._version, last, PAGE),
                ).fetchall()
            for row in rows:
                yield tuple(row[1:])
            if len(rows) < PAGE:
                return
            last = rows[-1][0]

    def __iter__(self) -> Iterator[Product]:
        for (record,) in self._pages("record"):
            yield Product.from_record(record)

    def first(self, n: int) -> list[Product]:
        with self._store._pool.connection() as conn:
            rows = conn.execute(
                "SELECT record FROM vs_records WHERE kind = %s AND version = %s "
                "ORDER BY ord LIMIT %s",
                (self._kind, self._version, max(0, int(n))),
            ).fetchall()
        return [Product.from_record(r[0]) for r in rows]

    def titles(self) -> Iterator[tuple[str, str]]:
        for row in self._pages("item_id, coalesce(record->>'title', '')"):
            yield str(row[0]), str(row[1])

    def filter_fields(
        self,
    ) -> Iterator[tuple[str, str, float | None, int | None, tuple[str, ...]]]:
        """What filters test, extracted in SQL (no record is parsed here)."""
        columns = (
            "item_id, coalesce(record->>'category', ''), (record->>'price')::float8, "
            "(record->>'stock')::int, coalesce(record->'attributes', '[]'::jsonb)"
        )
        for item, category, price, stock, attributes in self._pages(columns):
            yield item, category, price, stock, tuple(attributes)

    def categories(self) -> list[str]:
        with self._store._pool.connection() as conn:
            rows = conn.execute(
                "SELECT DISTINCT coalesce(record->>'category', '') FROM vs_records "
                "WHERE kind = %s AND version = %s",
                (self._kind, self._version),
            ).fetchall()
        return sorted(r[0] for r in rows)

    def get(self, product_id: str) -> Product | None:
        return self.get_many([product_id]).get(product_id)

    def get_many(self, product_ids: Iterable[str]) -> dict[str, Product]:
        """The products of these ids that the version has (one query for those not cached)."""
        ids = list(dict.fromkeys(product_ids))
        found: dict[str, Product] = {}
        with self._lock:
            for pid in ids:
                if pid in self._cache:
                    self._cache.move_to_end(pid)
                    found[pid] = self._cache[pid]
        missing = [pid for pid in ids if pid not in found]
        if missing:
            with self._store._pool.connection() as conn:
                rows = conn.execute(
                    "SELECT item_id, record FROM vs_records WHERE kind = %s AND version = %s "
                    "AND item_id = ANY(%s)",
                    (self._kind, self._version, missing),
                ).fetchall()
            read = {pid: Product.from_record(record) for pid, record in rows}
            with self._lock:
                # known products only: ids a stranger makes up must not push them out
                for pid, product in read.items():
                    self._cache[pid] = product
                    self._cache.move_to_end(pid)
                while len(self._cache) > CACHE:
                    self._cache.popitem(last=False)
            found.update(read)
        return found
