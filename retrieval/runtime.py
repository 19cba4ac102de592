"""Wiring: turn settings into encoders, fusion, indexes, the query log and a Retriever."""

from __future__ import annotations

import logging

import numpy as np
from sqlalchemy import Engine

from .decision import DecisionPolicy
from .encoders import image_encoder, multilingual_encoder, text_encoder
from .encoders.base import Encoder
from .errors import ConfigError
from .fusion import Fusion
from .index import IndexParams, VectorIndex
from .indexformat import MULTILINGUAL, TEXT_VIEW, faq_expectations, product_expectations
from .indexstore import load_index
from .retriever import Limits, Retriever
from .settings import Settings
from .snapshot import Snapshot
from .store import QueryLog, make_engine, migrate

__all__ = [
    "build_retriever",
    "close_encoders",
    "empty_index",
    "limits_from",
    "load_snapshot",
    "make_fusion",
    "open_store",
    "policy_for",
]

log = logging.getLogger(__name__)

DEFAULT_ANSWER = 0.6
SUGGEST_GAP = 0.15


def make_fusion(settings: Settings, text: Encoder, image: Encoder) -> Fusion:
    """The fusion V = A·V_img + B·V_text of the settings, with the image projection in use
    (the configured one, else the one shipped beside the catalog)."""
    projection = None
    path = settings.effective_image_projection
    if path is not None:
        try:
            projection = np.load(path)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read image_projection {path}: {exc}") from None
    try:
        return Fusion(image.dim, text.dim, settings.image_weight, settings.text_weight, projection)
    except ValueError as exc:
        raise ConfigError(f"invalid fusion settings: {exc}") from None


def policy_for(settings: Settings, faq_index: VectorIndex) -> DecisionPolicy:
    """Thresholds: explicit settings win, then the calibration stored with the index, then defaults."""
    calibrated = faq_index.meta.get("calibration") or {}
    answer, source = DEFAULT_ANSWER, "default"
    if "answer_threshold" in calibrated:
        answer, source = float(calibrated["answer_threshold"]), "calibrated"
    if settings.answer_threshold is not None:
        answer, source = settings.answer_threshold, "settings"
    suggest = (
        settings.suggest_threshold
        if settings.suggest_threshold is not None
        else answer - SUGGEST_GAP
    )
    return DecisionPolicy(
        answer,
        min(suggest, answer),
        settings.answer_margin,
        source,
        product_threshold=settings.product_answer_threshold,
        photo_threshold=settings.photo_answer_threshold,
        photo_sure_threshold=settings.photo_sure_threshold,
        product_false_show=settings.product_false_show,
    )


def limits_from(settings: Settings) -> Limits:
    return Limits(
        max_query_chars=settings.max_query_chars,
        max_image_bytes=settings.max_image_bytes,
        max_image_pixels=settings.max_image_pixels,
        default_k_products=settings.default_k_products,
        default_k_faq=settings.default_k_faq,
        max_k=settings.max_k,
        lexical_weight=settings.lexical_weight,
    )


def empty_index(kind: str, dim: int, settings: Settings, text_dim: int = 0) -> VectorIndex:
    """An index with nothing in it, standing in for a kind an evaluation does not build (a
    product index gets an empty text view of ``text_dim``)."""
    params = IndexParams(settings.hnsw_m, settings.hnsw_ef_construction, settings.hnsw_ef_search)
    index = VectorIndex(dim, params, meta={"kind": kind, "records": []})
    if kind == "products":
        index.companions[TEXT_VIEW] = VectorIndex(text_dim, params, meta={"kind": "products-text"})
    return index


