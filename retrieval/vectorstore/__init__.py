"""Vector stores: one contract (``base``), an embedded backend (``hnsw``: hnswlib, the
default) and a scale-out backend (``pgvector``: PostgreSQL with pgvector). See
docs/scale-out.md for why pgvector and how a large shop runs it."""

from __future__ import annotations

from pathlib import Path

from .base import KINDS, Collection, Record, StoreHit, VectorStore, passes

__all__ = [
    "BACKENDS",
    "KINDS",
    "Collection",
    "Record",
    "StoreHit",
    "VectorStore",
    "open_store",
    "passes",
]

BACKENDS = ("hnswlib", "pgvector")


def open_store(backend: str, *, index_dir: Path, url: str | None = None) -> VectorStore:
    """The store the settings name: ``hnswlib`` under ``index_dir``, or ``pgvector`` at ``url``."""
    if backend == "hnswlib":
        from .hnsw import HnswStore

        return HnswStore(index_dir)
    if backend == "pgvector":
        from ..errors import ConfigError

        if not url:
            raise ConfigError(
                "vector_store = pgvector needs vector_store_url (or RETRIEVAL_VECTOR_STORE_URL): "
                "a PostgreSQL URL whose database has the pgvector extension"
            )
        from .pgvector import PgvectorStore

        return PgvectorStore(url)
    from ..errors import ConfigError

    raise ConfigError(f"unknown vector_store {backend!r}; choose one of {', '.join(BACKENDS)}")
