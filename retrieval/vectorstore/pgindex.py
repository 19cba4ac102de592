"""Whole index versions in PostgreSQL + pgvector, searched where they live.

An index version of the query path (:class:`~retrieval.index.VectorIndex`) is more than one
set of vectors: the products' text view and the multilingual views hold other encoders'
vectors of the same items, the FAQ's answer head keeps small arrays, the products keep a BM25
index, and the metadata names the encoders and holds the calibration and the records. On the
pgvector backend a version is:

- its vectors in the version's table (:mod:`.pgvector`), each keeping the label it had in
  the built index, so the query path names vectors as it does on hnswlib; the products'
  filterable fields on every row, so a filter is a SQL ``WHERE``;
- each view in a table of its own, ``<table>__<view>``, listed in ``vs_views`` with its
  metadata; :meth:`PgvectorStore.publish` builds every table's HNSW index before the switch;
- the arrays (one ``.npz``) and the lexical index (a tar of its folder) in ``vs_blobs``;
- the metadata in ``vs_versions``.

:func:`publish_index` copies a built :class:`VectorIndex` there and publishes it.
:func:`open_index` gives the published version as a :class:`PgIndex`: the read-only side of
``VectorIndex`` that the query path uses, whose searches run in the database. Its records
(``meta["records"]``) and lexical index are still read into the process: see
docs/scale-out.md.
"""

from __future__ import annotations

import io
import logging
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import IndexError_, IndexMismatch
from ..filters import StoreFilter
from ..index import Hit, IndexParams, VectorIndex
from ..lexical.index import LexicalIndex
from .base import Record, check_kind
from .pgvector import PgvectorCollection, PgvectorStore, create_table

__all__ = ["PgIndex", "copy_view", "open_index", "publish_index", "store_blobs"]

log = logging.getLogger(__name__)

CHUNK = 20_000  # vectors per COPY while a version is copied in
CONTAINS_CACHE = 50_000  # item ids whose presence a PgIndex remembers
# VectorIndex.save's own keys; the rest of a version's metadata is the builder's
_OWN = {"format", "dim", "m", "ef_construction", "ef", "next_label", "free", "keys"}
_OWN |= {"companions", "arrays", "lexical"}


def _array(v: Any) -> np.ndarray:
    """A stored vector as float32 (psycopg hands back pgvector's ``Vector``)."""
    out: np.ndarray = np.asarray(v.to_numpy() if hasattr(v, "to_numpy") else v, np.float32)
    return out


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
        **{k: v for k, v in index.meta.items() if k not in _OWN},
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
    main = store.create(kind, version, dim=index.dim, meta=version_meta(index))
    _copy(main, index, fields)
    blobs = version_blobs(index, ":")
    for name, view in index.companions.items():
        copy_view(store, kind, version, name, view, fields)
        blobs.update(version_blobs(view, f"{name}:"))
    store_blobs(store, kind, version, blobs)
    store.publish(kind, main)


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


