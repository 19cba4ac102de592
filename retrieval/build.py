"""Building the FAQ and product indexes from their sources (what ``retrieval ingest`` runs)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .catalog import Catalog, Product
from .decision import calibrate_threshold
from .encoders.base import Encoder, l2_normalize
from .encoders.files import encode_image_files
from .errors import ImageError, SourceError
from .faq import FAQBank, FAQEntry
from .fusion import Fusion, fuse
from .images import check_image
from .index import IndexParams, VectorIndex
from .indexformat import (
    CENTROID,
    MULTILINGUAL,
    TEXT_ONLY,
    TEXT_VIEW,
    faq_expectations,
    product_expectations,
)
from .lexical.index import LexicalIndex
from .lexical.tokens import DEFAULT_TOKENIZER

__all__ = [
    "CalibrationResult",
    "build_faq_index",
    "build_product_index",
    "calibrate_faq",
    "calibrate_multilingual",
    "routed",
    "routed_positions",
    "faq_centroids",
    "faq_meta",
    "faq_rows",
    "multilingual_companion",
    "add_multilingual_products",
    "product_multilingual_view",
    "product_lexical",
    "product_lexical_rows",
    "product_meta",
    "product_rows",
    "ProductRows",
]

log = logging.getLogger(__name__)


def _source_hash(hashes: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()[:16]


def faq_rows(
    entries: list[FAQEntry], encoder: Encoder, *, progress: bool = False
) -> tuple[list[tuple[str, str]], np.ndarray]:
    """Keys and vectors of these entries: one per phrasing (question, each example, answer)."""
    keys, texts = [], []
    for entry in entries:
        for variant, text in entry.phrasings():
            keys.append((entry.id, variant))
            texts.append(text)
    if not texts:
        return [], np.zeros((0, encoder.dim), np.float32)
    return keys, encoder.encode(texts, progress=progress)


def faq_centroids(
    entries: list[FAQEntry], encoder: Encoder, *, progress: bool = False
) -> tuple[list[tuple[str, str]], np.ndarray]:
    """One vector per entry: the normalised mean of its phrasings' vectors.

    A question in another language than the bank matches an entry's centroid better than
    its best single phrasing (docs/multilingual.md: Chinese -> English Bitext hit@1 0.61
    with the best phrasing, 0.75 with the centroid): averaging cancels the noise of each
    phrasing (order numbers, typos) and keeps what they share, the intent.
    """
    if not entries:
        return [], np.zeros((0, encoder.dim), np.float32)
    keys, vectors = faq_rows(entries, encoder, progress=progress)
    owners = [entry_id for entry_id, _ in keys]
    ids = [e.id for e in entries]
    sums = {entry_id: np.zeros(encoder.dim, np.float64) for entry_id in ids}
    for entry_id, vec in zip(owners, vectors, strict=True):
        sums[entry_id] += vec
    return [(i, CENTROID) for i in ids], l2_normalize(np.stack([sums[i] for i in ids]))


def multilingual_companion(
    bank: FAQBank, encoder: Encoder, params: IndexParams, *, progress: bool = False
) -> VectorIndex:
    """The FAQ index's companion for CJK questions: one centroid per entry (all languages)."""
    keys, vectors = faq_centroids(list(bank), encoder, progress=progress)
    index = VectorIndex(
        encoder.dim,
        params,
        capacity=len(keys) + 64,
        meta={"kind": "faq-multilingual", "text_encoder": encoder.id},
    )
    index.add(keys, vectors)
    return index


def product_multilingual_view(
    products: list[Product], encoder: Encoder, params: IndexParams, *, progress: bool = False
) -> VectorIndex:
    """The product index's companion for CJK questions: each product's text, encoded with the
    multilingual encoder (the English text encoder maps Chinese to noise)."""
    index = VectorIndex(
        encoder.dim,
        params,
        capacity=len(products) + 64,
        meta={"kind": "products-multilingual", "text_encoder": encoder.id},
    )
    add_multilingual_products(index, products, encoder, progress=progress)
    return index


def add_multilingual_products(
    index: VectorIndex, products: list[Product], encoder: Encoder, *, progress: bool = False
) -> None:
    """Each product's text, and each of its other-language titles (``Product.named_texts``),
    as the multilingual view's vectors: a product is found by its best one."""
    rows = [((p.id, TEXT_ONLY), p.text) for p in products]
    rows += [((p.id, variant), text) for p in products for variant, text in p.named_texts()]
    if rows:
        vectors = encoder.encode([text for _, text in rows], progress=progress)
        index.add([key for key, _ in rows], vectors)


def faq_meta(bank: FAQBank) -> dict:
    """The metadata of an FAQ index version that depends on the bank's content."""
    return {
        "item_hashes": {e.id: e.content_hash() for e in bank},
        "records": [e.to_record() for e in bank],
        "source_hash": _source_hash([f"{e.id}:{e.content_hash()}" for e in bank]),
    }


