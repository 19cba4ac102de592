"""``retrieval ingest``: validate the sources, build both indexes, calibrate, publish, record."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from .build import build_faq_index, build_product_index
from .catalog import Catalog, load_catalog
from .encoders import (
    bulk_image_encoder,
    bulk_multilingual_encoder,
    bulk_text_encoder,
    image_encoder,
    multilingual_encoder,
)
from .encoders.base import Encoder
from .faq import FAQBank, load_faq
from .faq_calibration import as_shop_labels, calibrate_with_labels
from .index import IndexParams, VectorIndex
from .indexfolders import new_version_id
from .indexformat import FAQ_FIT, PRODUCT_LAYOUT
from .indexstore import current_meta, exclusive, publish_version
from .runtime import make_fusion
from .settings import Settings
from .shop_labels import ShopLabels, shop_labels
from .store.models import IndexVersionRow

__all__ = [
    "IngestSummary",
    "build_faq_version",
    "build_key",
    "build_product_version",
    "ingest",
    "publish_built",
    "record_version",
]

log = logging.getLogger(__name__)


@dataclass
class IngestSummary:
    versions: dict[str, str] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


def records_digest(catalog: Catalog) -> str:
    """A digest of every product's record as served (not only what is encoded), so a
    version whose prices or stock changed is not taken for the current one."""
    rows = sorted(json.dumps(p.to_record(), sort_keys=True, default=str) for p in catalog)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


def build_key(
    settings: Settings,
    kind: str,
    item_hashes: list[str],
    *encoder_ids: str,
    labels: str = "",
    records: str = "",
) -> str:
    """Everything a built index depends on; equal keys mean rebuilding would change nothing.
    ``labels`` is the digest of the agents' labels (:class:`retrieval.shop_labels.ShopLabels`);
    ``records`` the digest of the catalog's records (:func:`records_digest`: prices, stock,
    brands, sizes ... that change what is served without changing a vector)."""
    parts: list[Any] = [
        kind,
        sorted(item_hashes),
        list(encoder_ids),
        settings.hnsw_m,
        settings.hnsw_ef_construction,
    ]
    if (
        kind == "faq"
        and settings.faq_calibration_path is not None
        and settings.faq_calibration_path.exists()
    ):
        parts.append(hashlib.sha256(settings.faq_calibration_path.read_bytes()).hexdigest())
        parts += [settings.answer_head, settings.answer_head_max_entries]
    if kind == "faq":
        parts.append(FAQ_FIT)
    if kind == "faq" and labels:
        parts += [labels, settings.agent_label_weight]
    if kind == "products":
        parts += [settings.image_weight, settings.text_weight, PRODUCT_LAYOUT]
        if records:
            parts.append(records)
        projection = settings.effective_image_projection
        if projection is not None and projection.exists():
            parts.append(hashlib.sha256(projection.read_bytes()).hexdigest())
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def ingest(
    settings: Settings,
    engine: Engine | None = None,
    *,
    kinds: tuple[str, ...] = ("faq", "products"),
    progress: bool = False,
    created_by: str = "retrieval ingest",
    if_changed: bool = False,
) -> IngestSummary:
    """Build and publish new index versions from the configured sources.

    With ``if_changed``, a kind whose sources, encoders and parameters match the current
    version is skipped (no encoding, nothing published).
    """
    t0 = time.perf_counter()
    # validate every source before any model work, so a bad row fails in a second
    bank = load_faq(settings.faq_path) if "faq" in kinds else None
    catalog = load_catalog(settings.catalog_path) if "products" in kinds else None
    labels = shop_labels(settings, engine, bank.entries, strict=True) if bank is not None else None

    text = bulk_text_encoder(settings)  # several processes when encode_workers > 1
    summary = IngestSummary()
    keys = {}
    ml = multilingual_encoder(settings)
    ml_ids = (ml.id,) if ml is not None else ()
    if bank is not None:
        keys["faq"] = build_key(
            settings,
            "faq",
            [e.content_hash() for e in bank],
            text.id,
            *ml_ids,
            labels=labels.digest if labels is not None else "",
        )
    if catalog is not None:
        keys["products"] = build_key(
            settings,
            "products",
            [p.content_hash() for p in catalog],
            text.id,
            image_encoder(settings).id,
            *ml_ids,
            records=records_digest(catalog),
        )
    if if_changed:
        for kind, key in keys.items():
            if current_meta(settings, kind)[1].get("build_key") == key:
                summary.skipped.append(kind)
        bank = None if "faq" in summary.skipped else bank
        catalog = None if "products" in summary.skipped else catalog
    built: list[tuple[str, VectorIndex]] = []
    if bank is not None:
        built.append(("faq", build_faq_version(settings, bank, labels, text, progress=progress)))
        summary.calibration = built[-1][1].meta.get("calibration")
    if catalog is not None:
        built.append(
            ("products", build_product_version(settings, catalog, text, progress=progress))
        )
    for kind, index in built:
        index.meta["build_key"] = keys[kind]
        version = publish_built(settings, kind, index)
        summary.versions[kind] = version
        summary.counts[kind] = {"items": item_count(index), "vectors": len(index)}
        if engine is not None:
            record_version(engine, kind, version, index, created_by, extra={"mode": "full"})
    summary.seconds = time.perf_counter() - t0
    return summary


def build_faq_version(
    settings: Settings,
    bank: FAQBank,
    labels: ShopLabels | list[tuple[str, set[str]]] | None,
    text: Encoder,
    *,
    progress: bool = False,
) -> VectorIndex:
    """An FAQ index version as ingest builds it: the phrasings' vectors, the multilingual
    companion when configured, and threshold, answer head and hand-off signal fitted on the
    labelled questions (a plain list: all taken as the operators' labels)."""
    params = IndexParams(settings.hnsw_m, settings.hnsw_ef_construction, settings.hnsw_ef_search)
    ml = bulk_multilingual_encoder(settings)
    index = build_faq_index(bank, text, params, progress=progress, multilingual=ml)
    calibrate_with_labels(index, text, as_shop_labels(labels), settings, ml)
    return index


def build_product_version(
    settings: Settings,
    catalog: Catalog,
    text: Encoder,
    *,
    progress: bool = False,
    extra_texts: list[tuple[str, str]] | None = None,
    known_images: Callable[[Path], np.ndarray | None] | None = None,
) -> VectorIndex:
    """A product index version as ingest builds it: fused vectors, the text view and the
    multilingual view when configured. ``extra_texts`` are (product id, text) pairs added to
    the text view as further phrasings of their product (the evaluation's TRAIN texts);
    ``known_images`` gives image vectors already computed (``build.product_rows``)."""
    params = IndexParams(settings.hnsw_m, settings.hnsw_ef_construction, settings.hnsw_ef_search)
    image = bulk_image_encoder(settings)  # workers too when encode_workers or encode_cluster
    index = build_product_index(
        catalog,
        text,
        image,
        make_fusion(settings, text, image),
        params,
        max_image_bytes=settings.max_image_bytes,
        max_image_pixels=settings.max_image_pixels,
        progress=progress,
        multilingual=bulk_multilingual_encoder(settings),
        extra_texts=extra_texts,
        known_images=known_images,
    )
    return index


def publish_built(settings: Settings, kind: str, index: VectorIndex) -> str:
    """Publish a built version atomically under the writer lock, prune old ones; its id."""
    version = new_version_id(kind)
    with exclusive(settings):
        publish_version(settings, kind, version, index)
    return version


def item_count(index: VectorIndex) -> int:
    """Entries or products in a version: its records (a product without an image has no
    vector in the fused product index, only in its text view)."""
    records = index.meta.get("records")
    return len(records) if records is not None else index.item_count


def record_version(
    engine: Engine,
    kind: str,
    version: str,
    index: VectorIndex,
    created_by: str,
    extra: dict[str, Any] | None = None,
) -> None:
    """Record a published version in SQL (a failure is logged: the version is already live)."""
    meta = index.meta
    row = IndexVersionRow(
        id=version,
        kind=kind,
        created_by=created_by,
        n_items=item_count(index),
        n_vectors=len(index),
        encoders={k: meta[k] for k in ("text_encoder", "image_encoder") if k in meta},
        fusion=meta.get("fusion"),
        source_hash=meta.get("source_hash", ""),
        params={
            "m": index.params.m,
            "ef_construction": index.params.ef_construction,
            "ef": index.params.ef,
            **(extra or {}),
        },
    )
    try:
        from sqlalchemy.orm import Session

        with Session(engine) as session, session.begin():
            session.add(row)
    except SQLAlchemyError as exc:
        log.error(
            "published %s but could not record it in the database: %s",
            version,
            str(exc).splitlines()[0],
        )