def load_snapshot(
    settings: Settings,
    text: Encoder,
    image: Encoder,
    fusion: Fusion,
    *,
    kinds: tuple[str, ...] = ("faq", "products"),
) -> Snapshot:
    """The current published versions of ``kinds`` in the settings' index folder, checked
    against the encoders, with their decision policies; a kind not asked for is empty."""
    ml = multilingual_encoder(settings)
    faq = (
        load_index(settings, "faq", expect=faq_expectations(text), ef=settings.hnsw_ef_search)
        if "faq" in kinds
        else empty_index("faq", text.dim, settings)
    )
    products = (
        load_index(
            settings,
            "products",
            expect=product_expectations(text, image, fusion),
            ef=settings.hnsw_ef_search,
        )
        if "products" in kinds
        else empty_index("products", fusion.dim, settings, text.dim)
    )
    companion = faq.companions.get(MULTILINGUAL)
    ml_policy = policy_for(settings, companion) if companion is not None else None
    if (
        "faq" in kinds
        and ml is not None
        and (companion is None or companion.meta.get("text_encoder") != ml.id)
    ):
        log.warning(
            "the FAQ index %s has no multilingual companion built with %s: questions in "
            "Chinese use %s until `retrieval ingest` (or `reindex`) rebuilds it",
            faq.meta.get("version"),
            ml.id,
            text.id,
        )
    return Snapshot.from_indexes(faq, products, policy_for(settings, faq), ml_policy)


def open_store(settings: Settings) -> tuple[Engine, QueryLog]:
    """The engine and a running query log, which migrates the schema before its first write.

    A database that is down at start does not stop the service: queries are answered, their
    records spooled, and the schema prepared and the spool written once the database answers.
    """
    engine = make_engine(settings.resolved_database_url)
    qlog = QueryLog(
        engine,
        settings.spool_dir,
        spool_max_bytes=settings.spool_max_bytes,
        flush_interval=settings.log_flush_interval_s,
        prepare=migrate,
    )
    return engine, qlog


def build_retriever(
    settings: Settings,
    query_log: QueryLog | None = None,
    *,
    text: Encoder | None = None,
    kinds: tuple[str, ...] = ("faq", "products"),
    batching: bool = False,
) -> Retriever:
    """The retriever every entry point runs: the configured encoders (or ``text``, e.g. a
    fine-tuned model under evaluation), the published indexes of ``kinds`` and the policy.
    With ``batching`` (the web service) and ``encode_batching`` set, concurrent queries'
    encodings are gathered into batches (:mod:`retrieval.encoders.batching`); the caller
    closes the wrappers with :func:`close_encoders`."""
    text = text or text_encoder(settings)
    image = image_encoder(settings)
    fusion = make_fusion(settings, text, image)
    snapshot = load_snapshot(settings, text, image, fusion, kinds=kinds)
    ml = multilingual_encoder(settings)
    if ml is not None and (
        MULTILINGUAL in snapshot.faq_index.companions
        or MULTILINGUAL in snapshot.product_index.companions
    ):
        # load it now: the first Chinese question would otherwise wait for the model (~3 s
        # on a busy machine, past the Rasa action's timeout); the service warms only MiniLM
        ml.encode(["预热"])
    ml_enc: Encoder | None = ml
    image_enc: Encoder = image
    if batching and settings.encode_batching:
        from .encoders.batching import BatchingEncoder

        def wrap(enc: Encoder, name: str) -> Encoder:
            return BatchingEncoder(
                enc,
                max_batch=settings.encode_max_batch,
                max_wait_ms=settings.encode_max_wait_ms,
                max_queue=settings.encode_max_queue,
                name=name,
            )

        text, image_enc = wrap(text, "text"), wrap(image, "image")
        ml_enc = wrap(ml, "multilingual") if ml is not None else None
    return Retriever(
        text_encoder=text,
        image_encoder=image_enc,
        fusion=fusion,
        snapshot=snapshot,
        limits=limits_from(settings),
        query_log=query_log,
        multilingual_encoder=ml_enc,
    )


def close_encoders(retriever: Retriever) -> None:
    """Stop the batching wrappers of a retriever's encoders (waiting callers get 503)."""
    from .encoders.batching import BatchingEncoder

    for enc in (retriever.text_encoder, retriever.image_encoder, retriever.multilingual_encoder):
        if isinstance(enc, BatchingEncoder):
            enc.close()
