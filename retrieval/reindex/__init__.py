"""``retrieval reindex``: publish what changed in the FAQ bank and the catalog, re-encoding
only the entries whose content changed.

For each index kind the job compares the content hash of every source entry with the hashes
stored in the current version:

- nothing changed (same entries, same records, same build key): nothing is encoded and
  nothing is published;
- some entries changed: a copy of the current version is loaded, the vectors of changed and
  deleted entries are removed, only changed and new entries are encoded and added, and the
  result is published as a new version (``indexfolders.publish``: temporary folder, rename,
  ``CURRENT`` pointer). Price or stock edits change the records but no vectors: published
  without encoding anything;
- the encoder, fusion weights or HNSW build parameters differ from the current version's, or
  there is no current version: a full rebuild, never a mixed index.

When deleted slots pass ``compact_deleted_ratio`` of the graph, it is rebuilt from the stored
vectors (no re-encoding). Only one index job runs at a time (``indexfolders.exclusive``); old
versions beyond ``keep_versions`` are pruned after a publish. The running service notices the
new ``CURRENT`` and swaps it in (``retrieval/reloader.py``).

Modules: ``changes`` (the content-hash diff and the run's reports), ``publish`` (the current
version a job starts from, and publishing the next), ``faq`` and ``products`` (the two jobs),
``versions`` (listing versions, rollback), ``cli`` (the ``reindex``, ``versions`` and
``rollback`` commands). This module holds ``reindex``, which runs the jobs under one lock.
"""

from __future__ import annotations

import time

from sqlalchemy import Engine

from ..catalog import load_catalog
from ..encoders import bulk_image_encoder, bulk_multilingual_encoder, bulk_text_encoder
from ..encoders.base import Encoder
from ..indexstore import exclusive
from ..settings import Settings
from ..shop_labels import shop_labels
from .changes import ReindexSummary
from .faq import load_bank, reindex_faq
from .products import reindex_products

__all__ = ["reindex"]


def reindex(
    settings: Settings,
    engine: Engine | None = None,
    *,
    kinds: tuple[str, ...] = ("faq", "products"),
    progress: bool = False,
    full: bool = False,
    wait: bool = False,
    created_by: str = "retrieval reindex",
    text: Encoder | None = None,
    image: Encoder | None = None,
) -> ReindexSummary:
    """Bring the published indexes up to date with the sources; see the module docstring.

    ``text`` and ``image`` default to the configured encoders (loaded only if needed)."""
    t0 = time.perf_counter()
    # validate every source before taking the lock or loading a model
    bank = load_bank(settings) if "faq" in kinds else None
    catalog = load_catalog(settings.catalog_path) if "products" in kinds else None
    # the calibration file's and the agents' labels; an answer deleted since the file was
    # written is dropped from its question (re-index keeps going)
    labels = shop_labels(settings, engine, bank.entries) if bank is not None else None
    summary = ReindexSummary()
    with exclusive(settings, wait=wait):
        if bank is not None:
            summary.reports.append(
                reindex_faq(
                    settings,
                    engine,
                    bank,
                    labels,
                    progress,
                    full,
                    created_by,
                    bulk_text_encoder(settings, text),
                    bulk_multilingual_encoder(settings),
                )
            )
        if catalog is not None:
            summary.reports.append(
                reindex_products(
                    settings,
                    engine,
                    catalog,
                    progress,
                    full,
                    created_by,
                    bulk_text_encoder(settings, text),
                    bulk_image_encoder(settings, image),
                    bulk_multilingual_encoder(settings),
                )
            )
    summary.seconds = time.perf_counter() - t0
    return summary