class PgIndex:
    """A published version (or one of its views) read from the store: what the query path
    asks of a :class:`~retrieval.index.VectorIndex`, answered by SQL. Read-only: a published
    version never changes (``generation`` stays 0)."""

    filters_in_sql = True  # FilterMasks hands it a StoreFilter instead of a label mask

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
        self.dim = collection.dim
        self.params = params
        self.meta = meta
        self.companions: dict[str, PgIndex] = {}
        self.arrays = arrays or {}
        self.lexical = lexical
        self.generation = 0
        collection.set_ef(params.ef)
        self._count = collection.vector_count()
        self._items = collection.item_count()
        self._label_items: tuple[np.ndarray, list[str]] | None = None
        self._has: dict[str, bool] = {}  # __contains__ answers (bounded: see CONTAINS_CACHE)

    @property
    def version(self) -> str:
        return self._c.version

    @property
    def table(self) -> str:
        return self._c.table

    def __len__(self) -> int:
        return self._count

    @property
    def item_count(self) -> int:
        return self._items

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._c.store._pool.connection(self._c.ef) as conn:
            return list(conn.execute(sql.format(t=self._c.table), params).fetchall())

    def __contains__(self, item_id: object) -> bool:
        if not isinstance(item_id, str):
            return False
        known = self._has.get(item_id)
        if known is None:
            rows = self._rows("SELECT 1 FROM {t} WHERE item_id = %s LIMIT 1", (item_id,))
            known = bool(rows)
            if len(self._has) >= CONTAINS_CACHE:
                self._has.clear()  # a published version never changes: only memory is at stake
            self._has[item_id] = known
        return known

    def search(self, query: np.ndarray, k: int, *, allowed: Any = None) -> list[Hit]:
        """Nearest vectors (not grouped by item), best first."""
        if allowed is not None:
            raise ValueError("a pgvector index filters in search_items")
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        rows = self._rows(
            "SELECT item_id, variant, -(v <#> %s), label FROM {t} ORDER BY v <#> %s LIMIT %s",
            (q, q, int(k)),
        )
        rows.sort(key=lambda r: (-r[2], r[3]))
        return [
            Hit(item, float(score), variant, int(label)) for item, variant, score, label in rows
        ]

    def search_items(
        self,
        query: np.ndarray,
        k: int,
        *,
        exclude: Iterable[str] = (),
        allowed: StoreFilter | None = None,
    ) -> list[Hit]:
        """The k best distinct items (best variant each), only those ``allowed`` keeps."""
        if allowed is not None and allowed.ids is not None and not allowed.ids:
            return []
        hits = self._c.search_items(
            query,
            k,
            where=None if allowed is None else allowed.where,
            exclude=exclude,
            ids=None if allowed is None else allowed.ids,
        )
        return [Hit(h.item_id, h.score, h.variant, h.label) for h in hits]

    def vectors(self, labels: Sequence[int]) -> np.ndarray:
        if not len(labels):
            return np.zeros((0, self.dim), dtype=np.float32)
        wanted = [int(lb) for lb in labels]
        found = dict(self._rows("SELECT label, v FROM {t} WHERE label = ANY(%s)", (wanted,)))
        missing = [lb for lb in wanted if lb not in found]
        if missing:
            raise IndexError_(f"version {self.version} has no vectors with labels {missing[:5]}")
        return np.stack([_array(found[lb]) for lb in wanted])

    def item_vectors(self, item_id: str) -> tuple[list[str], np.ndarray]:
        rows = self._rows(
            "SELECT variant, v FROM {t} WHERE item_id = %s ORDER BY label", (item_id,)
        )
        if not rows:
            return [], np.zeros((0, self.dim), dtype=np.float32)
        return [r[0] for r in rows], np.stack([_array(r[1]) for r in rows])

    def best_variants(
        self, item_ids: Iterable[str], query: np.ndarray
    ) -> dict[str, tuple[float, str]]:
        """Each item's best stored vector's inner product with ``query`` and its variant
        (ties: the lowest label, the first added); items not in the version left out."""
        ids = list(dict.fromkeys(item_ids))
        if not ids:
            return {}
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        rows = self._rows(
            "SELECT item_id, variant, v FROM {t} WHERE item_id = ANY(%s) ORDER BY label", (ids,)
        )
        if not rows:
            return {}
        # the similarity in numpy, as VectorIndex computes it (float32 dot products)
        sims = (np.stack([_array(r[2]) for r in rows]) @ q).tolist()
        out: dict[str, tuple[float, str]] = {}
        for (item, variant, _), sim in zip(rows, sims, strict=True):
            if item not in out or sim > out[item][0]:
                out[item] = (float(sim), variant)
        return out

    def keys_of(self, labels: Sequence[int]) -> list[tuple[str, str]]:
        """(item_id, variant) of each label, in the order asked."""
        wanted = [int(lb) for lb in labels]
        rows = self._rows(
            "SELECT label, item_id, variant FROM {t} WHERE label = ANY(%s)", (wanted,)
        )
        found = {int(lb): (item, variant) for lb, item, variant in rows}
        return [found[lb] for lb in wanted]

    def label_items(self) -> tuple[np.ndarray, list[str]]:
        """(labels, the item of each) of every vector (read once: the version never changes)."""
        if self._label_items is None:
            rows = self._rows("SELECT label, item_id FROM {t} ORDER BY label")
            labels = np.array([r[0] for r in rows], dtype=np.int64)
            self._label_items = (labels, [r[1] for r in rows])
        return self._label_items

    def labels_without_variant(self, variant: str) -> list[int]:
        rows = self._rows("SELECT label FROM {t} WHERE variant <> %s ORDER BY label", (variant,))
        return [int(r[0]) for r in rows]


