"""Product matching in ``retrieval train`` (``--product-queries``): the text encoder also
learns to match shoppers' product questions (or offer titles) to the catalog's products,
and the lexical weight of hybrid product ranking is fitted for the model it trains.

One MiniLM serves the FAQ and the products, so both are judged: the version is better only
if neither the FAQ's held-out figures nor the products' held-out MRR@10 get worse and one of
them improves (:func:`better_with_products`).

- **Data** (:func:`gather_products`): the labelled product questions (evaluation format,
  ``relevant`` = product ids of the catalog), a seeded share of them held out. Not per
  product, as the FAQ's split is per answer: a catalog has thousands of products with one or
  two questions each, and a held-out question of a product without training questions is
  what a new product is. Each product becomes a training
  *pseudo-entry* (:data:`PRODUCT_ENTRY` + its id) whose one phrasing is its text as the
  index encodes it (``Product.text``), so the contrastive loop pairs each question with its
  product, other products of the batch are its negatives, and the near-miss mining finds
  the products the current encoder confuses it with ("ue55nu7100" against "ue55nu7400").
- **Judging** (:func:`judge_products`): each held-out question is ranked as the service
  ranks a text-only product question (:func:`retrieval.product_search.text_matches` with a
  lexical weight): the union of the exact text-cosine top :data:`DEPTH` and the BM25 top
  :data:`DEPTH` (the product index's own lexical index, :func:`retrieval.build.product_lexical`),
  every candidate scored ``(1 - w) * cosine + w * BM25 / the question's best``
  (:func:`retrieval.lexical.hybrid.weighted`). ``w`` is the weight with the best hit@1 on the
  held-out questions (:func:`retrieval.lexical.hybrid.choose_weight`, which also gives the
  5-fold cross-validated hit@1 of that choice), for each model on its own scores; the
  promoted version supplies it as ``lexical_weight``.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..catalog import Catalog, Product, load_catalog
from ..encoders.base import Encoder
from ..errors import InputError
from ..evaluation.baselines import normalize_text
from ..faq import FAQBank, FAQEntry
from ..labelled import LabelledQuery, read_labelled
from ..lexical.hybrid import WeightChoice, choose_weight, weighted
from ..settings import Settings
from .data import MIN_HELDOUT
from .pairs import PRODUCT_ENTRY, Anchor

__all__ = [
    "DEPTH",
    "MIN_FIT_QUESTIONS",
    "PRODUCT_ENTRY",
    "ProductData",
    "ProductJudgement",
    "better_with_products",
    "fit_lexical_weight",
    "gather_products",
    "hybrid_candidates",
    "judge_products",
    "lexical_weight_setting",
    "merge_repeats",
    "rank_metrics",
    "with_products",
]

# candidates from each side per question, as the service's hybrid ranking fetches for the
# answers it returns (max(4k, 50), k <= 12: product_search._hybrid_matches)
DEPTH = 50
RANKED = 10  # products ranked per question, for MRR@10
MIN_PRODUCT_ANCHORS = 8  # product questions to train on
MIN_FIT_QUESTIONS = 10  # labelled product questions to choose a lexical weight from
EPS = 1e-9


@dataclass(frozen=True)
class ProductData:
    """The product side of one training run (:func:`gather_products`)."""

    products: list[Product]
    bank: FAQBank  # one pseudo-entry per product: its text as the only phrasing
    anchors: list[Anchor]  # training questions (held-out ones left out)
    heldout: list[LabelledQuery]
    refit_anchors: list[Anchor]  # every question, for the model trained on all data
    counts: dict[str, int]


def _anchors(queries: Sequence[LabelledQuery]) -> list[Anchor]:
    """One anchor per question, of its first product; the other right products are its
    ``related`` entries (never mined as its near misses)."""
    out = []
    for q in queries:
        first, *others = sorted(q.relevant)
        out.append(
            Anchor(
                q.text or "",
                PRODUCT_ENTRY + first,
                "products",
                related=tuple(PRODUCT_ENTRY + pid for pid in others),
            )
        )
    return out


def merge_repeats(queries: Sequence[LabelledQuery]) -> list[LabelledQuery]:
    """One question per normalised text (the first wording kept), the products of its
    repeats merged: a question repeated in the file must not be both trained on and held
    out."""
    by_text: dict[str, LabelledQuery] = {}
    for q in queries:
        key = normalize_text(q.text or "")
        seen = by_text.get(key)
        by_text[key] = q if seen is None else replace(seen, relevant=seen.relevant | q.relevant)
    return list(by_text.values())


def gather_products(
    catalog_path: Path, queries_path: Path, heldout_share: float, seed: int
) -> ProductData:
    """The catalog and its labelled product questions, a seeded ``heldout_share`` of them
    held out, or a one-line refusal naming what is missing. Lines with a photo (the service
    ranks those through the fused index: ``--photos``), without text, or out of scope are
    left out; repeated questions count once (:func:`merge_repeats`)."""
    catalog = load_catalog(catalog_path)
    products = list(catalog)
    if not products:
        raise InputError(f"the catalog {catalog_path} has no products to train on")
    labelled = read_labelled(
        queries_path, known_ids=list(catalog.products), images=True, what="catalog"
    )
    usable = [q for q in labelled if q.text and q.relevant and q.image is None]
    questions = merge_repeats(usable)
    order = list(range(len(questions)))
    random.Random(seed).shuffle(order)
    n = round(len(questions) * heldout_share)
    heldout = [questions[i] for i in sorted(order[:n])]
    train = [questions[i] for i in sorted(order[n:])]
    anchors = _anchors(train)
    if len(anchors) < MIN_PRODUCT_ANCHORS or len(heldout) < MIN_HELDOUT:
        raise InputError(
            f"too few product questions in {queries_path}: {len(anchors)} to train on and "
            f"{len(heldout)} held out (need at least {MIN_PRODUCT_ANCHORS} and {MIN_HELDOUT}: "
            "lines with a query text and the ids of the products that answer it)"
        )
    bank = FAQBank(
        {
            PRODUCT_ENTRY + p.id: FAQEntry(id=PRODUCT_ENTRY + p.id, answer=p.text, question=p.text)
            for p in products
        },
        catalog_path,
    )
    return ProductData(
        products,
        bank,
        anchors,
        heldout,
        _anchors(questions),
        {
            "products": len(products),
            "anchors": len(anchors),
            "heldout": len(heldout),
            "left_out": len(labelled) - len(usable),
            "repeats": len(usable) - len(questions),
        },
    )


def with_products(bank: FAQBank, products: ProductData | None) -> FAQBank:
    """The FAQ bank with the products' pseudo-entries, as the training loop sees them."""
    if products is None:
        return bank
    return FAQBank({**{e.id: e for e in bank}, **products.bank.entries}, bank.source)


