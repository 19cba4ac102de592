"""Copying a built index version into PostgreSQL + pgvector and publishing it.

On the pgvector backend a version is:

- its vectors in the version's table (:mod:`.pgvector`), each keeping the label it had in
  the built index, so the query path names vectors as it does on hnswlib; the products'
  filterable fields on every row, so a filter is a SQL ``WHERE``;
- each view in a table of its own, ``<table>__<view>``, listed in ``vs_views`` with its
  metadata; :meth:`PgvectorStore.publish` builds every table's HNSW index before the switch;
- the arrays (one ``.npz``) and the lexical index (a tar of its folder) in ``vs_blobs``;
- a products version's records as rows of ``vs_records`` (:mod:`.pgrecords`), read by id;
- the rest of the metadata (encoders, calibration, an FAQ bank's records) in ``vs_versions``.

:func:`publish_index` copies a built :class:`VectorIndex` there and publishes it; the
helpers below are shared with :mod:`.pgdraft`, which makes the next version in the database.
"""

from __future__ import annotations

import io
import logging
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..index import IndexParams, VectorIndex
from ..lexical.index import LexicalIndex
from .base import Record, check_kind
from .pgrecords import FLAG, prepare_records, record_digest, record_order, write_records
from .pgvector import PgvectorCollection, PgvectorStore, create_table

__all__ = [
    "OWN_KEYS",
    "VersionParts",
    "copy_view",
    "prepare_tables",
    "product_fields",
    "publish_index",
    "split_records",
    "store_blobs",
    "version_blobs",
    "version_meta",
]

log = logging.getLogger(__name__)

CHUNK = 20_000  # vectors per COPY while a version is copied in
# VectorIndex.save's own keys; the rest of a version's metadata is the builder's
OWN_KEYS = {"format", "dim", "m", "ef_construction", "ef", "next_label", "free", "keys"}
OWN_KEYS |= {"companions", "arrays", "lexical"}


def prepare_tables(store: PgvectorStore) -> None:
    with store._pool.connection() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(7240332)")  # one schema creator at a time
        conn.execute(
            "CREATE TABLE IF NOT EXISTS vs_views (kind text NOT NULL, version text NOT NULL, "
            "view text NOT NULL, dim int NOT NULL, meta jsonb NOT NULL, "
            "PRIMARY KEY (kind, version, view), FOREIGN KEY (kind, version) "
            "REFERENCES vs_versions (kind, version) ON DELETE CASCADE)"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS vs_blobs (kind text NOT NULL, version text NOT NULL, "
            "name text NOT NULL, data bytea NOT NULL, PRIMARY KEY (kind, version, name), "
            "FOREIGN KEY (kind, version) REFERENCES vs_versions (kind, version) "
            "ON DELETE CASCADE)"
        )
        prepare_records(conn)
        # what a replica calibrates on a version (the product gate, the photo sure level),
        # computed once and read by the others (PgIndex.shared_calibration)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS vs_calibrations (kind text NOT NULL, version text NOT "
            "NULL, name text NOT NULL, value jsonb NOT NULL, PRIMARY KEY (kind, version, name), "
            "FOREIGN KEY (kind, version) REFERENCES vs_versions (kind, version) "
            "ON DELETE CASCADE)"
        )


class VersionParts(Protocol):
    """What the helpers below read of a version being stored: an in-process
    :class:`VectorIndex` or a draft made in the database (:mod:`.pgdraft`)."""

    @property
    def meta(self) -> dict[str, Any]: ...
    @property
    def params(self) -> IndexParams: ...
    @property
    def arrays(self) -> dict[str, np.ndarray]: ...
    @property
    def lexical(self) -> LexicalIndex | None: ...
    @property
    def companions(self) -> Mapping[str, Any]: ...


def product_fields(
    index: VersionParts,
) -> dict[str, tuple[str, float | None, int | None, frozenset[str]]]:
    """The filterable fields of each product in a products version's records."""
    out = {}
    for r in index.meta.get("records", []):
        price = r.get("price")
        out[str(r["id"])] = (
            str(r.get("category") or ""),
            None if price is None else float(price),
            r.get("stock"),
            frozenset(r.get("attributes") or ()),
        )
    return out


