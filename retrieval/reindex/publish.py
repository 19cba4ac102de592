"""The steps the FAQ and product jobs share: reading the current version they start from,
deciding whether it can be updated in place, and publishing the next one (compacting a graph
with too many deleted slots, recording the version in SQL, pruning old versions)."""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import Engine

from ..index import IndexParams, VectorIndex
from ..indexfolders import new_version_id
from ..indexstore import current_meta, draft_version, publish_version
from ..ingest import record_version
from ..settings import Settings
from .changes import KindReport

__all__ = ["finish", "incompatibility", "index_params", "read_meta"]

log = logging.getLogger(__name__)


def read_meta(settings: Settings, kind: str) -> tuple[str | None, dict[str, Any]]:
    return current_meta(settings, kind)


def incompatibility(meta: dict[str, Any], expect: dict, params: IndexParams) -> str | None:
    """Why the current version cannot be updated in place (None: it can)."""
    if not meta:
        return "no current version"
    for key, want in expect.items():
        if meta.get(key) != want:
            return f"{key} changed"
    if (meta.get("m"), meta.get("ef_construction")) != (params.m, params.ef_construction):
        return "HNSW build parameters changed"
    return None


def index_params(settings: Settings) -> IndexParams:
    return IndexParams(settings.hnsw_m, settings.hnsw_ef_construction, settings.hnsw_ef_search)


def finish(
    settings: Settings,
    engine: Engine | None,
    kind: str,
    index: VectorIndex,
    report: KindReport,
    key: str,
    created_by: str,
    t0: float,
) -> KindReport:
    # the text view of products can hold more deletions than the fused index (products
    # without an image live only there): the worst graph decides
    deleted = max([index.deleted_ratio, *(c.deleted_ratio for c in index.companions.values())])
    if report.mode != "full" and deleted > settings.compact_deleted_ratio:
        log.info("%s: %.0f%% of a graph's slots are deleted; compacting", kind, 100 * deleted)
        index = index.compacted()
        report.mode = "compacted"
    index.meta["build_key"] = key
    version = draft_version(index) or new_version_id(kind)
    log.info("%s: writing version %s", kind, version)
    removed = publish_version(settings, kind, version, index)
    report.version = version
    report.seconds = time.perf_counter() - t0
    if engine is not None:
        record_version(
            engine,
            kind,
            version,
            index,
            created_by,
            extra={
                "mode": report.mode,
                "reason": report.reason,
                "changes": {
                    "added": report.added,
                    "updated": report.updated,
                    "deleted": report.deleted,
                    "unchanged": report.unchanged,
                    "encoded": report.encoded,
                },
            },
        )
    if removed:
        log.info("%s: removed old versions %s", kind, ", ".join(removed))
    return report
