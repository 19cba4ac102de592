"""The product side of ``retrieval train`` (retrieval/training/products.py): the promotion
rule with products, the ranking metrics against a brute-force reading of the fused scores,
and the product questions' split and refusals. Pure logic and small files: no model."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from retrieval.errors import InputError, SourceError
from retrieval.faq import FAQBank, FAQEntry
from retrieval.training.pairs import MINE_BLOCK, mine_near_misses
from retrieval.training.products import (
    PRODUCT_ENTRY,
    better_with_products,
    gather_products,
    rank_metrics,
    with_products,
)


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


FAQ = {"mrr_at_10": 0.8, "overall_accuracy": 0.7}


@pytest.mark.parametrize(
    ("faq", "products", "promoted"),
    [
        ({}, {"mrr_at_10": 0.61}, True),  # products better, FAQ the same
        ({"mrr_at_10": 0.81}, {}, True),  # FAQ better, products the same
        ({}, {}, False),  # nothing better
        ({"overall_accuracy": 0.69}, {"mrr_at_10": 0.9}, False),  # products up, FAQ down
        ({"mrr_at_10": 0.9}, {"mrr_at_10": 0.59}, False),  # FAQ up, products down
    ],
)
def test_a_model_that_gains_on_one_side_and_loses_on_the_other_is_not_promoted(
    faq: dict, products: dict, promoted: bool
) -> None:
    current_products = {"mrr_at_10": 0.6}
    assert (
        better_with_products(FAQ | faq, FAQ, current_products | products, current_products)
        is promoted
    )


def test_rank_metrics_match_a_brute_force_reading_of_the_fused_scores() -> None:
    rng = np.random.default_rng(3)
    ids = [f"p{i}" for i in range(15)]
    examples = []
    for _ in range(40):
        dense = {i: float(rng.uniform(-0.2, 0.9)) for i in rng.choice(ids, 12, replace=False)}
        lexical = {i: float(rng.uniform(0, 7)) for i in rng.choice(ids, 6, replace=False)}
        examples.append((dense, lexical, frozenset(rng.choice(ids, 1).tolist())))
    for weight in (0.0, 0.3, 1.0):
        got = rank_metrics(examples, weight)
        hits, rr = 0.0, 0.0
        for dense, lexical, relevant in examples:
            top_lex = max(lexical.values())
            floor = min(dense.values())
            candidates = list(dict.fromkeys(itertools.chain(dense, lexical)))
            fused = {
                i: (1 - weight) * dense.get(i, floor) + weight * lexical.get(i, 0.0) / top_lex
                for i in candidates
            }
            # ties keep the candidates' first appearance (dense first), as the service does
            ranking = sorted(candidates, key=lambda i: -fused[i])[:10]
            ranks = [r for r, i in enumerate(ranking, 1) if i in relevant]
            hits += bool(ranks) and ranks[0] == 1
            rr += 1 / ranks[0] if ranks else 0.0
        assert got["hit_at_1"] == pytest.approx(hits / len(examples))
        assert got["mrr_at_10"] == pytest.approx(rr / len(examples))
        assert got["n_queries"] == len(examples)


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    return _write(
        tmp_path / "catalog.jsonl",
        [{"id": f"tv{i}", "title": f"Samsung UE55NU7{i}00 55 inch TV"} for i in range(10)],
    )


def test_a_seeded_share_of_the_product_questions_is_held_out(catalog: Path) -> None:
    rows = [{"query": f"samsung ue55nu7{i}00 offer", "relevant": [f"tv{i}"]} for i in range(10)]
    rows += [{"query": f"55 inch tv number {i}", "relevant": [f"tv{i}"]} for i in range(10)]
    queries = _write(catalog.parent / "q.jsonl", rows + [{"query": "a sofa", "relevant": []}])
    data = gather_products(catalog, queries, 0.25, seed=0)
    again = gather_products(catalog, queries, 0.25, seed=0)
    other = gather_products(catalog, queries, 0.25, seed=1)
    assert len(data.heldout) == 5 and len(data.anchors) == 15  # the sofa is left out
    assert data.counts["left_out"] == 1 and data.counts["products"] == 10
    assert [q.text for q in data.heldout] == [q.text for q in again.heldout]
    assert [q.text for q in data.heldout] != [q.text for q in other.heldout]
    held = {q.text for q in data.heldout}
    assert not held & {a.text for a in data.anchors}  # held-out questions never train
    assert {a.text for a in data.refit_anchors} == {r["query"] for r in rows}
    # each question is paired with its product's pseudo-entry, whose phrasing is the text
    # the index encodes for it
    anchor = data.anchors[0]
    entry = data.bank.get(anchor.entry_id)
    assert anchor.entry_id.startswith(PRODUCT_ENTRY) and entry is not None
    assert entry.question == "Samsung UE55NU7" + anchor.entry_id[-1] + "00 55 inch TV"
    faq = FAQBank({"returns": FAQEntry(id="returns", answer="Send it back.")})
    merged = with_products(faq, data)
    assert len(merged) == 11 and merged.get("returns") is not None


def test_unknown_products_and_too_few_questions_are_refused(catalog: Path) -> None:
    bad = _write(catalog.parent / "bad.jsonl", [{"query": "a tv", "relevant": ["tv99"]}])
    with pytest.raises(SourceError, match=r"bad\.jsonl:1: .*tv99.*not in the catalog"):
        gather_products(catalog, bad, 0.2, seed=0)
    few = _write(catalog.parent / "few.jsonl", [{"query": "a tv", "relevant": ["tv1"]}] * 3)
    with pytest.raises(InputError, match="too few product questions"):
        gather_products(catalog, few, 0.2, seed=0)


def test_repeated_questions_count_once_and_photos_are_left_out(catalog: Path) -> None:
    image = catalog.parent / "photo.jpg"
    image.write_bytes(b"not read here")
    rows = [{"query": f"samsung ue55nu7{i}00 offer", "relevant": [f"tv{i}"]} for i in range(10)]
    rows += [{"query": f"55 inch tv number {i}", "relevant": [f"tv{i}"]} for i in range(10)]
    rows += [{"query": "Samsung  UE55NU7100 offer", "relevant": ["tv9"]}] * 6  # one question
    rows += [{"query": "is this tv1?", "image": "photo.jpg", "relevant": ["tv1"]}]
    queries = _write(catalog.parent / "q.jsonl", rows)
    for seed in range(8):  # wherever the split falls, one question is never on both sides
        data = gather_products(catalog, queries, 0.5, seed=seed)
        texts = [q.text for q in data.heldout] + [a.text for a in data.anchors]
        assert (
            len(texts) == len(set(texts)) == 20
            and data.counts["repeats"] == 6
            and data.counts["left_out"] == 1
        )
    # the repeats' products were merged: one anchor of the first, the other one related
    merged = next(a for a in data.refit_anchors if a.text == "samsung ue55nu7100 offer")
    assert (merged.entry_id, merged.related) == (PRODUCT_ENTRY + "tv1", (PRODUCT_ENTRY + "tv9",))


def test_near_misses_stay_in_the_anchor_pool_and_skip_its_other_right_answers() -> None:
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(12, 8)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    groups = [f"g{i}" for i in range(12)]
    pools = ["faq"] * 4 + ["products"] * 8
    n = MINE_BLOCK + 5  # across a block boundary
    anchors = docs[rng.integers(0, 12, n)] + 0.05 * rng.normal(size=(n, 8)).astype(np.float32)
    anchor_groups = [groups[i % 12] for i in range(n)]
    anchor_pools = [pools[i % 12] for i in range(n)]
    related = [{groups[(i + 1) % 12]} for i in range(n)]
    near = mine_near_misses(
        anchors,
        anchor_groups,
        docs,
        groups,
        k=3,
        anchor_pools=anchor_pools,
        doc_pools=pools,
        related=related,
    )
    scores = anchors @ docs.T
    for i in range(n):
        allowed = [
            d
            for d in range(12)
            if pools[d] == anchor_pools[i]
            and groups[d] != anchor_groups[i]
            and groups[d] not in related[i]
        ]
        expected = sorted(allowed, key=lambda d: (-scores[i, d], d))[:3]  # brute force
        assert near[i] == expected
