"""Where the index versions of these settings live: files under ``data_dir/index`` searched
in this process (``vector_store = hnswlib``, the default), or a PostgreSQL database with
pgvector that every service replica searches (``pgvector``, docs/scale-out.md).

Every reader and writer of versions goes through here: the service and its reloader
(:func:`current_version`, :func:`load_index`), ingest and re-index (:func:`current_meta`,
:func:`load_built`, :func:`publish_version`), rollback (:func:`list_versions`,
:func:`set_current`), so both backends publish, switch and load versions the same way.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from . import indexfolders
from .index import VectorIndex

if TYPE_CHECKING:
    from .settings import Settings
    from .vectorstore.pgvector import PgvectorStore

__all__ = [
    "close_store",
    "current_meta",
    "current_version",
    "discard",
    "draft_version",
    "exclusive",
    "list_versions",
    "load_built",
    "load_index",
    "pg_store",
    "publish_version",
    "set_current",
]

_stores: dict[str, PgvectorStore] = {}
_lock = threading.Lock()


def _pg(settings: Settings) -> bool:
    return settings.vector_store == "pgvector"


def pg_store(settings: Settings) -> PgvectorStore:
    """The process's pgvector store for the settings' URL (one connection pool per URL)."""
    from .vectorstore.pgvector import PgvectorStore

    url = settings.vector_store_url or ""
    with _lock:
        store = _stores.get(url)
    if store is not None:
        return store
    fresh = PgvectorStore(url, ef=settings.hnsw_ef_search)  # connects: not under the lock
    with _lock:
        store = _stores.setdefault(url, fresh)
    if store is not fresh:
        fresh.close()  # another thread made one first
    return store


def close_store(url: str) -> None:
    """Close the process's pool for ``url`` (before its server goes away)."""
    with _lock:
        store = _stores.pop(url, None)
    if store is not None:
        store.close()


@contextmanager
def exclusive(settings: Settings, *, wait: bool = False) -> Iterator[None]:
    """Hold the index writer lock: the index folder's file lock (one job per machine) and,
    on pgvector, the store's advisory lock (one job per store, from any machine)."""
    with indexfolders.exclusive(settings.index_dir, wait=wait):
        if _pg(settings):
            with pg_store(settings).writer_lock(wait=wait):
                yield
        else:
            yield


def current_version(settings: Settings, kind: str) -> str | None:
    if _pg(settings):
        return pg_store(settings).current(kind)
    return indexfolders.current_version(settings.index_dir, kind)


def current_meta(settings: Settings, kind: str) -> tuple[str | None, dict[str, Any]]:
    """The current version of ``kind`` and its metadata ({} when there is none or it is
    unreadable): what ingest and re-index compare the sources with."""
    if _pg(settings):
        store = pg_store(settings)
        version = store.current(kind)
        return (version, dict(store.open(kind).meta)) if version is not None else (None, {})
    version = indexfolders.current_version(settings.index_dir, kind)
    if version is None:
        return None, {}
    try:
        path = indexfolders.version_dir(settings.index_dir, kind, version) / "meta.json"
        return version, json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return version, {}


def load_index(
    settings: Settings,
    kind: str,
    *,
    expect: dict[str, Any],
    ef: int | None = None,
    version: str | None = None,
) -> VectorIndex:
    """The current version of ``kind`` (or ``version``) for the query path, checked against
    ``expect``. On
    pgvector it is a :class:`~retrieval.vectorstore.pgindex.PgIndex`: the read side of
    ``VectorIndex``, its searches run in the database (typed as ``VectorIndex`` for the
    query path, which only reads)."""
    if _pg(settings):
        from .vectorstore.pgindex import open_index

        store = pg_store(settings)
        return cast(VectorIndex, open_index(store, kind, version=version, expect=expect, ef=ef))
    if version is not None:
        folder = indexfolders.version_dir(settings.index_dir, kind, version)
        return VectorIndex.load(folder, expect=expect, ef=ef)
    return indexfolders.load_current(settings.index_dir, kind, expect=expect, ef=ef)