def build_faq_index(
    bank: FAQBank,
    encoder: Encoder,
    params: IndexParams,
    *,
    progress: bool = False,
    multilingual: Encoder | None = None,
) -> VectorIndex:
    """One vector per phrasing (question, each example, answer) of every entry; with a
    ``multilingual`` encoder also the companion index for CJK questions."""
    keys, vectors = faq_rows(list(bank), encoder, progress=progress)
    index = VectorIndex(
        encoder.dim,
        params,
        capacity=len(keys) + 64,
        meta={**faq_expectations(encoder, multilingual), **faq_meta(bank)},
    )
    index.add(keys, vectors)
    if multilingual is not None:
        index.companions[MULTILINGUAL] = multilingual_companion(
            bank, multilingual, params, progress=progress
        )
    return index


@dataclass
class ProductRows:
    """Fused vectors (one per product image) and the text view's vectors (one per product).

    A product without an image has no fused vector: every query that can score it (one with
    text) reaches it through the text view, and a 1664-d vector whose image part is zero would
    only cost memory, disk and re-index time."""

    keys: list[tuple[str, str]]
    fused: np.ndarray
    text_keys: list[tuple[str, str]]
    text: np.ndarray


def product_rows(
    products: list[Product],
    text_encoder: Encoder,
    image_encoder: Encoder,
    fusion: Fusion,
    *,
    max_image_bytes: int,
    max_image_pixels: int,
    source: Path | str = "catalog",
    progress: bool = False,
    known_images: Callable[[Path], np.ndarray | None] | None = None,
) -> ProductRows:
    """Fused rows of the products' images and their text rows. ``known_images`` may give an
    image file's encoder vector already computed (e.g. cached by the projection's training
    from the same files and encoder): those are neither decoded nor encoded again."""
    if not products:
        return ProductRows(
            [],
            np.zeros((0, fusion.dim), np.float32),
            [],
            np.zeros((0, text_encoder.dim), np.float32),
        )
    owners: list[tuple[int, int]] = []
    known: list[np.ndarray | None] = []
    files: list[Path] = []  # to encode, checked first: a bad file fails before any encoding
    owner_of: dict[str, str] = {}  # a file's product, for errors
    for i, product in enumerate(products):
        for j, path in enumerate(product.images):
            vector = known_images(Path(path)) if known_images is not None else None
            try:  # every limit of a decoded picture, from its header
                check_image(path, max_bytes=max_image_bytes, max_pixels=max_image_pixels)
            except ImageError as exc:
                raise SourceError(
                    source, f"product '{product.id}': {exc}", field="images"
                ) from None
            if vector is None:
                files.append(Path(path))
                owner_of.setdefault(str(path), product.id)
            known.append(vector)
            owners.append((i, j))
    text_vecs = text_encoder.encode([p.text for p in products], progress=progress)
    if files:
        try:  # decoded and encoded a chunk at a time, on workers when the encoder has them
            vectors = encode_image_files(
                image_encoder,
                files,
                max_bytes=max_image_bytes,
                max_pixels=max_image_pixels,
                progress=progress,
            )
        except ImageError as exc:  # changed or damaged past its header since the check
            owner = owner_of.get(exc.path or "")
            prefix = f"product '{owner}': " if owner is not None else ""
            raise SourceError(source, f"{prefix}{exc}", field="images") from None
        missing = [row for row, vector in enumerate(known) if vector is None]
        for row, vector in zip(missing, vectors, strict=True):
            known[row] = vector
    image_vecs = (
        np.stack([np.asarray(v, dtype=np.float32) for v in known if v is not None])
        if owners
        else np.zeros((0, image_encoder.dim), np.float32)
    )
    keys = [(products[i].id, f"image{j}") for i, j in owners]
    rows_txt = text_vecs[[i for i, _ in owners]] if owners else np.zeros((0, text_encoder.dim))
    return ProductRows(
        keys,
        fuse(image_vecs, rows_txt, fusion, n=len(keys)),
        [(p.id, TEXT_ONLY) for p in products],
        text_vecs,
    )


def product_lexical_rows(products: list[Product]) -> list[tuple[str, str, str]]:
    """The lexical index's rows of these products: its text (variant ``text``, as in the text
    view) and each other-language title alone (``name-zh``, ...), so a Chinese name matches
    without counting the English title twice in BM25's statistics."""
    rows = [(p.id, TEXT_ONLY, p.text) for p in products]
    rows += [(p.id, f"name-{lang}", name) for p in products for lang, name in p.names]
    return rows


def product_lexical(products: list[Product]) -> LexicalIndex:
    """The product index's BM25 index (:mod:`retrieval.lexical`): model numbers and other
    codes that dense vectors blur, matched by their tokens."""
    return LexicalIndex.build(product_lexical_rows(products), meta={"kind": "products-lexical"})


def product_meta(catalog: Catalog) -> dict:
    """The metadata of a product index version that depends on the catalog's content."""
    return {
        "item_hashes": {p.id: p.content_hash() for p in catalog},
        "records": [p.to_record() for p in catalog],
        "source_hash": _source_hash([f"{p.id}:{p.content_hash()}" for p in catalog]),
    }