def _copy(target: PgvectorCollection, index: VectorIndex, fields: dict[str, Any]) -> None:
    """Every vector of ``index`` into ``target``, with its label and its product's fields."""
    entries = index.entries()
    none: tuple[str, None, None, frozenset[str]] = ("", None, None, frozenset())
    for start in range(0, len(entries), CHUNK):
        part = entries[start : start + CHUNK]
        vectors = index.vectors([lb for lb, _, _ in part])
        records = []
        for (label, item, variant), v in zip(part, vectors, strict=True):
            category, price, stock, attributes = fields.get(item, none)
            records.append(Record(item, variant, v, category, price, stock, attributes, label))
        target.upsert(records)


def version_blobs(index: VersionParts, prefix: str) -> dict[str, bytes]:
    out = {}
    if index.arrays:
        buf = io.BytesIO()
        np.savez(buf, **index.arrays)  # type: ignore[arg-type]
        out[prefix + "arrays"] = buf.getvalue()
    if index.lexical is not None:
        with tempfile.TemporaryDirectory(prefix="retrieval-lexical-") as tmp:
            index.lexical.save(Path(tmp) / "lexical")
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                tar.add(Path(tmp) / "lexical", arcname="lexical")
        out[prefix + "lexical"] = buf.getvalue()
    return out


def version_meta(index: VersionParts) -> dict[str, Any]:
    return {
        **{k: v for k, v in index.meta.items() if k not in OWN_KEYS},
        "m": index.params.m,
        "ef_construction": index.params.ef_construction,
        "ef": index.params.ef,
        "companions": sorted(index.companions),
        "arrays": sorted(index.arrays),
        "lexical": index.lexical is not None,
    }


def publish_index(store: PgvectorStore, kind: str, version: str, index: VectorIndex) -> None:
    """Copy a built version (its views, arrays and lexical index with it) into the store and
    make it the current one. Readers see the old version until the switch."""

    check_kind(kind)
    prepare_tables(store)
    index.meta["version"] = version
    fields = product_fields(index) if kind == "products" else {}
    meta, records = split_records(kind, version_meta(index))
    main = store.create(kind, version, dim=index.dim, meta=meta)
    try:
        if records is not None:
            write_records(store, kind, version, records)
        _copy(main, index, fields)
        blobs = version_blobs(index, ":")
        for name, view in index.companions.items():
            copy_view(store, kind, version, name, view, fields)
            blobs.update(version_blobs(view, f"{name}:"))
        store_blobs(store, kind, version, blobs)
        store.publish(kind, main)
    except BaseException:
        # a copy that failed half-way leaves nothing behind (a published one is kept)
        try:
            store.drop_unpublished(kind, version)
        except Exception:  # the store may be what failed; prune drops it later
            log.warning("%s: could not drop the unpublished version %s", kind, version)
        raise


def split_records(
    kind: str, meta: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """A version's metadata without its records, and the records (None when the metadata
    holds none): they become rows of ``vs_records`` (:mod:`.pgrecords`), read by id, so no
    replica holds the whole catalog or FAQ bank. The metadata keeps their count, the digest
    of their order (the shop page's) and of their content (what a re-index compares)."""
    if "records" not in meta:
        return meta, None
    records = list(meta.pop("records"))
    meta[FLAG] = True
    meta["record_count"] = len(records)
    meta["record_order"] = record_order(records)
    meta["record_digest"] = record_digest(records)
    return meta, records


def copy_view(
    store: PgvectorStore,
    kind: str,
    version: str,
    name: str,
    view: VectorIndex,
    fields: dict[str, Any],
) -> None:
    """A view of an unpublished version (another encoder's vectors of the same items) into a
    table of its own, listed in ``vs_views``."""
    from psycopg.types.json import Jsonb

    collection = PgvectorCollection(store, kind, version, view.dim, {}, name)
    with store._pool.connection() as conn, conn.transaction():
        create_table(conn, collection.table, view.dim)
        conn.execute(
            "INSERT INTO vs_views (kind, version, view, dim, meta) VALUES (%s, %s, %s, %s, %s)",
            (kind, version, name, view.dim, Jsonb(version_meta(view))),
        )
    _copy(collection, view, fields)


def store_blobs(store: PgvectorStore, kind: str, version: str, blobs: dict[str, bytes]) -> None:
    """An unpublished version's arrays and lexical indexes (:func:`_blobs`) into ``vs_blobs``."""
    with store._pool.connection() as conn, conn.transaction():
        for name, data in blobs.items():
            conn.execute(
                "INSERT INTO vs_blobs (kind, version, name, data) VALUES (%s, %s, %s, %s)",
                (kind, version, name, data),
            )
