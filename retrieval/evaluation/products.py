"""``retrieval eval products``: product search on labelled text and photo queries.

The system is the service's query path: the product index is built and published by the
code ``retrieval ingest`` runs (into a temporary data folder), with the multilingual view
when one is configured, and the questions are answered by the
:class:`~retrieval.retriever.Retriever` that :func:`~retrieval.runtime.build_retriever`
wires, as the service's is (Chinese questions go to the multilingual view). TRAIN photos
join that index as extra examples of their product: extra product images (fused with the
product's text, as any product image), and the words a photo line carries as extra
phrasings in the text view. TRAIN's text-only questions are what ``retrieval train
--product-queries`` learns from; here, as there, they choose the lexical weight of hybrid
ranking (:func:`~retrieval.training.products.lexical_weight_setting`), unless
``lexical_weight`` is configured (a promoted version trained on product questions supplies
its own); ``info["lexical_weight"]`` says which. They are not indexed: the service indexes
the catalog, not the shop's labelled questions.

When TRAIN has labelled photos and no ``image_projection`` is configured, the image
projection is learned from them first (:func:`~retrieval.training.image.fit_image_projection`,
as ``retrieval train --photos`` does) and used for the index and the queries; ``adapt=False``
(``--no-adapt``) turns that off. ``info["image_projection"]`` says which projection was used.
When TRAIN's photos also carry words, the fusion weights are fitted with the projection
(:mod:`~retrieval.training.photo_fusion`) unless they are configured; ``info["fusion_weights"]``
says what became of them and ``info["fusion"]`` gives the weights the run used.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..catalog import Catalog, load_catalog
from ..encoders import image_encoder, text_encoder
from ..encoders.base import Encoder
from ..errors import InputError, SourceError
from ..fusion import fuse
from ..images import load_image
from ..index import VectorIndex
from ..indexformat import MULTILINGUAL, TEXT_VIEW
from ..ingest import build_product_version, publish_built
from ..labelled import LabelledQuery, read_labelled
from ..results import QueryResult
from ..retriever import Retriever
from ..runtime import build_retriever
from ..settings import Settings
from .baselines import BM25Scorer, ExactScorer, best_per_item
from .metrics import Outcome
from .results import Evaluation, SystemResult
from .runner import LATENCY_SAMPLE, answer_all, gate_info, photo_decision_info

__all__ = ["evaluate_products", "with_training_examples"]

log = logging.getLogger(__name__)

K = 10


def with_training_examples(catalog: Catalog, train: Sequence[LabelledQuery]) -> Catalog:
    """The catalog with each TRAIN photo added as an extra image of its relevant products."""
    extra: dict[str, list[Path]] = {}
    for q in train:
        if q.image is not None:
            for pid in sorted(q.relevant):
                extra.setdefault(pid, []).append(q.image)
    products = {
        pid: dataclasses.replace(p, images=p.images + tuple(extra.get(pid, ())))
        for pid, p in catalog.products.items()
    }
    return Catalog(products, catalog.source)


def _learned_projection(
    settings: Settings,
    catalog_path: Path,
    train_path: Path | None,
    n_photos: int,
    image: Encoder,
    text: Encoder,
    folder: Path,
    *,
    adapt: bool,
    progress: bool,
) -> tuple[Settings, str | None, str | None]:
    """The settings to evaluate with and what to report about the image projection and the
    fusion weights: the projection is learned from the TRAIN photos into ``folder`` unless
    one is configured, adaptation is off, or TRAIN has no photos to learn from (too few is
    reported, not raised); the fusion weights are fitted with it, on its held-out photos
    that carry words, unless ``image_weight`` or ``text_weight`` is configured."""
    from ..training.image import fit_image_projection
    from ..training.photo_fusion import adopted_weights, describe_fusion

    if settings.effective_image_projection is not None:
        return settings, f"configured ({settings.effective_image_projection})", None
    if train_path is None or n_photos == 0:
        return settings, None, None
    if not adapt:
        return settings, "none (--no-adapt)", None
    out = folder / "image-projection.npy"
    weights_set = bool({"image_weight", "text_weight"} & settings.model_fields_set)
    try:
        run = fit_image_projection(
            catalog_path,
            train_path,
            out,
            settings=settings,
            encoder=image,
            text_encoder=None if weights_set else text,
            progress=progress,
        )
    except (InputError, SourceError) as exc:  # too few photos or products, a photo of two
        log.warning("not learning an image projection: %s", exc)
        return settings, f"none (not learned: {exc})", None
    fusion = run.get("fusion")
    learned = settings.model_copy(update={"image_projection": out, **adopted_weights(fusion)})
    note = "configured" if weights_set else describe_fusion(fusion)
    return learned, f"learned on TRAIN ({n_photos} photos)", note


def _photo_words(train: Sequence[LabelledQuery]) -> list[tuple[LabelledQuery, str]]:
    """(line, product id) of each TRAIN photo line with words: they join the index as extra
    phrasings of the product (text-only TRAIN questions do not)."""
    return [(q, pid) for q in train if q.text and q.image is not None for pid in sorted(q.relevant)]


def _ranked(result: QueryResult) -> tuple[str, ...]:
    return tuple(m.product.id for m in result.products)


def _encode_each(encoder: Encoder, items: Sequence[Any]) -> list[np.ndarray | None]:
    """Vectors of the items that are not None (in one batch), None for the others."""
    rows = [i for i, item in enumerate(items) if item is not None]
    out: list[np.ndarray | None] = [None] * len(items)
    if rows:
        for i, vec in zip(rows, encoder.encode([items[i] for i in rows]), strict=True):
            out[i] = vec
    return out


def _stored(index: VectorIndex) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All stored vectors of an index, their owners (item positions) and the item ids."""
    ids = index.item_ids()
    chunks, owners = [], []
    for i, item in enumerate(ids):
        vectors = index.item_vectors(item)[1]
        chunks.append(vectors)
        owners += [i] * len(vectors)
    return np.concatenate(chunks), np.asarray(owners, dtype=np.int64), ids