Example = tuple[Mapping[str, float], Mapping[str, float], Collection[str]]


def hybrid_candidates(
    encoder: Encoder,
    products: Sequence[Product],
    queries: Sequence[LabelledQuery],
    *,
    progress: bool = False,
) -> list[Example]:
    """Per question: its candidates' text cosines, their BM25 scores and the relevant ids,
    the way the service gathers a text-only question's candidates (see the module).
    ``progress``: a bar while the catalog is encoded (minutes for a large one)."""
    from ..build import product_lexical

    ids = [p.id for p in products]
    vectors = encoder.encode([p.text for p in products], progress=progress)
    qvecs = encoder.encode([q.text or "" for q in queries], progress=False)
    lexical = product_lexical(list(products))
    depth = min(DEPTH, len(ids))
    index = {pid: i for i, pid in enumerate(ids)}
    out: list[Example] = []
    for q, qv in zip(queries, qvecs, strict=True):
        cos = vectors @ qv
        top = np.argpartition(-cos, depth - 1)[:depth]
        candidates = {ids[i] for i in top.tolist()}
        scores = lexical.scores(q.text or "")
        bm25: dict[str, float] = {}
        if scores is not None:
            candidates.update(pid for pid, _ in scores.top(DEPTH))
            bm25 = scores.of(candidates)
        dense = {pid: float(np.clip(cos[index[pid]], -1.0, 1.0)) for pid in candidates}
        dense = dict(sorted(dense.items(), key=lambda kv: -kv[1]))
        out.append((dense, bm25, frozenset(q.relevant)))
    return out