def _blob_of(store: PgvectorStore, kind: str, version: str, name: str) -> bytes | None:
    with store._pool.connection() as conn:
        row = conn.execute(
            "SELECT data FROM vs_blobs WHERE kind = %s AND version = %s AND name = %s",
            (kind, version, name),
        ).fetchone()
    return None if row is None else bytes(row[0])


def _extras(
    store: PgvectorStore, kind: str, version: str, prefix: str, meta: dict[str, Any]
) -> tuple[dict[str, np.ndarray], LexicalIndex | None]:
    arrays: dict[str, np.ndarray] = {}
    lexical = None
    if meta.get("arrays"):
        data = _blob_of(store, kind, version, prefix + "arrays")
        if data is None:
            raise IndexError_(f"{kind} version {version} lost its arrays; run 'retrieval ingest'")
        with np.load(io.BytesIO(data), allow_pickle=False) as saved:
            arrays = {name: saved[name] for name in meta["arrays"]}
    if meta.get("lexical"):
        data = _blob_of(store, kind, version, prefix + "lexical")
        if data is None:
            raise IndexError_(f"{kind} version {version} lost its lexical index")
        with tempfile.TemporaryDirectory(prefix="retrieval-lexical-") as tmp:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
                tar.extractall(tmp, filter="data")  # refuses links and paths out of tmp
            try:
                lexical = LexicalIndex.load(Path(tmp) / "lexical")
            except IndexMismatch as exc:
                # built by another tokeniser: the version answers by its vectors alone until
                # a re-index rebuilds it (as VectorIndex.load does with a folder)
                log.warning(
                    "%s version %s: its lexical index does not fit (%s); searching without it",
                    kind,
                    version,
                    str(exc).split(":")[-1].strip(),
                )
    return arrays, lexical


def open_index(
    store: PgvectorStore,
    kind: str,
    *,
    version: str | None = None,
    expect: dict[str, Any] | None = None,
    ef: int | None = None,
) -> PgIndex:
    """A published version (default: the current one) with its views, checked against
    ``expect`` (the encoders) as :meth:`VectorIndex.load` checks a folder."""
    # no DDL here (read-only roles may load versions): a version published by
    # publish_index comes with vs_views and vs_blobs
    main = store.open(kind, version, expect=expect)
    meta = dict(main.meta)
    params = IndexParams(meta["m"], meta["ef_construction"], ef or meta["ef"])
    arrays, lexical = _extras(store, kind, main.version, ":", meta)
    own = {k: v for k, v in meta.items() if k not in _OWN}
    own["version"] = main.version
    index = PgIndex(main, params, own, arrays=arrays, lexical=lexical)
    with store._pool.connection() as conn:
        views = conn.execute(
            "SELECT view, dim, meta FROM vs_views WHERE kind = %s AND version = %s",
            (kind, main.version),
        ).fetchall()
    for name, dim, view_meta in views:
        if name not in meta.get("companions", []):
            continue
        collection = PgvectorCollection(store, kind, main.version, int(dim), view_meta, name)
        view_params = IndexParams(view_meta["m"], view_meta["ef_construction"], params.ef)
        v_arrays, v_lexical = _extras(store, kind, main.version, f"{name}:", view_meta)
        index.companions[name] = PgIndex(
            collection,
            view_params,
            {k: v for k, v in view_meta.items() if k not in _OWN},
            arrays=v_arrays,
            lexical=v_lexical,
        )
    missing = set(meta.get("companions", [])) - set(index.companions)
    if missing:
        raise IndexError_(f"{kind} version {main.version} lost its views {sorted(missing)}")
    return index
