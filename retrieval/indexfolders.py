"""Versioned index folders on disk, published atomically.

Layout under ``index_dir``::

    faq/CURRENT              -> the name of the live version (replaced atomically)
    faq/<version>/           index.hnsw + meta.json
    products/CURRENT
    products/<version>/      the same, its companion views (text/, multilingual/) and
                             lexical/ (the BM25 index, retrieval/lexical/)

A new version is written into ``.tmp-<version>``, flushed, renamed into place, and only
then named in ``CURRENT``; a reader therefore sees the old or the new version, never a
half-written one. Leftover ``.tmp-*`` folders from a killed build are removed by the next build,
old versions beyond the retention count by :func:`prune`. One writer at a time holds
:func:`exclusive`.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from .errors import Busy, IndexError_
from .index import VectorIndex

__all__ = [
    "current_version",
    "exclusive",
    "list_versions",
    "load_current",
    "new_version_id",
    "prune",
    "publish",
    "set_current",
    "version_dir",
]

KINDS = ("faq", "products")


def new_version_id(kind: str) -> str:
    # microseconds: ids sort in publication order (list_versions, prune rely on it)
    return f"{kind}-{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{secrets.token_hex(3)}"


def version_dir(root: Path, kind: str, version: str) -> Path:
    return Path(root) / kind / version


def current_version(root: Path, kind: str) -> str | None:
    pointer = Path(root) / kind / "CURRENT"
    try:
        version = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return version or None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(index: VectorIndex, root: Path, kind: str, version: str) -> Path:
    """Write ``index`` as ``version`` of ``kind`` and make it the current one."""
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}")
    base = Path(root) / kind
    base.mkdir(parents=True, exist_ok=True)
    for stale in base.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = base / f".tmp-{version}"
    index.meta["version"] = version
    index.save(tmp)
    final = base / version
    os.replace(tmp, final)
    _fsync_dir(base)
    set_current(root, kind, version)
    return final


def set_current(root: Path, kind: str, version: str) -> None:
    """Point ``CURRENT`` at an existing version (publish, rollback): one atomic rename."""
    base = Path(root) / kind
    if not (base / version).is_dir():
        raise IndexError_(f"no {kind} version '{version}' in {base}")
    pointer_tmp = base / ".CURRENT.tmp"
    with pointer_tmp.open("w", encoding="utf-8") as fh:
        fh.write(version + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(pointer_tmp, base / "CURRENT")
    _fsync_dir(base)


def list_versions(root: Path, kind: str) -> list[str]:
    """Published versions of ``kind`` on disk, oldest first (ids start with their UTC time)."""
    base = Path(root) / kind
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and p.name.startswith(f"{kind}-"))


def prune(root: Path, kind: str, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` versions (never the current one) and any leftover
    temporary folders; returns the versions deleted."""
    base = Path(root) / kind
    for stale in base.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    current = current_version(root, kind)
    versions = list_versions(root, kind)
    doomed = [v for v in versions[: max(0, len(versions) - keep)] if v != current]
    for v in doomed:
        shutil.rmtree(base / v, ignore_errors=True)
    return doomed


@contextmanager
def exclusive(root: Path, *, wait: bool = False) -> Iterator[None]:
    """Hold the index directory's writer lock (one ingest / re-index / rollback at a time).

    Without ``wait`` a second writer fails at once with a message naming the holder. The
    lock is an OS file lock, so a killed writer never leaves it held."""
    Path(root).mkdir(parents=True, exist_ok=True)
    path = Path(root) / ".writer.lock"
    fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - closed below
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise Busy(
                f"another index job is running ({holder}); wait for it to finish or use --wait"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
        fh.flush()
        yield
    finally:
        fh.close()


def load_current(root: Path, kind: str, *, expect: dict, ef: int | None = None) -> VectorIndex:
    version = current_version(root, kind)
    if version is None:
        raise IndexError_(f"no {kind} index in {Path(root) / kind}: run 'retrieval ingest' first")
    return VectorIndex.load(version_dir(root, kind, version), expect=expect, ef=ef)
