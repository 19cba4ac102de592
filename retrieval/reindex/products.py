"""Re-indexing the catalog: the job that updates the product index in place or rebuilds it
(``reindex_products``), keeping its text view, multilingual view and lexical index in step
with the fused vectors."""

from __future__ import annotations

import logging
import time

from sqlalchemy import Engine

from ..build import (
    add_multilingual_products,
    build_product_index,
    product_lexical,
    product_lexical_rows,
    product_meta,
    product_multilingual_view,
    product_rows,
)
from ..catalog import Catalog, Product
from ..encoders.base import Encoder
from ..index import IndexParams, VectorIndex
from ..indexformat import MULTILINGUAL, product_expectations
from ..indexstore import discard, load_built
from ..ingest import build_key, records_digest
from ..lexical.tokens import DEFAULT_TOKENIZER
from ..runtime import make_fusion
from ..settings import Settings
from .changes import KindReport, diff_items
from .publish import finish, incompatibility, index_params, read_meta

__all__ = ["reindex_products"]

log = logging.getLogger(__name__)


def reindex_products(
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
    params = index_params(settings)
    hashes = {p.id: p.content_hash() for p in catalog}
    ml_ids = (multilingual.id,) if multilingual is not None else ()
    key = build_key(
        settings,
        "products",
        list(hashes.values()),
        text.id,
        image.id,
        *ml_ids,
        records=records_digest(catalog),
    )
    version, meta = read_meta(settings, "products")
    changes = diff_items(meta.get("item_hashes", {}), hashes)
    # the build key covers encoders, fusion weights and HNSW parameters: checked before any
    # model is loaded, so a run with nothing to do stays fast
    if (
        not full
        and meta
        and not changes.any
        # the key covers the records as served (prices, stock) too, not their order
        and meta.get("build_key") == key
        and _same_order(meta, catalog)
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
    why_full = "asked for a full rebuild" if full else incompatibility(meta, expect, params)
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
        return finish(settings, engine, "products", index, report, key, created_by, t0)
    # on pgvector the next version is a copy made in the database: only the changes travel
    index = load_built(settings, "products", version, ef=params.ef, draft=True)
    try:
        view = index.companions["text"]
        removed = changes.updated + changes.deleted
        index.delete_items(removed)
        view.delete_items(removed)
        todo = [catalog.products[i] for i in changes.added + changes.updated]
        log.info("products: encoding %d changed or new products", len(todo))
        rows = product_rows(
            todo,
            text,
            image,
            fusion,
            source=catalog.source or "catalog",
            progress=progress,
            **limits,
        )
        if rows.keys:
            index.add(rows.keys, rows.fused)
        if rows.text_keys:
            view.add(rows.text_keys, rows.text)
        _update_multilingual_view(
            index, list(catalog), todo, removed, multilingual, params, progress
        )
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
        return finish(settings, engine, "products", index, report, key, created_by, t0)
    except BaseException:
        discard(settings, "products", index)  # a draft's tables in the store; else nothing
        raise


def _same_order(meta: dict, catalog: Catalog) -> bool:
    """Whether the version lists the products in the catalog's order (the shop page's): its
    records in that order, or (records kept as rows in a vector store) their order's digest."""
    if "records" in meta:
        return [r.get("id") for r in meta["records"]] == [p.id for p in catalog]
    from ..vectorstore.pgrecords import record_order

    return meta.get("record_order") == record_order([{"id": p.id} for p in catalog])


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
