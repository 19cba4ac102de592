"""A version's records in the store, read by id: what keeps the catalog and the FAQ bank
out of each service replica's memory on the pgvector backend.

A published version keeps its records (a product's title, description, price, images,
names...; an FAQ entry's question, answer and examples) as rows of ``vs_records``, one per
product or entry, in their source order, instead of inside the version's metadata. A
replica that opens a products version gets a :class:`StoreCatalog`, one that opens an FAQ
version a :class:`StoreFAQBank`: a :class:`~retrieval.catalog.Catalog` or
:class:`~retrieval.faq.FAQBank` whose records are read from those rows when asked for (one
query for a result list's) and kept in a bounded cache, and whose iteration reads the rows
page by page. Iterating still costs a pass over the rows: the features that do it on first
use (the filter columns, the title index of agents' replies) keep what they derive, not the
records. The FAQ's answer head and hand-off signal are fitted by the re-index worker, which
holds the bank it indexes; a replica loads their arrays, not the entries.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

from ..catalog import Catalog, Product
from ..faq import FAQBank, FAQEntry
from .pgvector import PgvectorStore

__all__ = [
    "CACHE",
    "StoreCatalog",
    "StoreFAQBank",
    "prepare_records",
    "record_digest",
    "record_order",
    "write_records",
]

CACHE = 20_000  # records a replica keeps (about 1 KB each): the busiest part of a catalog
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


def record_digest(records: list[dict[str, Any]]) -> str:
    """A digest of the records' whole content: an FAQ version's metadata keeps it, so a
    re-index with an unchanged bank publishes nothing (the records themselves are rows)."""
    text = json.dumps(records, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


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


class StoreRecords:
    """The reads of a version's rows of ``vs_records``: by id (cached, at most
    :data:`CACHE` records, known ids only), ``len``, and iteration in source order, page by
    page. Subclasses name the record type (``_parse``)."""

    _store: PgvectorStore
    _kind: str
    _version: str
    _count: int
    _cache: OrderedDict[str, Any]
    _lock: threading.Lock

    def _open(self, store: PgvectorStore, kind: str, version: str, count: int) -> None:
        # set past __setattr__: FAQBank is a frozen dataclass
        fields: dict[str, Any] = {"source": None, "_store": store, "_kind": kind}
        fields |= {"_version": version, "_count": int(count)}
        fields |= {"_cache": OrderedDict(), "_lock": threading.Lock()}
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    noun = "records"

    @staticmethod
    def _parse(record: dict[str, Any]) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._kind} version {self._version}, {self._count} {self.noun})"

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def __len__(self) -> int:
        return self._count

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and bool(self.get_many([item_id]))

    def _pages(self, columns: str) -> Iterator[tuple[Any, ...]]:
        """``columns`` (SQL over ``item_id`` and ``record``) of every row in source order,
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

    def __iter__(self) -> Iterator[Any]:
        for (record,) in self._pages("record"):
            yield self._parse(record)

    def first(self, n: int) -> list[Any]:
        with self._store._pool.connection() as conn:
            rows = conn.execute(
                "SELECT record FROM vs_records WHERE kind = %s AND version = %s "
                "ORDER BY ord LIMIT %s",
                (self._kind, self._version, max(0, int(n))),
            ).fetchall()
        return [self._parse(r[0]) for r in rows]

    def get(self, item_id: str) -> Any:
        return self.get_many([item_id]).get(item_id)

    def preload(self) -> int:
        """Fill the cache with the first :data:`CACHE` records in source order (page by
        page), so the first questions on a version read none; returns how many."""
        n = 0
        if CACHE <= 0:
            return 0
        for item, record in self._pages("item_id, record"):
            value = self._parse(record)
            with self._lock:
                self._cache[item] = value
                while len(self._cache) > CACHE:
                    self._cache.popitem(last=False)
            n += 1
            if n >= CACHE:
                break
        return n

    def get_many(self, item_ids: Iterable[str]) -> dict[str, Any]:
        """The records of these ids that the version has (one query for those not cached)."""
        ids = list(dict.fromkeys(item_ids))
        found: dict[str, Any] = {}
        with self._lock:
            for item in ids:
                if item in self._cache:
                    self._cache.move_to_end(item)
                    found[item] = self._cache[item]
        missing = [item for item in ids if item not in found]
        if missing:
            with self._store._pool.connection() as conn:
                rows = conn.execute(
                    "SELECT item_id, record FROM vs_records WHERE kind = %s AND version = %s "
                    "AND item_id = ANY(%s)",
                    (self._kind, self._version, missing),
                ).fetchall()
            read = {item: self._parse(record) for item, record in rows}
            with self._lock:
                # known ids only: ids a stranger makes up must not push the others out
                for item, value in read.items():
                    self._cache[item] = value
                    self._cache.move_to_end(item)
                while len(self._cache) > CACHE:
                    self._cache.popitem(last=False)
            found.update(read)
        return found


class StoreCatalog(StoreRecords, Catalog):
    """A published products version's catalog read from ``vs_records``
    (:class:`StoreRecords`). It has no ``products`` dict: code that needs every product
    iterates."""

    noun = "products"

    def __init__(self, store: PgvectorStore, kind: str, version: str, count: int) -> None:
        self._open(store, kind, version, count)

    @staticmethod
    def _parse(record: dict[str, Any]) -> Product:
        return Product.from_record(record)

    @property
    def products(self) -> dict[str, Product]:
        raise TypeError(
            "this catalog is read from the vector store by id: use get() or iterate over it"
        )

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


class StoreFAQBank(StoreRecords, FAQBank):
    """A published FAQ version's bank read from ``vs_records`` (:class:`StoreRecords`). It
    has no ``entries`` dict: code that needs every entry iterates."""

    noun = "entries"

    def __init__(self, store: PgvectorStore, kind: str, version: str, count: int) -> None:
        self._open(store, kind, version, count)

    @staticmethod
    def _parse(record: dict[str, Any]) -> FAQEntry:
        return FAQEntry.from_record(record)

    @property
    def entries(self) -> dict[str, FAQEntry]:
        raise TypeError(
            "this FAQ bank is read from the vector store by id: use get() or iterate over it"
        )

    def language_versions(self) -> dict[tuple[str, str], str]:
        """(answer group, language) -> entry id, from three fields extracted in SQL."""
        columns = (
            "item_id, coalesce(nullif(record->>'group', ''), item_id), "
            "coalesce(record->>'lang', 'en')"
        )
        return {(group, lang): item for item, group, lang in self._pages(columns)}
