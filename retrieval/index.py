"""An HNSW vector index (hnswlib) with stable string ids, grouping, metadata and persistence.

Each stored vector has a key ``(item_id, variant)``: a product may have several vectors
(e.g. extra photos), an FAQ entry one per phrasing (question, answer, examples). Searches
return hits grouped per item, the best variant's score winning. Scores are cosine
similarities in [-1, 1] (vectors are unit length; the space is inner product).

On disk an index is a folder with ``index.hnsw`` and ``meta.json`` (dim, M, ef_construction,
ef, encoder ids, fusion, keys, version), plus a folder per companion index, ``arrays.npz``
and ``lexical/`` (a :class:`~retrieval.lexical.index.LexicalIndex`) when it has them. Loading checks
the metadata against what the caller expects and refuses a mismatch with a clear error; a
lexical index made by another tokeniser is left out with a warning (no lexical signal until
a re-index rebuilds it).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import hnswlib
import numpy as np

from .errors import IndexError_, IndexMismatch
from .lexical.index import LexicalIndex
from .rwlock import RWLock

__all__ = ["Hit", "IndexParams", "VectorIndex"]

log = logging.getLogger(__name__)

META_FILE = "meta.json"
INDEX_FILE = "index.hnsw"
ARRAYS_FILE = "arrays.npz"
LEXICAL_DIR = "lexical"
FORMAT_VERSION = 1
# a filtered search over at most this many vectors is exact; above it, the graph search skips
# what the filter drops. hnswlib hands vectors back at tens of microseconds each, so exact
# search pays per candidate while the graph search pays for rarity (it walks further to find
# k allowed vectors): benchmarks/filtered_search.py measured the crossover at a few hundred
EXACT_FILTERED = 256
# a filter keeping a fair share is applied to a larger plain graph search when that search
# needs at most this many results (k / share, with slack)
POST_FILTER_MAX = 2048


class Hit(NamedTuple):
    """One item found by a search: its best variant and that variant's similarity."""

    item_id: str
    score: float
    variant: str
    label: int


@dataclass(frozen=True)
class IndexParams:
    m: int = 24
    ef_construction: int = 200
    ef: int = 48