def evaluate_products(
    settings: Settings,
    catalog_path: Path | None,
    queries_path: Path,
    train_path: Path | None = None,
    *,
    baselines: Sequence[str] = (),
    progress: bool = True,
    dataset: str | None = None,
    encoders: tuple[Encoder, Encoder] | None = None,
    adapt: bool = True,
    latency_sample: int = LATENCY_SAMPLE,
    published: bool = False,
) -> Evaluation:
    """Evaluate product matches (and ``baselines``) on labelled queries.

    The catalog at ``catalog_path`` is built and published as ingest does it, into a
    temporary data folder, with the TRAIN photos as extra examples (and an image projection
    learned from them, see ``adapt``); TRAIN's text-only questions choose the lexical weight
    unless one is configured. With ``published`` the system is the product
    version published in the settings' data folder instead (the one the service runs; no
    catalog or TRAIN is read), so its figures are the service's on that very version."""
    if published:
        if train_path is not None:
            raise InputError("--published scores the published version: it takes no TRAIN")
        text, image = encoders or (text_encoder(settings), image_encoder(settings))
        t0 = time.perf_counter()
        retriever = build_retriever(settings, text=text, kinds=("products",))
        catalog = retriever.snapshot.catalog
        queries = read_labelled(
            queries_path, known_ids=[p.id for p in catalog], images=True, what="catalog"
        )
        return _evaluate(
            settings,
            retriever,
            catalog,
            queries,
            (text, image),
            baselines=baselines,
            build_s=time.perf_counter() - t0,
            train=[],
            projection=None,
            fitted_fusion=None,
            index_version=retriever.snapshot.product_version,
            progress=progress,
            latency_sample=latency_sample,
            name=dataset or Path(queries_path).resolve().parent.name,
        )
    if catalog_path is None:
        raise InputError("give the catalog to build (or score the published version)")
    catalog = load_catalog(catalog_path)
    # the catalog under evaluation is the settings' catalog (a projection shipped beside it
    # is used, one beside another catalog is not)
    settings = settings.model_copy(update={"catalog_path": Path(catalog_path)})
    ids = list(catalog.products)
    queries = read_labelled(queries_path, known_ids=ids, images=True, what="catalog")
    train = (
        read_labelled(train_path, known_ids=ids, images=True, what="catalog") if train_path else []
    )
    text, image = encoders or (text_encoder(settings), image_encoder(settings))
    n_photos = sum(q.image is not None for q in train)
    # text-only TRAIN questions choose the lexical weight (as retrieval train
    # --product-queries does); the words of photo lines join the text view
    from ..training.products import lexical_weight_setting

    settings, lexical = lexical_weight_setting(
        settings,
        catalog,
        [q for q in train if q.text and q.image is None and q.relevant],
        text,
        progress=progress,
    )
    with tempfile.TemporaryDirectory(prefix="retrieval-eval-") as tmp:
        settings, projection, fitted_fusion = _learned_projection(
            settings,
            catalog_path,
            train_path,
            n_photos,
            image,
            text,
            Path(tmp),
            adapt=adapt,
            progress=progress,
        )
        # the index is built and published as ingest does it, into the temporary data folder
        # a private hnswlib index in the folder, whatever store the shop's settings name
        run = settings.model_copy(
            update={"data_dir": Path(tmp) / "var", "database_url": None, "vector_store": "hnswlib"}
        )
        t0 = time.perf_counter()
        from ..training.image import cached_image_vectors

        built = build_product_version(
            run,
            with_training_examples(catalog, train),
            text,
            progress=progress,
            extra_texts=[(pid, q.text or "") for q, pid in _photo_words(train)],
            # the vectors of the encoder the build uses (one given by a caller may differ)
            known_images=(
                cached_image_vectors(settings, image) if image.id == image_encoder(run).id else None
            ),
        )
        publish_built(run, "products", built)
        retriever = build_retriever(run, text=text, kinds=("products",))
        return _evaluate(
            settings,
            retriever,
            catalog,
            queries,
            (text, image),
            baselines=baselines,
            build_s=time.perf_counter() - t0,
            train=train,
            projection=projection,
            fitted_fusion=fitted_fusion,
            lexical=lexical,
            index_version=None,
            progress=progress,
            latency_sample=latency_sample,
            name=dataset or Path(queries_path).resolve().parent.name,
        )


