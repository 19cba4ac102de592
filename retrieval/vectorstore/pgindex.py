"""Whole index versions in PostgreSQL + pgvector, searched where they live.

An index version of the query path (:class:`~retrieval.index.VectorIndex`) is more than one
set of vectors: the products' text view and the multilingual views hold other encoders'
vectors of the same items, the FAQ's answer head keeps small arrays, the products keep a BM25
index, and the metadata names the encoders and holds the calibration. On the pgvector
backend a version is laid out as :mod:`.pgpublish` describes (a table per view, blobs,
metadata, a products version's records as rows of ``vs_records``).

:func:`open_index` gives a published version as a :class:`PgIndex`: the read-only side of
``VectorIndex`` that the query path uses, whose searches run in the database. Its arrays and
lexical index are read into the process (docs/scale-out.md); a products version's records
are read by id (:class:`~.pgrecords.StoreCatalog`).
"""

from __future__ import annotations

import io
import logging
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IndexError_, IndexMismatch
from ..filters import StoreFilter
from ..index import Hit, IndexParams
from ..lexical.index import LexicalIndex
from .pgpublish import OWN_KEYS as _OWN
from .pgrecords import FLAG, StoreCatalog, StoreFAQBank
from .pgvector import PgvectorCollection, PgvectorStore

__all__ = ["PgIndex", "open_index"]

log = logging.getLogger(__name__)

CONTAINS_CACHE = 50_000  # item ids whose presence a PgIndex remembers
# VectorIndex.save's own keys; the rest of a version's metadata is the builder's


def _array(v: Any) -> np.ndarray:
    """A stored vector as float32 (psycopg hands back pgvector's ``Vector``)."""
    out: np.ndarray = np.asarray(v.to_numpy() if hasattr(v, "to_numpy") else v, np.float32)
    return out


class PgIndex:
    """A published version (or one of its views) read from the store: what the query path
    asks of a :class:`~retrieval.index.VectorIndex`, answered by SQL. Read-only: a published
    version never changes (``generation`` stays 0)."""

    filters_in_sql = True  # FilterMasks hands it a StoreFilter instead of a label mask
    remote = True  # searched by a database server: the query path overlaps its searches

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
        # a products version's catalog or an FAQ version's bank, when its records are rows of
        # vs_records; None: they are in ``meta["records"]`` (versions published before)
        self.catalog: StoreCatalog | None = None
        self.faq_bank: StoreFAQBank | None = None

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

    def shared_calibration(self, name: str, compute: Callable[[], list[Any]]) -> list[Any]:
        """A calibration of this version (``name`` says what, with what it depends on) that
        every replica needs: read from ``vs_calibrations`` when one replica computed it
        already, else computed here and stored for the others (the stored value wins a race,
        so every replica uses one value; computing is deterministic anyway: seeded samples).
        Where the store will not share it (versions from before the table, a role that may
        not read or write it, a read-only standby, a version pruned meanwhile) each replica
        computes it; a store that cannot be reached fails as any search does."""
        import psycopg
        from psycopg.types.json import Jsonb

        key = (self._c.kind, self._c.version, name)

        def attempt(sql: str, params: Sequence[Any]) -> list[Any] | None:
            with self._c.store._pool.connection() as conn:
                try:
                    with conn.transaction():
                        row = conn.execute(sql, params).fetchone()
                except psycopg.OperationalError:
                    raise
                except psycopg.Error as exc:
                    log.info("calibration %s of %s not shared: %s", name, key[1], exc)
                    return None
            return None if row is None else list(row[0])

        found = attempt(
            "SELECT value FROM vs_calibrations WHERE kind = %s AND version = %s AND name = %s",
            key,
        )
        if found is not None:
            return found
        value = list(compute())
        stored = attempt(
            "INSERT INTO vs_calibrations (kind, version, name, value) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (kind, version, name) DO UPDATE SET value = vs_calibrations.value "
            "RETURNING value",
            (*key, Jsonb(value)),
        )
        return value if stored is None else stored


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
    if meta.get(FLAG) and kind == "faq":
        index.faq_bank = StoreFAQBank(store, kind, main.version, int(meta["record_count"]))
    elif meta.get(FLAG):
        index.catalog = StoreCatalog(store, kind, main.version, int(meta["record_count"]))
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
