"""Re-indexing the FAQ bank: the bank with the drafts agents approved (``load_bank``), and the
job that updates the FAQ index in place or rebuilds it, then refits its calibration and
out-of-scope head (``reindex_faq``)."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from sqlalchemy import Engine

from ..build import build_faq_index, faq_centroids, faq_meta, faq_rows
from ..encoders.base import Encoder
from ..errors import SourceError
from ..faq import FAQBank, FAQEntry, load_faq
from ..faq_calibration import calibrate_with_labels
from ..indexformat import MULTILINGUAL, faq_expectations
from ..indexstore import load_built
from ..ingest import build_key
from ..settings import Settings
from ..shop_labels import ShopLabels
from .changes import KindReport, diff_items
from .publish import finish, incompatibility, index_params, read_meta

__all__ = ["load_bank", "reindex_faq"]

log = logging.getLogger(__name__)

STEP_ENTRIES = 8  # entries encoded per progress step at least (a step is a tenth of the work)


def load_bank(settings: Settings) -> FAQBank:
    """The FAQ bank plus the draft entries agents approved (``faq_drafts_path``), if any.

    A draft whose id is already in the bank is skipped with a warning: the bank is the
    operators' source of truth."""
    bank = load_faq(settings.faq_path)
    drafts_path = settings.resolved_faq_drafts_path
    if drafts_path.exists() and drafts_path.stat().st_size > 0:
        try:
            drafts = load_faq(drafts_path)
        except SourceError as exc:
            if "holds no entries" in str(exc):
                return bank
            raise
        for entry in drafts:
            if entry.id in bank.entries:
                log.warning("draft FAQ entry '%s' has the id of a bank entry; skipped", entry.id)
                continue
            bank.entries[entry.id] = entry
    return bank


def _encode_rows(
    entries: list[FAQEntry], text: Encoder, progress: bool
) -> tuple[list[tuple[str, str]], np.ndarray]:
    """``faq_rows`` of the entries to encode. Without a progress bar (no terminal: cron, a
    service manager running ``reindex --every``) the log reports the progress, in steps of a
    tenth of the entries (at least ``STEP_ENTRIES``)."""
    step = max(STEP_ENTRIES, -(-len(entries) // 10))
    if progress or len(entries) <= step:
        return faq_rows(entries, text, progress=progress)
    keys: list[tuple[str, str]] = []
    parts = []
    for start in range(0, len(entries), step):
        part_keys, part = faq_rows(entries[start : start + step], text)
        keys += part_keys
        parts.append(part)
        done = min(start + step, len(entries))
        log.info("faq: encoded %d of %d entries", done, len(entries))
    return keys, np.concatenate(parts)


def reindex_faq(
    settings: Settings,
    engine: Engine | None,
    bank: FAQBank,
    labels: ShopLabels | None,
    progress: bool,
    full: bool,
    created_by: str,
    text: Encoder,
    multilingual: Encoder | None = None,
) -> KindReport:
    t0 = time.perf_counter()
    params = index_params(settings)
    hashes = {e.id: e.content_hash() for e in bank}
    ml_ids = (multilingual.id,) if multilingual is not None else ()
    labels = labels or ShopLabels()
    key = build_key(settings, "faq", list(hashes.values()), text.id, *ml_ids, labels=labels.digest)
    version, meta = read_meta(settings, "faq")
    why_full = (
        "asked for a full rebuild"
        if full
        else incompatibility(meta, faq_expectations(text, multilingual), params)
    )
    if why_full:
        log.info("faq: full rebuild (%s): encoding %d entries", why_full, len(bank))
        index = build_faq_index(bank, text, params, progress=progress, multilingual=multilingual)
        report = KindReport("faq", "full", why_full, added=len(bank), encoded=len(bank))
    else:
        changes = diff_items(meta.get("item_hashes", {}), hashes)
        records = [e.to_record() for e in bank]
        if not changes.any and _same_records(meta, records) and meta.get("build_key") == key:
            return KindReport(
                "faq",
                "unchanged",
                f"same as {version}",
                unchanged=changes.unchanged,
                seconds=time.perf_counter() - t0,
            )
        index = load_built(settings, "faq", version, ef=params.ef)
        index.delete_items(changes.updated + changes.deleted)
        todo = [bank.entries[i] for i in changes.added + changes.updated]
        log.info("faq: encoding %d changed or new entries", len(todo))
        keys, vectors = _encode_rows(todo, text, progress)
        if keys:
            index.add(keys, vectors)
        companion = index.companions.get(MULTILINGUAL)
        if multilingual is None:
            index.companions.pop(MULTILINGUAL, None)
            index.meta.pop("multilingual_encoder", None)
        elif companion is not None:
            companion.delete_items(changes.updated + changes.deleted)
            ml_keys, ml_vectors = faq_centroids(todo, multilingual, progress=progress)
            if ml_keys:
                companion.add(ml_keys, ml_vectors)
        index.meta.update(faq_meta(bank))
        report = KindReport(
            "faq",
            "incremental",
            f"changes since {version}",
            len(changes.added),
            len(changes.updated),
            len(changes.deleted),
            changes.unchanged,
            len(todo),
        )
    calibrate_with_labels(index, text, labels, settings, multilingual)
    return finish(settings, engine, "faq", index, report, key, created_by, t0)


def _same_records(meta: dict[str, Any], records: list[dict[str, Any]]) -> bool:
    """Whether the version holds these records: in its metadata, or (records kept as rows
    in a vector store) their content's digest."""
    if "records" in meta:
        return bool(meta["records"] == records)
    from ..vectorstore.pgrecords import record_digest

    return meta.get("record_digest") == record_digest(records)