class VectorIndex:
    """hnswlib index keyed by (item_id, variant); thread-safe: one writer, many readers."""

    def __init__(
        self,
        dim: int,
        params: IndexParams = IndexParams(),
        *,
        capacity: int = 1024,
        meta: dict | None = None,
        _loaded: hnswlib.Index | None = None,
    ):
        self.dim = int(dim)
        self.params = params
        self.meta: dict[str, Any] = dict(meta or {})
        if _loaded is not None:
            self._index = _loaded
        else:
            self._index = hnswlib.Index(space="ip", dim=self.dim)
            self._index.init_index(
                max_elements=max(capacity, 16),
                M=params.m,
                ef_construction=params.ef_construction,
                allow_replace_deleted=True,
            )
        self._index.set_ef(params.ef)
        self._index.set_num_threads(1)  # queries: single-threaded is fastest for one vector
        self._keys: dict[int, tuple[str, str]] = {}  # label -> (item_id, variant)
        self._labels: dict[tuple[str, str], int] = {}
        self._by_item: dict[str, set[int]] = {}
        self._free: list[int] = []  # labels of deleted slots, reused by later adds
        self._next_label = 0
        self.generation = 0  # counts writes: caches keyed on the labels check it
        self._lock = RWLock()
        # companion indexes over the same items, saved and loaded with this one
        # (e.g. the products' text-only view that answers text-only queries)
        self.companions: dict[str, VectorIndex] = {}
        # small dense arrays that belong to this version (e.g. the FAQ's answer head),
        # saved and loaded with it; whoever changes the items refits them
        self.arrays: dict[str, np.ndarray] = {}
        # a BM25 index over the same items (the products' lexical signal), saved into
        # ``<folder>/lexical/`` and loaded with this one; None: no lexical signal
        self.lexical: LexicalIndex | None = None

    # ---- size -------------------------------------------------------------------------
    def __len__(self) -> int:
        """Live vectors."""
        return len(self._keys)

    @property
    def item_count(self) -> int:
        return len(self._by_item)

    @property
    def deleted_count(self) -> int:
        return len(self._free)

    @property
    def deleted_ratio(self) -> float:
        """Share of the graph's slots that hold deleted vectors."""
        slots = len(self._keys) + len(self._free)
        return len(self._free) / slots if slots else 0.0

    @property
    def capacity(self) -> int:
        return self._index.get_max_elements()

    def item_ids(self) -> list[str]:
        return list(self._by_item)

    def keys(self) -> list[tuple[str, str]]:
        return list(self._labels)

    def entries(self) -> list[tuple[int, str, str]]:
        """Every live vector as (label, item_id, variant), in label order."""
        with self._lock.read():
            return sorted((lb, item, var) for lb, (item, var) in self._keys.items())

    def labels_without_variant(self, variant: str) -> list[int]:
        """The live labels of every stored vector except those of ``variant``."""
        with self._lock.read():
            return [lb for key, lb in self._labels.items() if key[1] != variant]

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._by_item

    # ---- writes -------------------------------------------------------------------------
    def add(
        self, keys: Sequence[tuple[str, str]], vectors: np.ndarray, *, threads: int = -1
    ) -> None:
        """Add or replace vectors by key (an existing key's vector is overwritten)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(keys) != len(vectors):
            raise ValueError(f"{len(keys)} keys for {len(vectors)} vectors")
        if not keys:
            return  # hnswlib refuses an empty batch
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate keys in one add")
        if not np.all(np.isfinite(vectors)):
            raise ValueError("vectors contain NaN or infinity")
        with self._lock.write():
            new = [k for k in keys if k not in self._labels]
            reuse = min(len(self._free), len(new))
            grow = len(new) - reuse
            need = self._next_label + grow
            if need > self.capacity:
                self._index.resize_index(max(need, int(self.capacity * 1.5)))
            labels = []
            for key in keys:
                if key in self._labels:
                    labels.append(self._labels[key])
                    continue
                if self._free:
                    label = self._free.pop()
                    self._index.unmark_deleted(label)
                else:
                    label = self._next_label
                    self._next_label += 1
                self._keys[label] = key
                self._labels[key] = label
                self._by_item.setdefault(key[0], set()).add(label)
                labels.append(label)
            self._index.add_items(vectors, np.asarray(labels, dtype=np.int64), num_threads=threads)
            self.generation += 1

    def delete_items(self, item_ids: Iterable[str]) -> int:
        """Remove every vector of these items; returns the number of vectors removed."""
        removed = 0
        with self._lock.write():
            for item_id in item_ids:
                for label in self._by_item.pop(item_id, ()):
                    key = self._keys.pop(label)
                    del self._labels[key]
                    self._index.mark_deleted(label)
                    self._free.append(label)
                    removed += 1
            self.generation += 1
        return removed

    def compacted(self, *, chunk: int = 20_000) -> VectorIndex:
        """A new graph holding only the live vectors (no deleted slots), with the same keys,
        metadata and companions; the vectors are copied, never re-encoded."""
        with self._lock.read():
            labels = list(self._keys)
            keys = [self._keys[lb] for lb in labels]
        out = VectorIndex(self.dim, self.params, capacity=len(labels) + 64, meta=self.meta)
        for start in range(0, len(labels), chunk):
            out.add(keys[start : start + chunk], self.vectors(labels[start : start + chunk]))
        out.companions = {name: c.compacted(chunk=chunk) for name, c in self.companions.items()}
        out.arrays = dict(self.arrays)
        out.lexical = None if self.lexical is None else self.lexical.copy()
        return out

    # ---- reads --------------------------------------------------------------------------
    def vectors(self, labels: Sequence[int]) -> np.ndarray:
        if not labels:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock.read():
            return np.asarray(
                self._index.get_items(list(labels), return_type="numpy"), dtype=np.float32
            )

    def item_vectors(self, item_id: str) -> tuple[list[str], np.ndarray]:
        labels = sorted(self._by_item.get(item_id, ()))
        return [self._keys[lb][1] for lb in labels], self.vectors(labels)

    def best_variants(
        self, item_ids: Iterable[str], query: np.ndarray
    ) -> dict[str, tuple[float, str]]:
        """Each item's exact similarity to ``query``: its best stored vector's inner product,
        with that vector's variant (ties: the first added). One read of all their vectors;
        items not in the index are left out."""
        labels: list[int] = []
        owners: list[str] = []
        for item in dict.fromkeys(item_ids):
            for label in sorted(self._by_item.get(item, ())):
                labels.append(label)
                owners.append(item)
        if not labels:
            return {}
        sims = (self.vectors(labels) @ np.asarray(query, dtype=np.float32).reshape(-1)).tolist()
        out: dict[str, tuple[float, str]] = {}
        for label, item, sim in zip(labels, owners, sims, strict=True):
            if item not in out or sim > out[item][0]:
                out[item] = (float(sim), self._keys[label][1])
        return out

    def label_items(self) -> tuple[np.ndarray, list[str]]:
        """(live labels, the item of each): what a filter maps onto labels."""
        with self._lock.read():
            labels = np.fromiter(self._keys, dtype=np.int64, count=len(self._keys))
            items = [key[0] for key in self._keys.values()]
        return labels, items

    def search(self, query: np.ndarray, k: int, *, allowed: np.ndarray | None = None) -> list[Hit]:
        """Nearest vectors (not grouped) to one query, best first; k is clamped to the live count.

        ``allowed`` (a boolean mask over labels, e.g. from a product filter) restricts the
        search to those labels, inside the search: when they are few
        (<= ``EXACT_FILTERED``) they are searched exactly, otherwise the graph search skips
        the others (hnswlib's filter) and keeps going until it has k allowed vectors."""
        q = (
            query
            if query.dtype == np.float32 and query.flags.c_contiguous
            else np.ascontiguousarray(query, np.float32)
        )
        q = q.reshape(1, self.dim)
        lock = self._lock
        lock.acquire_read()  # not a with-block: this is the hot path of every query
        try:
            if allowed is None:
                k = min(int(k), len(self._keys))
                if k <= 0:
                    return []
                try:
                    labels, dists = self._index.knn_query(q, k=k)
                except RuntimeError:
                    # hnswlib found fewer than k live vectors (many deletions): exact search
                    labels, dists = self._exact(q, k)
            else:
                labels, dists = self._filtered(q, int(k), allowed)
                if labels.size == 0:
                    return []
            keys = self._keys
            out = []
            for lb, dist in zip(labels[0].tolist(), dists[0].tolist(), strict=True):
                item, variant = keys[lb]
                out.append(Hit(item, 1.0 - dist, variant, lb))
            return out
        finally:
            lock.release_read()

    def _filtered(
        self, q: np.ndarray, k: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search restricted to the ``allowed`` labels (under the read lock), the cheapest
        way that stays complete:

        * few allowed vectors (<= ``EXACT_FILTERED``): exact search over them;
        * a filter that keeps a fair share: the plain graph search for enough more results
          (k / share, with slack), of which the allowed ones are kept, while that fills k;
        * otherwise hnswlib's filtered graph search, which asks the filter about every
          vector it visits (a Python call each: slower, but it finds k allowed ones)."""
        n = len(allowed)
        candidates = np.flatnonzero(allowed)
        keys = self._keys
        if 0 < len(candidates) and len(candidates) > EXACT_FILTERED:
            share = len(candidates) / max(1, len(keys))
            fetch = min(len(keys), int(k / share * 1.5) + 16)
            if fetch <= POST_FILTER_MAX:
                labels, dists = self._index.knn_query(q, k=fetch)
                kept = labels[0] < n
                kept[kept] = allowed[labels[0][kept]]
                if kept.sum() >= min(k, len(candidates)):
                    return labels[:, kept][:, :k], dists[:, kept][:, :k]
            try:
                return self._index.knn_query(  # type: ignore[no-any-return]
                    q, k=min(k, len(candidates)), filter=lambda lb: lb < n and bool(allowed[lb])
                )
            except RuntimeError:  # fewer than k allowed vectors reachable: search exactly
                pass
        live = candidates[
            np.fromiter((lb in keys for lb in candidates.tolist()), bool, len(candidates))
        ]
        return self._exact(q, min(k, len(live)), live)

    def search_items(
        self,
        query: np.ndarray,
        k: int,
        *,
        exclude: Iterable[str] = (),
        allowed: np.ndarray | None = None,
    ) -> list[Hit]:
        """The k best distinct items, each scored by its best variant (only ``allowed``
        labels, when given: see :meth:`search`)."""
        exclude = set(exclude)
        wanted = int(k)
        if wanted <= 0:
            return []
        total = len(self._keys) if allowed is None else int(np.count_nonzero(allowed))
        per_item = max(1, round(len(self._keys) / max(1, len(self._by_item))))
        fetch = wanted * per_item + len(exclude) + 8
        while True:
            hits = self.search(query, fetch, allowed=allowed)
            best: dict[str, Hit] = {}
            for h in hits:
                if h.item_id not in exclude and h.item_id not in best:
                    best[h.item_id] = h
            if len(best) >= wanted or len(hits) >= total or len(hits) < fetch:
                return list(best.values())[:wanted]
            fetch *= 2

    def _exact(
        self, q: np.ndarray, k: int, labels: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact search over ``labels`` (default: every live label)."""
        if labels is None:
            labels = np.fromiter(self._keys, dtype=np.int64)
        if len(labels) == 0 or k <= 0:
            return np.zeros((1, 0), np.int64), np.zeros((1, 0), np.float32)
        vecs = np.asarray(self._index.get_items(labels, return_type="numpy"), dtype=np.float32)
        sims = vecs @ q[0]
        top = np.argsort(-sims, kind="stable")[:k]
        return labels[top][None, :], (1.0 - sims[top])[None, :]

    # ---- persistence -------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write index and metadata into ``folder`` (created), flushed to disk."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, companion in self.companions.items():
            companion.save(folder / name)
        if self.arrays:
            tmp = folder / (ARRAYS_FILE + ".tmp")
            with tmp.open("wb") as f:
                np.savez(f, **self.arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, folder / ARRAYS_FILE)
        if self.lexical is not None:
            self.lexical.save(folder / LEXICAL_DIR)
        with self._lock.read():
            self._index.save_index(str(folder / INDEX_FILE))
            meta = {
                "format": FORMAT_VERSION,
                "dim": self.dim,
                "m": self.params.m,
                "ef_construction": self.params.ef_construction,
                "ef": self.params.ef,
                "next_label": self._next_label,
                "free": self._free,
                "keys": [[lb, item, var] for lb, (item, var) in self._keys.items()],
                "companions": sorted(self.companions),
                "arrays": sorted(self.arrays),
                "lexical": self.lexical is not None,
                **self.meta,
            }
        tmp = folder / (META_FILE + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            # json.dumps runs the C encoder; json.dump would iterate in Python (seconds at 100k items)
            f.write(json.dumps(meta, ensure_ascii=False))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / META_FILE)
        for name in (INDEX_FILE,):
            fd = os.open(folder / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    @classmethod
    def load(
        cls, folder: Path, *, expect: dict[str, Any] | None = None, ef: int | None = None
    ) -> VectorIndex:
        """Load an index folder; ``expect`` maps metadata keys to required values."""
        try:
            meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise IndexError_(f"no index at {folder}: run 'retrieval ingest' first") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise IndexError_(f"index metadata {folder / META_FILE} is unreadable: {exc}") from None
        if meta.get("format") != FORMAT_VERSION:
            raise IndexError_(
                f"index at {folder} has format {meta.get('format')}; this version reads {FORMAT_VERSION}"
            )
        for key, want in (expect or {}).items():
            if meta.get(key) != want:
                raise IndexMismatch(
                    f"index at {folder} was built with {key}={meta.get(key)!r} but the settings give {want!r}; "
                    "rebuild it with 'retrieval ingest'"
                )
        own = {
            "format",
            "dim",
            "m",
            "ef_construction",
            "ef",
            "next_label",
            "free",
            "keys",
            "companions",
            "arrays",
            "lexical",
        }
        params = IndexParams(
            m=meta["m"], ef_construction=meta["ef_construction"], ef=ef or meta["ef"]
        )
        raw = hnswlib.Index(space="ip", dim=int(meta["dim"]))
        try:
            raw.load_index(str(folder / INDEX_FILE), allow_replace_deleted=True)
        except (RuntimeError, OSError, MemoryError) as exc:
            raise IndexError_(f"index file {folder / INDEX_FILE} is unreadable: {exc}") from None
        self = cls(
            meta["dim"], params, meta={k: v for k, v in meta.items() if k not in own}, _loaded=raw
        )
        self._next_label = meta["next_label"]
        self._free = list(meta["free"])
        for label, item, variant in meta["keys"]:
            self._keys[label] = (item, variant)
            self._labels[(item, variant)] = label
            self._by_item.setdefault(item, set()).add(label)
        for name in meta.get("companions", []):
            self.companions[name] = cls.load(folder / name, ef=ef)
        if meta.get("arrays"):
            try:
                with np.load(folder / ARRAYS_FILE, allow_pickle=False) as saved:
                    self.arrays = {name: saved[name] for name in meta["arrays"]}
            except (OSError, ValueError, KeyError) as exc:
                raise IndexError_(
                    f"index arrays {folder / ARRAYS_FILE} are unreadable: {exc}; "
                    "rebuild them with 'retrieval reindex --full'"
                ) from None
        if meta.get("lexical"):
            try:
                self.lexical = LexicalIndex.load(folder / LEXICAL_DIR)
            except IndexMismatch as exc:
                # built by another tokeniser: the version still answers, by its vectors alone,
                # until a re-index rebuilds the lexical index
                log.warning("%s; searching without it", exc)
        if self._index.get_current_count() != self._next_label:
            raise IndexError_(
                f"index at {folder} is inconsistent with its metadata; rebuild it with 'retrieval ingest'"
            )
        return self