def load_built(
    settings: Settings, kind: str, version: str, ef: int | None = None, *, draft: bool = False
) -> VectorIndex:
    """A published version as a writable in-process index, for a re-index to change and
    publish as the next version (on pgvector: rebuilt here from the stored vectors).

    ``draft``: on pgvector, the next version is made in the database instead, as a copy of
    this one (:class:`~retrieval.vectorstore.pgdraft.PgDraft`: deletes and adds go to SQL,
    no vector is read into this process); publish it with :func:`publish_version`, or drop
    it with :func:`discard` when the job fails. Its callers use only ``add``,
    ``delete_items``, ``meta``, ``lexical``, ``arrays`` and ``companions`` (typed as
    ``VectorIndex`` for them). On hnswlib the flag changes nothing."""
    if _pg(settings):
        from .vectorstore.pgindex import open_index

        if draft:
            from .vectorstore.pgdraft import start_draft

            return cast(VectorIndex, start_draft(pg_store(settings), kind, version, ef=ef))
        stored = open_index(pg_store(settings), kind, version=version, ef=ef)
        return _writable(stored)
    return VectorIndex.load(indexfolders.version_dir(settings.index_dir, kind, version), ef=ef)


def _writable(stored: Any) -> VectorIndex:
    labels, _ = stored.label_items()
    index = VectorIndex(stored.dim, stored.params, capacity=len(labels), meta=dict(stored.meta))
    chunk = 20_000
    for start in range(0, len(labels), chunk):
        part = labels[start : start + chunk].tolist()
        vectors = stored.vectors(part)
        keys = stored.keys_of(part)
        index.add(keys, vectors)
    index.arrays = dict(stored.arrays)
    index.lexical = stored.lexical
    for name, view in stored.companions.items():
        index.companions[name] = _writable(view)
    return index


def publish_version(settings: Settings, kind: str, version: str, index: VectorIndex) -> list[str]:
    """Publish ``index`` as ``version`` of ``kind`` (readers switch atomically) and prune
    versions beyond ``keep_versions``; returns the versions pruned. The caller holds
    :func:`exclusive`."""
    if _pg(settings):
        from .vectorstore.pgdraft import PgDraft, publish_draft
        from .vectorstore.pgpublish import publish_index

        store = pg_store(settings)
        if isinstance(index, PgDraft):
            if index.version != version:
                raise ValueError(f"draft {index.version} cannot be published as {version}")
            publish_draft(store, kind, index)
        else:
            publish_index(store, kind, version, index)
        return store.prune(kind, settings.keep_versions)
    indexfolders.publish(index, settings.index_dir, kind, version)
    return indexfolders.prune(settings.index_dir, kind, settings.keep_versions)


def draft_version(index: VectorIndex) -> str | None:
    """The version id a draft (``load_built(draft=True)``) will be published as; None for an
    in-process index, which gets its id when it is published."""
    from .vectorstore.pgdraft import PgDraft

    return index.version if isinstance(index, PgDraft) else None


def discard(settings: Settings, kind: str, index: VectorIndex) -> None:
    """Drop what a failed job left unpublished: a draft's tables (nothing for an in-process
    index)."""
    from .vectorstore.pgdraft import PgDraft, discard_draft

    if isinstance(index, PgDraft):
        discard_draft(pg_store(settings), kind, index)


def list_versions(settings: Settings, kind: str) -> list[str]:
    if _pg(settings):
        return pg_store(settings).versions(kind)
    return indexfolders.list_versions(settings.index_dir, kind)


def set_current(settings: Settings, kind: str, version: str) -> None:
    if _pg(settings):
        pg_store(settings).set_current(kind, version)
    else:
        indexfolders.set_current(settings.index_dir, kind, version)
