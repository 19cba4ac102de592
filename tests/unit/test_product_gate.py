"""Products only where they belong (retrieval.product_gate): the threshold's maths against
brute force, the gate on stand-in indexes, and what the evaluations report about it. The demo
service through HTTP: tests/integration/test_product_gate_http.py."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.fusion import Fusion, fuse
from retrieval.index import IndexParams, VectorIndex
from retrieval.indexformat import TEXT_ONLY, TEXT_VIEW
from retrieval.product_gate import (
    ProductGate,
    calibrate_text_gate,
    faq_side_scores,
    gate_threshold,
    photo_sure_level,
)

PARAMS = IndexParams(16, 100, 64)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("false_show", [0.0, 0.05, 0.1, 0.5, 1.0])
def test_the_threshold_is_the_quantile_of_the_faq_side_never_below_the_floor(
    false_show: float,
) -> None:
    rng = np.random.default_rng(1)
    scores = rng.uniform(-0.2, 0.8, 501)
    t = gate_threshold(scores, false_show=false_show, floor=-1.0)
    # brute force: the share of FAQ-side scores at or above t is about false_show
    above = np.mean(scores > t)
    assert above <= false_show + 1e-9
    assert np.mean(scores >= t) >= false_show - 1 / len(scores)
    assert gate_threshold(scores, false_show=false_show, floor=0.9) == 0.9
    assert gate_threshold(np.zeros(0), false_show=false_show, floor=0.3) == 0.3


class _Match:
    def __init__(self, score: float, text_score: float | None) -> None:
        self.score, self.text_score = score, text_score


def test_the_gate_shows_matches_by_its_measure() -> None:
    text = ProductGate(0.4, 0.5, "text cosine", "test")
    matches = [_Match(0.9, 0.5), _Match(0.8, 0.3), _Match(0.2, 0.45)]
    assert text.about_products
    assert text.shown(matches) == [matches[0], matches[2]]  # text cosine, ranked order kept
    fused = ProductGate(0.4, 0.2, "fused score", "test")
    assert not fused.about_products
    assert fused.shown(matches) == matches[:2]
    assert not ProductGate(0.4, None, "text cosine", "test").about_products


def _indexes(rng: np.random.Generator, dim: int = 16):  # noqa: ANN202
    products = VectorIndex(dim, PARAMS, meta={"kind": "products", "text_encoder": "t"})
    view = VectorIndex(dim, PARAMS, meta={"kind": "products-text"})
    pvecs = _unit(rng.standard_normal((40, dim)))
    view.add([(f"p{i}", "title") for i in range(40)], pvecs)
    products.companions[TEXT_VIEW] = view
    faq = VectorIndex(dim, PARAMS, meta={"kind": "faq", "text_encoder": "t"})
    fvecs = _unit(rng.standard_normal((30, dim)))
    keys = [(f"e{i // 3}", "answer" if i % 3 == 2 else f"example{i % 3}") for i in range(30)]
    faq.add(keys, fvecs)
    return faq, products, pvecs, fvecs, keys


def test_faq_side_scores_are_the_best_product_cosines_of_the_phrasings() -> None:
    rng = np.random.default_rng(2)
    faq, products, pvecs, fvecs, keys = _indexes(rng)
    got = np.sort(faq_side_scores(faq, products.companions[TEXT_VIEW]))
    questions = np.array([v for v, k in zip(fvecs, keys, strict=True) if k[1] != "answer"])
    brute = np.sort((questions @ pvecs.T).max(axis=1))  # answers are not questions
    assert got.shape == brute.shape == (20,)
    assert np.allclose(got, brute, atol=1e-4)
    sampled = faq_side_scores(faq, products.companions[TEXT_VIEW], sample=7)
    assert len(sampled) == 7
    assert all(np.isclose(brute, v, atol=1e-4).any() for v in sampled)


def test_calibration_falls_back_to_the_floor_and_says_why() -> None:
    rng = np.random.default_rng(3)
    faq, products, _, _, _ = _indexes(rng)
    threshold, source = calibrate_text_gate(faq, products, false_show=0.1, floor=-1.0)
    assert threshold > -1.0 and source.startswith("calibrated: 90% of 20 FAQ phrasings")
    high, source = calibrate_text_gate(faq, products, false_show=0.1, floor=0.99)
    assert high == 0.99 and source.startswith("product_answer_threshold")
    faq.meta["text_encoder"] = "another model"
    other, source = calibrate_text_gate(faq, products, false_show=0.1, floor=0.2)
    assert other == 0.2 and "no FAQ in the product text space" in source


def test_the_evaluations_report_how_often_matches_are_shown() -> None:
    from types import SimpleNamespace

    from retrieval.evaluation.runner import gate_info

    shown = ProductGate(0.35, 0.6, "text cosine", "calibrated")
    hidden = ProductGate(0.35, 0.1, "text cosine", "calibrated")
    none = ProductGate(0.35, None, "text cosine", "calibrated")  # no product at all: not counted
    results = [SimpleNamespace(product_gate=g) for g in (shown, hidden, hidden, none)]
    info = gate_info(results)  # type: ignore[arg-type]
    assert info["product_gate"]["shown"] == pytest.approx(1 / 3)
    assert info["product_gate"]["thresholds"] == ["0.3500 (text cosine: calibrated)"]
    assert gate_info([SimpleNamespace(product_gate=None)]) == {}  # type: ignore[list-item]


def test_the_photo_sure_level_is_the_quantile_of_each_pictures_nearest_other_product() -> None:
    rng = np.random.default_rng(5)
    fusion = Fusion(image_dim=8, text_dim=6, image_weight=0.6, text_weight=0.8)
    # 40 products, some with two pictures, a few without any (text-only rows)
    keys, images, texts = [], [], []
    for i in range(40):
        n_pictures = 0 if i % 10 == 9 else 1 + (i % 3 == 0)
        for j in range(n_pictures):
            keys.append((f"p{i}", f"img{j}"))
            images.append(rng.standard_normal(8))
            texts.append(rng.standard_normal(6))
        if not n_pictures:
            keys.append((f"p{i}", TEXT_ONLY))
            images.append(np.zeros(8))
            texts.append(rng.standard_normal(6))
    images, texts = np.array(images, np.float32), np.array(texts, np.float32)
    fused = fuse(images, texts, fusion)
    index = VectorIndex(fusion.dim, PARAMS)
    index.add(keys, fused)
    level, source = photo_sure_level(index, fusion, quantile=0.9)
    # brute force: each picture's best image cosine to a picture of another product
    unit = _unit(images[[k[1] != TEXT_ONLY for k in keys]] + 0.0)
    owners = [k[0] for k in keys if k[1] != TEXT_ONLY]
    cos = unit @ unit.T
    best = [
        max(cos[i, j] for j in range(len(owners)) if owners[j] != owners[i])
        for i in range(len(owners))
    ]
    assert level == pytest.approx(float(np.quantile(best, 0.9)), abs=1e-4)
    assert "calibrated: 90% of" in source and str(len(owners)) in source
    assert photo_sure_level(index, fusion, quantile=0.5)[0] < level
    # a picture reused by another product (a variant) is not its rival: the next one is
    reused = VectorIndex(fusion.dim, PARAMS)
    reused.add(keys + [("copy-of-p0", "img0")], np.concatenate([fused, fused[:1]]))
    level_reused, _ = photo_sure_level(reused, fusion, quantile=0.9)
    assert level_reused < 0.99
    # no image weight: photos are not matched by their picture, so no level
    no_image = Fusion(image_dim=8, text_dim=6, image_weight=0.0, text_weight=1.0)
    assert photo_sure_level(index, no_image)[0] is None
    # fewer than two products with a picture: never unsure
    lonely = VectorIndex(fusion.dim, PARAMS)
    lonely.add([("a", "img0"), ("b", TEXT_ONLY)], fuse(images[:2] * [[1], [0]], texts[:2], fusion))
    assert photo_sure_level(lonely, fusion) == (
        None,
        "none (fewer than two products have a picture)",
    )