def _evaluate(
    settings: Settings,
    retriever: Retriever,
    catalog: Catalog,
    queries: list[LabelledQuery],
    encoders: tuple[Encoder, Encoder],
    *,
    baselines: Sequence[str],
    build_s: float,
    train: list[LabelledQuery],
    projection: str | None,
    fitted_fusion: str | None,
    index_version: str | None,
    lexical: str | None = None,
    progress: bool,
    latency_sample: int,
    name: str,
) -> Evaluation:
    """Score the questions through ``retriever`` (the service's query path) and the
    baselines on the same index."""
    text, image = encoders
    ids = [p.id for p in catalog]  # (a store-backed catalog is read by iterating)
    n_photos = sum(q.image is not None for q in train)
    train_texts = _photo_words(train)
    index = retriever.snapshot.product_index
    fusion = retriever.fusion
    answered = answer_all(
        retriever,
        [q.text for q in queries],
        [q.image for q in queries],
        same=lambda a, b: _ranked(a) == _ranked(b),
        k_faq=1,
        k_products=K,
        product_filters=[q.filter for q in queries],
        latency_sample=latency_sample,
        progress=progress,
        prefer_products=True,  # product questions, decided as the chat's product actions do
    )
    outcomes = answered.outcomes(
        [q.relevant for q in queries],
        lambda r: (_ranked(r), r.products[0].score if r.products else None, True),
    )
    results = [SystemResult("system", tuple(outcomes), False, build_s=build_s)]
    if baselines:
        q_text = _encode_each(text, [q.text for q in queries])
        q_image = _encode_each(
            image,
            [
                None
                if q.image is None
                else load_image(
                    q.image,
                    max_bytes=settings.max_image_bytes,
                    max_pixels=settings.max_image_pixels,
                )
                for q in queries
            ],
        )

    for baseline in baselines:
        t0 = time.perf_counter()
        if baseline == "exact":
            fused = _stored(index)
            text_view = _stored(index.companions[TEXT_VIEW])
            fused_exact, text_exact = ExactScorer(fused[0]), ExactScorer(text_view[0])
            prep_s = time.perf_counter() - t0
            rows = []
            for q, tv, iv in zip(queries, q_text, q_image, strict=True):
                t1 = time.perf_counter()
                if iv is None:  # text only: the text view, as the retriever
                    vectors, owners, item_ids = text_view
                    scores = text_exact.scores(tv)
                else:
                    vectors, owners, item_ids = fused
                    query = fuse(iv[None, :], None if tv is None else tv[None, :], fusion, n=1)[0]
                    scores = fused_exact.scores(query)
                idx, s = best_per_item(scores, owners, len(item_ids), K)
                ms = (time.perf_counter() - t1) * 1e3
                rows.append(
                    Outcome(
                        tuple(item_ids[j] for j in idx),
                        q.relevant,
                        float(s[0]) if len(s) else None,
                        True,
                        ms,
                        None,
                    )
                )
            results.append(SystemResult("exact", tuple(rows), False, build_s=build_s + prep_s))
        elif baseline == "bm25":
            docs = [(p.id, p.text) for p in catalog] + [(pid, q.text) for q, pid in train_texts]
            pos = {pid: i for i, pid in enumerate(ids)}
            owners = np.asarray([pos[pid] for pid, _ in docs], dtype=np.int64)
            bm25 = BM25Scorer([t or "" for _, t in docs])
            prep_s = time.perf_counter() - t0
            rows = []
            for q in queries:
                t1 = time.perf_counter()
                if q.text:  # a photo-only query has no words: BM25 ranks nothing
                    idx, s = best_per_item(bm25.scores(q.text), owners, len(ids), K)
                    idx = idx[s > 0]
                    s = s[s > 0]
                else:
                    idx, s = np.zeros(0, np.int64), np.zeros(0)
                ms = (time.perf_counter() - t1) * 1e3
                rows.append(
                    Outcome(
                        tuple(ids[j] for j in idx),
                        q.relevant,
                        float(s[0]) if len(s) else None,
                        True,
                        ms,
                        0.0,
                    )
                )
            results.append(SystemResult("bm25", tuple(rows), False, build_s=prep_s))
        else:
            raise ValueError(f"unknown product baseline {baseline!r}")
    info = {
        "n_products": len(catalog),
        "n_vectors": len(index),
        "n_train_images": n_photos,
        "n_train_texts": len(train_texts),
        "n_train_questions": sum(1 for q in train if q.text and q.image is None),
        "text_encoder": text.id,
        "image_encoder": image.id,
        "multilingual_encoder": (
            None
            if MULTILINGUAL not in index.companions
            else index.companions[MULTILINGUAL].meta.get("text_encoder")
        ),
        "fusion": {"image_weight": fusion.image_weight, "text_weight": fusion.text_weight},
        **({"image_projection": projection} if projection else {}),
        **({"fusion_weights": fitted_fusion} if fitted_fusion else {}),
        "lexical_weight": lexical or f"{settings.lexical_weight:g} (the setting)",
        "hnsw": {
            "m": index.params.m,
            "ef_construction": index.params.ef_construction,
            "ef": index.params.ef,
        },
        **answered.info,
    }
    if index_version is not None:
        info["index_version"] = index_version
    info.update(gate_info(answered.results))
    info.update(
        photo_decision_info(answered.results, [q.relevant for q in queries], retriever.photo_sure())
    )
    return Evaluation("products", name, tuple(results), info)
