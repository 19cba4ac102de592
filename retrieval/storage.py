"""Versioned index folders on disk, published atomically.

Layout under ``index_dir``::

    faq/CURRENT              -> the name of the live version (replaced atomically)
    faq/<version>/           index.hnsw + meta.json
    products/CURRENT
    products/<version>/

A new version is written into ``.tmp-<version>``, flushed, renamed into place, and only
then named in ``CURRENT``; a reader therefore sees the old or the new version, never a
half-written one. Leftover ``.tmp-*`` folders from a killed build are removed by the next build.
"""

from __future__ import annotations

import os
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path

from .errors import IndexError_
from .index import VectorIndex

__all__ = ["current_version", "load_current", "new_version_id", "publish", "version_dir"]

KINDS = ("faq", "products")


def new_version_id(kind: str) -> str:
    return f"{kind}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


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
    pointer_tmp = base / ".CURRENT.tmp"
    with pointer_tmp.open("w", encoding="utf-8") as fh:
        fh.write(version + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(pointer_tmp, base / "CURRENT")
    _fsync_dir(base)
    return final


def load_current(root: Path, kind: str, *, expect: dict, ef: int | None = None) -> VectorIndex:
    version = current_version(root, kind)
    if version is None:
        raise IndexError_(f"no {kind} index in {Path(root) / kind}: run 'retrieval ingest' first")
    return VectorIndex.load(version_dir(root, kind, version), expect=expect, ef=ef)
