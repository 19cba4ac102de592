"""``retrieval reindex``: publish what changed in the FAQ bank and the catalog, re-encoding
only the entries whose content changed.

For each index kind the job compares the content hash of every source entry with the hashes
stored in the current version:

- nothing changed (same entries, same records, same build key): nothing is encoded and
  nothing is published;
- some entries changed: a copy of the current version is loaded, the vectors of changed and
  deleted entries are removed, only changed and new entries are encoded and added, and the
  result is published as a new version (``storage.publish``: temporary folder, rename,
  ``CURRENT`` pointer). Price or stock edits change the records but no vectors: published
  without encoding anything;
- the encoder, fusion weights or HNSW build parameters differ from the current version's, or
  there is no current version: a full rebuild, never a mixed index.

When deleted slots pass ``compact_deleted_ratio`` of the graph, it is rebuilt from the stored
vectors (no re-encoding). Only one index job runs at a time (``storage.exclusive``); old
versions beyond ``keep_versions`` are pruned after a publish. The running service notices the
new ``CURRENT`` and swaps it in (``retrieval/reloader.py``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from .build import (
    add_multilingual_products,
    build_faq_index,
    build_product_index,
    faq_centroids,
    faq_meta,
    faq_rows,
    product_lexical,
    product_lexical_rows,
    product_meta,
    product_multilingual_view,
    product_rows,
)
from .catalog import Catalog, Product, load_catalog
from .encoders import image_encoder, multilingual_encoder, text_encoder
from .encoders.base import Encoder
from .errors import SourceError
from .faq import FAQBank, load_faq
from .faq_calibration import calibrate_from_settings, clear_calibration, fit_out_of_scope_of
from .index import IndexParams, VectorIndex
from .indexformat import MULTILINGUAL, faq_expectations, product_expectations
from .ingest import build_key, record_version
from .labelled import read_pairs
from .lexical import DEFAULT_TOKENIZER
from .runtime import make_fusion
from .settings import Settings
from .storage import (
    current_version,
    exclusive,
    new_version_id,
    prune,
    publish,
    version_dir,
)

__all__ = ["Changes", "KindReport", "diff_items", "load_bank", "reindex"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Changes:
    added: list[str]
    updated: list[str]
    deleted: list[str]
    unchanged: int

    @property
    def any(self) -> bool:
        return bool(self.added or self.updated or self.deleted)


def diff_items(old: dict[str, str], new: dict[str, str]) -> Changes:
    """Compare id -> content hash maps: what to encode (added, updated) and remove (updated, deleted)."""
    added = sorted(k for k in new if k not in old)
    updated = sorted(k for k in new if k in old and old[k] != new[k])
    deleted = sorted(k for k in old if k not in new)
    return Changes(added, updated, deleted, len(new) - len(added) - len(updated))


@dataclass
class KindReport:
    kind: str
    mode: str  # "unchanged" | "incremental" | "full" | "compacted"
    reason: str
    added: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    encoded: int = 0  # entries (FAQ) or products whose vectors were computed
    version: str | None = None
    seconds: float = 0.0

    def line(self) -> str:
        what = (
            f"{self.added} added, {self.updated} updated, {self.deleted} deleted, "
            f"{self.unchanged} unchanged; {self.encoded} encoded"
        )
        published = f" -> {self.version}" if self.version else " (nothing published)"
        return (
            f"{self.kind}: {self.mode} ({self.reason}): {what}{published} in {self.seconds:.1f} s"
        )


@dataclass
class ReindexSummary:
    reports: list[KindReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def published(self) -> dict[str, str]:
        return {r.kind: r.version for r in self.reports if r.version}


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


def _read_meta(settings: Settings, kind: str) -> tuple[str | None, dict[str, Any]]:
    version = current_version(settings.index_dir, kind)
    if version is None:
        return None, {}
    try:
        path = version_dir(settings.index_dir, kind, version) / "meta.json"
        return version, json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return version, {}


def _incompatibility(meta: dict[str, Any], expect: dict, params: IndexParams) -> str | None:
    """Why the current version cannot be updated in place (None: it can)."""
    if not meta:
        return "no current version"
    for key, want in expect.items():
        if meta.get(key) != want:
            return f"{key} changed"
    if (meta.get("m"), meta.get("ef_construction")) != (params.m, params.ef_construction):
        return "HNSW build parameters changed"
    return None


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
    labelled = None
    if (
        bank is not None
        and settings.faq_calibration_path
        and settings.faq_calibration_path.exists()
    ):
        # an answer deleted since the file was written is no longer a label (re-index keeps going)
        labelled = read_pairs(settings.faq_calibration_path, None)
        labelled = [(q, {r for r in rel if r in bank.entries}) for q, rel in labelled]
    summary = ReindexSummary()
    with exclusive(settings.index_dir, wait=wait):
        if bank is not None:
            summary.reports.append(
                _reindex_faq(
                    settings,
                    engine,
                    bank,
                    labelled,
                    progress,
                    full,
                    created_by,
                    text or text_encoder(settings),
                    multilingual_encoder(settings),
                )
            )
        if catalog is not None:
            summary.reports.append(
                _reindex_products(
                    settings,
                    engine,
                    catalog,
                    progress,
                    full,
                    created_by,
                    text or text_encoder(settings),
                    image or image_encoder(settings),
                    multilingual_encoder(settings),
                )
            )
    summary.seconds = time.perf_counter() - t0
    return summary


def _params(settings: Settings) -> IndexParams:
    return IndexParams(settings.hnsw_m, settings.hnsw_ef_construction, settings.hnsw_ef_search)


def _finish(
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
    version = new_version_id(kind)
    log.info("%s: writing version %s", kind, version)
    publish(index, settings.index_dir, kind, version)
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
    removed = prune(settings.index_dir, kind, settings.keep_versions)
    if removed:
        log.info("%s: removed old versions %s", kind, ", ".join(removed))
    return report


def _reindex_faq(
    settings: Settings,
    engine: Engine | None,
    bank: FAQBank,
    labelled: list[tuple[str, set[str]]] | None,
    progress: bool,
    full: bool,
    created_by: str,
    text: Encoder,
    multilingual: Encoder | None = None,
) -> KindReport:
    t0 = time.perf_counter()
    params = _params(settings)
    hashes = {e.id: e.content_hash() for e in bank}
    ml_ids = (multilingual.id,) if multilingual is not None else ()
    key = build_key(settings, "faq", list(hashes.values()), text.id, *ml_ids)
    version, meta = _read_meta(settings, "faq")
    why_full = (
        "asked for a full rebuild"
        if full
        else _incompatibility(meta, faq_expectations(text, multilingual), params)
    )
    if why_full:
        log.info("faq: full rebuild (%s): encoding %d entries", why_full, len(bank))
        index = build_faq_index(bank, text, params, progress=progress, multilingual=multilingual)
        report = KindReport("faq", "full", why_full, added=len(bank), encoded=len(bank))
    else:
        changes = diff_items(meta.get("item_hashes", {}), hashes)
        records = [e.to_record() for e in bank]
        if not changes.any and meta.get("records") == records and meta.get("build_key") == key:
            return KindReport(
                "faq",
                "unchanged",
                f"same as {version}",
                unchanged=changes.unchanged,
                seconds=time.perf_counter() - t0,
            )
        index = VectorIndex.load(version_dir(settings.index_dir, "faq", version), ef=params.ef)
        index.delete_items(changes.updated + changes.deleted)
        todo = [bank.entries[i] for i in changes.added + changes.updated]
        log.info("faq: encoding %d changed or new entries", len(todo))
        keys, vectors = faq_rows(todo, text, progress=progress)
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
    if labelled:
        calibrate_from_settings(index, text, labelled, settings, multilingual)
    else:
        clear_calibration(index)
    fit_out_of_scope_of(index, text, labelled, max_entries=settings.answer_head_max_entries)
    return _finish(settings, engine, "faq", index, report, key, created_by, t0)


def _reindex_products(
    settings: Settings,
    engine: Engine | None,
    catalog: Catalog,
    progress: bool,
    full: bool,
    created_by: str,
    text: Encoder,
    image: Encoder,
    multilingual: Encoder | None = None,
) -> KindReport:
    t0 = time.perf_counter()
    params = _params(settings)
    hashes = {p.id: p.content_hash() for p in catalog}
    ml_ids = (multilingual.id,) if multilingual is not None else ()
    key = build_key(settings, "products", list(hashes.values()), text.id, image.id, *ml_ids)
    version, meta = _read_meta(settings, "products")
    records = [p.to_record() for p in catalog]
    changes = diff_items(meta.get("item_hashes", {}), hashes)
    # the build key covers encoders, fusion weights and HNSW parameters: checked before any
    # model is loaded, so a run with nothing to do stays fast
    if (
        not full
        and meta
        and not changes.any
        and meta.get("records") == records
        and meta.get("build_key") == key
        # a version from before the lexical index (or another tokeniser) gets one below
        and meta.get("lexical_tokenizer") == DEFAULT_TOKENIZER.spec
    ):
        return KindReport(
            "products",
            "unchanged",
            f"same as {version}",
            unchanged=changes.unchanged,
            seconds=time.perf_counter() - t0,
        )
    fusion = make_fusion(settings, text, image)
    expect = product_expectations(text, image, fusion)
    why_full = "asked for a full rebuild" if full else _incompatibility(meta, expect, params)
    limits = {
        "max_image_bytes": settings.max_image_bytes,
        "max_image_pixels": settings.max_image_pixels,
    }
    if why_full:
        log.info("products: full rebuild (%s): encoding %d products", why_full, len(catalog))
        index = build_product_index(
            catalog,
            text,
            image,
            fusion,
            params,
            progress=progress,
            multilingual=multilingual,
            **limits,
        )
        report = KindReport("products", "full", why_full, added=len(catalog), encoded=len(catalog))
        return _finish(settings, engine, "products", index, report, key, created_by, t0)
    index = VectorIndex.load(version_dir(settings.index_dir, "products", version), ef=params.ef)
    view = index.companions["text"]
    removed = changes.updated + changes.deleted
    index.delete_items(removed)
    view.delete_items(removed)
    todo = [catalog.products[i] for i in changes.added + changes.updated]
    log.info("products: encoding %d changed or new products", len(todo))
    rows = product_rows(
        todo, text, image, fusion, source=catalog.source or "catalog", progress=progress, **limits
    )
    if rows.keys:
        index.add(rows.keys, rows.fused)
    if rows.text_keys:
        view.add(rows.text_keys, rows.text)
    _update_multilingual_view(index, list(catalog), todo, removed, multilingual, params, progress)
    _update_lexical(index, list(catalog), todo, removed)
    index.meta.update(product_meta(catalog))
    report = KindReport(
        "products",
        "incremental",
        f"changes since {version}",
        len(changes.added),
        len(changes.updated),
        len(changes.deleted),
        changes.unchanged,
        len(todo),
    )
    return _finish(settings, engine, "products", index, report, key, created_by, t0)


def _update_lexical(
    index: VectorIndex, products: list[Product], todo: list[Product], removed: list[str]
) -> None:
    """Keep the products' lexical index in step: the rows of changed and new products
    replaced, those of deleted ones removed (tokenising only the changed ones); built whole
    when the version has none (made before it, or by another tokeniser)."""
    if index.lexical is None or index.meta.get("lexical_tokenizer") != DEFAULT_TOKENIZER.spec:
        log.info("products: building the lexical index of %d products", len(products))
        index.lexical = product_lexical(products)
    else:
        index.lexical.update(product_lexical_rows(todo), remove=removed)
    index.meta["lexical_tokenizer"] = DEFAULT_TOKENIZER.spec


def _update_multilingual_view(
    index: VectorIndex,
    products: list[Product],
    todo: list[Product],
    removed: list[str],
    encoder: Encoder | None,
    params: IndexParams,
    progress: bool,
) -> None:
    """Keep the products' multilingual view in step: updated in place when it was built with
    this encoder, built whole when it is missing or from another encoder, dropped when no
    multilingual encoder is configured."""
    view = index.companions.get(MULTILINGUAL)
    if encoder is None:
        index.companions.pop(MULTILINGUAL, None)
    elif view is None or view.meta.get("text_encoder") != encoder.id:
        log.info("products: encoding %d products for the multilingual view", len(products))
        index.companions[MULTILINGUAL] = product_multilingual_view(
            products, encoder, params, progress=progress
        )
    else:
        view.delete_items(removed)
        add_multilingual_products(view, todo, encoder, progress=progress)


def parse_every(text: str) -> float:
    """'90s', '15m', '2h' or a number of seconds -> seconds (at least 1)."""
    units = {"s": 1, "m": 60, "h": 3600}
    raw = text.strip().lower()
    try:
        seconds = float(raw[:-1]) * units[raw[-1]] if raw and raw[-1] in units else float(raw)
    except ValueError:
        raise ValueError(f"'{text}' is not a duration: use e.g. 90s, 15m or 2h") from None
    if seconds < 1:
        raise ValueError(f"'{text}' is shorter than one second")
    return seconds


def describe_versions(settings: Settings, engine: Engine | None) -> list[dict[str, Any]]:
    """Every version on disk, newest first, with what SQL knows about it."""
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.orm import Session

    from .storage import list_versions
    from .store.models import IndexVersionRow

    rows: dict[str, IndexVersionRow] = {}
    if engine is not None:
        try:
            with Session(engine) as s:
                rows = {r.id: r for r in s.scalars(select(IndexVersionRow))}
                for r in rows.values():
                    s.expunge(r)
        except SQLAlchemyError as exc:
            log.warning(
                "could not read index versions from the database: %s", str(exc).splitlines()[0]
            )
    out = []
    for kind in ("faq", "products"):
        current = current_version(settings.index_dir, kind)
        for v in reversed(list_versions(settings.index_dir, kind)):
            row = rows.get(v)
            params = (row.params or {}) if row else {}
            out.append(
                {
                    "version": v,
                    "kind": kind,
                    "current": v == current,
                    "created_at": row.created_at.isoformat() if row else None,
                    "created_by": row.created_by if row else None,
                    "items": row.n_items if row else None,
                    "mode": params.get("mode"),
                    "changes": params.get("changes"),
                    "source_hash": row.source_hash if row else None,
                }
            )
    return out


def rollback(
    settings: Settings,
    version: str,
    *,
    wait: bool = False,
    text: Encoder | None = None,
    image: Encoder | None = None,
) -> str:
    """Make an earlier version current again (after checking it fits the configured encoders)."""
    from .errors import NotFound
    from .storage import list_versions, set_current

    kind = (
        "products"
        if version.startswith("products-")
        else "faq"
        if version.startswith("faq-")
        else None
    )
    if kind is None or version not in list_versions(settings.index_dir, kind):
        known = list_versions(settings.index_dir, "faq") + list_versions(
            settings.index_dir, "products"
        )
        raise NotFound(
            f"no index version '{version}' on disk; `retrieval versions` lists them"
            + (f" (e.g. {known[-1]})" if known else "")
        )
    text = text or text_encoder(settings)
    if kind == "faq":
        expect = faq_expectations(text)
    else:
        image = image or image_encoder(settings)
        expect = product_expectations(text, image, make_fusion(settings, text, image))
    VectorIndex.load(
        version_dir(settings.index_dir, kind, version), expect=expect
    )  # refuses a misfit
    with exclusive(settings.index_dir, wait=wait):
        previous = current_version(settings.index_dir, kind)
        set_current(settings.index_dir, kind, version)
    log.info("%s: current version is now %s (was %s)", kind, version, previous)
    return kind
