"""The next version of the product index made inside PostgreSQL from the current one.

A re-index on the pgvector backend that finds a few changed products should not move a whole
catalog through the re-index worker. :func:`start_draft` makes the next version's tables as
server-side copies of the current version's (``INSERT INTO ... SELECT``: no vector leaves
the database); the re-index then deletes and adds only the changed items' vectors through
the :class:`PgDraft` (the part of :class:`~retrieval.index.VectorIndex` that the product
re-index writes with), and :func:`publish_draft` brings every row's filterable fields in
line with the new records (a price or a stock changes without new vectors), stores the
views, the lexical index and the metadata, and publishes: the HNSW indexes are built on
the new tables and ``vs_current`` switches, as for a version copied in whole.

What still costs as much as the catalog: the HNSW build at publish (pgvector builds an index
over a table; it cannot copy one), and the records, written whole as the new version's
``vs_records`` rows and its filterable fields compared row by row. A run that
fails leaves an unpublished draft; :func:`discard_draft` drops it at once, and ``prune``
drops one left by a killed process after ``STALE_BUILD_HOURS``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..filters import normalise_category
from ..index import IndexParams, VectorIndex
from ..indexfolders import new_version_id
from ..lexical.index import LexicalIndex
from .base import Record, check_kind
from .pgindex import open_index
from .pgpublish import (
    copy_view,
    prepare_tables,
    product_fields,
    split_records,
    store_blobs,
    version_blobs,
    version_meta,
)
from .pgrecords import write_records
from .pgvector import PgvectorCollection, PgvectorStore, create_table, view_tables

__all__ = ["PgDraft", "discard_draft", "publish_draft", "start_draft"]

log = logging.getLogger(__name__)

_COLS = "item_id, variant, v, category, category_norm, price, stock, attributes, label"


class PgDraft:
    """One table of an unpublished version (the main one or a view's), filled from the
    version it started from: deletes and adds go straight to SQL, new vectors get labels
    after the highest one copied."""

    def __init__(
        self,
        collection: PgvectorCollection,
        params: IndexParams,
        meta: dict[str, Any],
        *,
        arrays: dict[str, np.ndarray] | None = None,
        lexical: LexicalIndex | None = None,
    ) -> None:
        self._c = collection
        self.version = collection.version
        self.dim = collection.dim
        self.params = params
        self.meta = meta
        self.arrays = dict(arrays or {})
        self.lexical = lexical
        # views: drafts of their own, or an in-process index a re-index built whole
        self.companions: dict[str, PgDraft | VectorIndex] = {}
        self.deleted_ratio = 0.0  # a table has no deleted slots; publish builds a new graph
        with collection.store._pool.connection() as conn:
            row = conn.execute(f"SELECT coalesce(max(label), -1) FROM {collection.table}")
            self._next_label = int(row.fetchone()[0]) + 1

    @property
    def collection(self) -> PgvectorCollection:
        return self._c

    @property
    def table(self) -> str:
        return self._c.table

    def __len__(self) -> int:
        return self._c.vector_count()

    @property
    def item_count(self) -> int:
        return self._c.item_count()

    def delete_items(self, item_ids: Iterable[str]) -> None:
        self._c.delete_items(item_ids)

    def add(self, keys: Sequence[tuple[str, str]], vectors: np.ndarray) -> None:
        """Add or replace vectors by key; their filterable fields are set at publish."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(keys) != len(vectors):
            raise ValueError(f"{len(keys)} keys for {len(vectors)} vectors")
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate keys in one add")
        records = []
        for (item, variant), v in zip(keys, vectors, strict=True):
            records.append(Record(item, variant, v, label=self._next_label))
            self._next_label += 1
        self._c.upsert(records)


def start_draft(store: PgvectorStore, kind: str, base: str, *, ef: int | None = None) -> PgDraft:
    """The next version of ``kind`` as a copy of published version ``base``, made in the
    database (its views too); unpublished until :func:`publish_draft`."""
    check_kind(kind)
    prepare_tables(store)
    stored = open_index(store, kind, version=base, ef=ef)
    version = new_version_id(kind)
    main = store.create(kind, version, dim=stored.dim, meta={})
    try:
        with store._pool.connection() as conn, conn.transaction():
            conn.execute(f"INSERT INTO {main.table} ({_COLS}) SELECT {_COLS} FROM {stored.table}")
        draft = PgDraft(
            main, stored.params, dict(stored.meta), arrays=stored.arrays, lexical=stored.lexical
        )
        for name, view in stored.companions.items():
            collection = PgvectorCollection(store, kind, version, view.dim, {}, name)
            with store._pool.connection() as conn, conn.transaction():
                create_table(conn, collection.table, view.dim)
                conn.execute(
                    f"INSERT INTO {collection.table} ({_COLS}) SELECT {_COLS} FROM {view.table}"
                )
            draft.companions[name] = PgDraft(
                collection, view.params, dict(view.meta), arrays=view.arrays, lexical=view.lexical
            )
    except BaseException:
        _drop(store, kind, version)
        raise
    log.info("%s: draft %s copied from %s in the store", kind, version, base)
    return draft


def _sync_fields(store: PgvectorStore, tables: list[str], fields: dict[str, Any]) -> None:
    """Give every row of ``tables`` its item's filterable fields from the new records (only
    rows whose fields differ are written)."""
    if not fields or not tables:
        return
    with store._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE vs_fields (item_id text PRIMARY KEY, category text, "
            "category_norm text, price double precision, stock int, attributes text[]) "
            "ON COMMIT DROP"
        )
        with cur.copy("COPY vs_fields FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["text", "text", "text", "float8", "int4", "text[]"])
            for item, (category, price, stock, attributes) in fields.items():
                copy.write_row(
                    (item, category, normalise_category(category), price, stock, sorted(attributes))
                )
        for table in tables:
            cur.execute(
                f"UPDATE {table} t SET category = s.category, category_norm = s.category_norm, "
                "price = s.price, stock = s.stock, attributes = s.attributes FROM vs_fields s "
                "WHERE t.item_id = s.item_id AND (t.category, t.price, t.stock, t.attributes) "
                "IS DISTINCT FROM (s.category, s.price, s.stock, s.attributes)"
            )


def publish_draft(store: PgvectorStore, kind: str, draft: PgDraft) -> None:
    """Store the draft's fields, views, blobs and metadata, then publish it (HNSW indexes
    built on its tables, ``vs_current`` switched for every reader at once)."""
    from psycopg.types.json import Jsonb

    check_kind(kind)
    version = draft.version
    draft.meta["version"] = version
    fields = product_fields(draft) if kind == "products" else {}
    blobs = version_blobs(draft, ":")
    kept = [draft.table]
    with store._pool.connection() as conn, conn.transaction():
        for table in view_tables(conn, draft.table):
            name = table.rsplit("__", 1)[1]
            view = draft.companions.get(name)
            if not isinstance(view, PgDraft):  # dropped, or built whole: copied below
                conn.execute(f"DROP TABLE {table}")
    for name, view in draft.companions.items():
        if isinstance(view, PgDraft):
            with store._pool.connection() as conn, conn.transaction():
                conn.execute(
                    "INSERT INTO vs_views (kind, version, view, dim, meta) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    (kind, version, name, view.dim, Jsonb(version_meta(view))),
                )
            kept.append(view.table)
        else:
            copy_view(store, kind, version, name, view, fields)
        blobs.update(version_blobs(view, f"{name}:"))
    _sync_fields(store, kept, fields)
    store_blobs(store, kind, version, blobs)
    meta, records = split_records(kind, version_meta(draft))
    if records is not None:
        write_records(store, kind, version, records)
    with store._pool.connection() as conn, conn.transaction():
        conn.execute(
            "UPDATE vs_versions SET meta = %s WHERE kind = %s AND version = %s",
            (Jsonb(meta), kind, version),
        )
    store.publish(kind, draft.collection)


def discard_draft(store: PgvectorStore, kind: str, draft: PgDraft) -> None:
    """Drop an unpublished draft (a re-index that failed)."""
    _drop(store, kind, draft.version)


def _drop(store: PgvectorStore, kind: str, version: str) -> None:
    try:
        store.drop_unpublished(kind, version)
    except Exception:  # the store may be what failed; prune drops it later
        log.warning("%s: could not drop the unpublished draft %s", kind, version, exc_info=True)