def rank_metrics(examples: Sequence[Example], weight: float) -> dict[str, float]:
    """hit@1 and MRR@10 of the :func:`weighted` ranking at ``weight``."""
    hits, rr = [], []
    for dense, lexical, relevant in examples:
        ranking = [pid for pid, _ in weighted(dense, lexical, weight)[:RANKED]]
        rank = next((i for i, pid in enumerate(ranking, 1) if pid in relevant), None)
        hits.append(1.0 if rank == 1 else 0.0)
        rr.append(1.0 / rank if rank else 0.0)
    n = max(1, len(examples))
    return {"hit_at_1": sum(hits) / n, "mrr_at_10": sum(rr) / n, "n_queries": len(examples)}


@dataclass(frozen=True)
class ProductJudgement:
    lexical_weight: float  # the best on the held-out questions
    cv_hit_at_1: float  # hit@1 of each fold at the weight the other folds chose
    metrics: dict[str, float]  # hit@1 and MRR@10 at ``lexical_weight``

    def record(self) -> dict[str, Any]:
        return {
            "lexical_weight": self.lexical_weight,
            "cv_hit_at_1": round(self.cv_hit_at_1, 6),
            **self.metrics,
        }


def judge_products(
    encoder: Encoder,
    data: ProductData,
    *,
    seed: int = 0,
    folds: int = 5,
    progress: bool = False,
) -> ProductJudgement:
    """The model's held-out product figures, with the lexical weight chosen for it."""
    examples = hybrid_candidates(encoder, data.products, data.heldout, progress=progress)
    choice = choose_weight(examples, folds=folds, seed=seed)
    return ProductJudgement(choice.weight, choice.cv_score, rank_metrics(examples, choice.weight))


def fit_lexical_weight(
    encoder: Encoder,
    products: Sequence[Product],
    questions: Sequence[LabelledQuery],
    *,
    seed: int = 0,
    folds: int = 5,
    progress: bool = False,
) -> WeightChoice:
    """The lexical weight for ``encoder`` with the best hit@1 on labelled product questions
    (repeats counted once; ``cv_score``: ``folds``-fold cross-validation of that choice),
    nothing trained: what ``retrieval eval products --train`` uses when no weight is
    configured."""
    examples = hybrid_candidates(encoder, products, merge_repeats(questions), progress=progress)
    return choose_weight(examples, folds=folds, seed=seed)


def lexical_weight_setting(
    settings: Settings,
    catalog: Catalog,
    questions: list[LabelledQuery],
    encoder: Encoder,
    *,
    progress: bool = False,
) -> tuple[Settings, str | None]:
    """``settings`` with the lexical weight chosen on labelled text-only product questions
    (:func:`fit_lexical_weight`) unless one is configured (``lexical_weight`` set by the
    file, the environment or a promoted version), and a line saying which weight and why;
    None for no questions. What ``retrieval eval products --train`` ranks with."""
    questions = merge_repeats(questions)
    if not questions:
        return settings, None
    if "lexical_weight" in settings.model_fields_set:
        return settings, f"{settings.lexical_weight:g} (configured)"
    if len(questions) < MIN_FIT_QUESTIONS:
        return settings, (
            f"{settings.lexical_weight:g} (the setting: {len(questions)} TRAIN questions are "
            f"too few to fit it, {MIN_FIT_QUESTIONS} needed)"
        )
    choice = fit_lexical_weight(encoder, list(catalog), questions, progress=progress)
    note = (
        f"{choice.weight:g} (fitted on {len(questions)} TRAIN questions: 5-fold "
        f"cross-validated hit@1 {choice.cv_score:.4f})"
    )
    return settings.model_copy(update={"lexical_weight": choice.weight}), note


def better_with_products(
    faq_candidate: Mapping[str, Any],
    faq_current: Mapping[str, Any],
    products_candidate: Mapping[str, Any],
    products_current: Mapping[str, Any],
) -> bool:
    """The promotion rule with products: the FAQ's held-out MRR@10 and overall accuracy and
    the products' held-out MRR@10 all at least the current model's, one of them higher."""
    pairs = [
        (faq_candidate.get("mrr_at_10"), faq_current.get("mrr_at_10")),
        (faq_candidate.get("overall_accuracy"), faq_current.get("overall_accuracy")),
        (products_candidate.get("mrr_at_10"), products_current.get("mrr_at_10")),
    ]
    values = [(float(a or 0.0), float(b or 0.0)) for a, b in pairs]
    not_worse = all(a >= b - EPS for a, b in values)
    return not_worse and any(a > b + EPS for a, b in values)