def build_product_index(
    catalog: Catalog,
    text_encoder: Encoder,
    image_encoder: Encoder,
    fusion: Fusion,
    params: IndexParams,
    *,
    max_image_bytes: int,
    max_image_pixels: int,
    progress: bool = False,
    multilingual: Encoder | None = None,
    extra_texts: list[tuple[str, str]] | None = None,
    known_images: Callable[[Path], np.ndarray | None] | None = None,
) -> VectorIndex:
    """One fused vector per product image (variant ``image<i>``), and the text view: one text
    vector per product (variant ``text``), the only vector of a product without an image.
    ``extra_texts`` ((product id, text) pairs) join the text view as variants ``extra<i>``.
    The lexical index (``index.lexical``) holds each product's own text. ``known_images``:
    see :func:`product_rows`."""
    rows = product_rows(
        list(catalog),
        text_encoder,
        image_encoder,
        fusion,
        max_image_bytes=max_image_bytes,
        max_image_pixels=max_image_pixels,
        source=catalog.source or "catalog",
        progress=progress,
        known_images=known_images,
    )
    index = VectorIndex(
        fusion.dim,
        params,
        capacity=len(rows.keys) + 64,
        meta={
            **product_expectations(text_encoder, image_encoder, fusion),
            "image_weight": fusion.image_weight,
            "text_weight": fusion.text_weight,
            "lexical_tokenizer": DEFAULT_TOKENIZER.spec,
            **product_meta(catalog),
        },
    )
    index.add(rows.keys, rows.fused)
    # Text-only queries (most shopper questions) search this text view: their fused score is
    # the text cosine (docs/fusion.md), so a 384-d graph built on text neighbourhoods ranks
    # them as the fused index would, products without an image included.
    text_view = VectorIndex(
        text_encoder.dim,
        params,
        capacity=len(rows.text_keys) + len(extra_texts or ()) + 64,
        meta={"kind": "products-text"},
    )
    text_view.add(rows.text_keys, rows.text)
    if extra_texts:
        vectors = text_encoder.encode([t for _, t in extra_texts], progress=progress)
        text_view.add([(pid, f"extra{i}") for i, (pid, _) in enumerate(extra_texts)], vectors)
    index.companions[TEXT_VIEW] = text_view
    # BM25 over each product's text, saved and published with this version
    index.lexical = product_lexical(list(catalog))
    if multilingual is not None:
        index.companions[MULTILINGUAL] = product_multilingual_view(
            list(catalog), multilingual, params, progress=progress
        )
    return index


@dataclass(frozen=True)
class CalibrationResult:
    threshold: float
    accuracy: float
    n_questions: int
    n_out_of_scope: int


def calibrate_faq(
    index: VectorIndex, encoder: Encoder, labelled: list[tuple[str, set[str]]]
) -> CalibrationResult:
    """Fit the answer threshold on labelled questions (empty relevant set = out of scope)."""
    if not labelled:
        raise ValueError("no labelled questions")
    vectors = encoder.encode([q for q, _ in labelled])
    tops, correct, in_scope = [], [], []
    for vec, (_, relevant) in zip(vectors, labelled, strict=True):
        hits = index.search_items(vec, 1)
        tops.append(hits[0].score if hits else -1.0)
        correct.append(bool(hits) and hits[0].item_id in relevant)
        in_scope.append(bool(relevant))
    threshold, accuracy = calibrate_threshold(tops, correct, in_scope)
    return CalibrationResult(threshold, accuracy, len(labelled), sum(not s for s in in_scope))


def routed_positions(labelled: list[tuple[str, set[str]]], *, cjk: bool) -> list[int]:
    """Positions of the labelled questions a view answers: questions with CJK characters go
    to the multilingual view, the others to the main one. A side with fewer than 10
    questions gets them all (a threshold fitted on a handful would be noise)."""
    from .querytext import has_cjk

    mine = [i for i, (q, _) in enumerate(labelled) if has_cjk(q) == cjk]
    return mine if len(mine) >= 10 else list(range(len(labelled)))


def routed(labelled: list[tuple[str, set[str]]], *, cjk: bool) -> list[tuple[str, set[str]]]:
    """The labelled questions a view answers (see :func:`routed_positions`)."""
    return [labelled[i] for i in routed_positions(labelled, cjk=cjk)]


def calibrate_multilingual(
    index: VectorIndex, encoder: Encoder, labelled: list[tuple[str, set[str]]], source: object
) -> None:
    """Calibrate the FAQ index's multilingual companion (its scores have their own scale)."""
    companion = index.companions.get(MULTILINGUAL)
    if companion is None:
        return
    cal = calibrate_faq(companion, encoder, labelled)
    companion.meta["calibration"] = {
        "answer_threshold": round(cal.threshold, 6),
        "accuracy": round(cal.accuracy, 6),
        "n_questions": cal.n_questions,
        "n_out_of_scope": cal.n_out_of_scope,
        "source": str(source),
    }
