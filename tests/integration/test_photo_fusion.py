"""Fitting the fusion weights on photos that carry words (retrieval/training/photo_fusion.py).

Synthetic features with a known answer: the photo tells the colour, the words tell the
shape, and only both together name the product.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from retrieval.training.fitting import fused_score_matrix, mrr_of_scores
from retrieval.training.photo_fusion import (
    MIN_FUSION_GAIN,
    MIN_FUSION_QUERIES,
    adopted_weights,
    describe_fusion,
    fit_photo_fusion,
    photo_text_scores,
)

# products: (colour, shape); colour lives in the image features, shape in the text
PRODUCTS = [("red", "disc"), ("red", "box"), ("blue", "disc"), ("blue", "box")]
COLOURS, SHAPES = ["red", "blue"], ["disc", "box"]


class WordEncoder:
    """Bag of known words: dimension i counts word i. Enough to make texts comparable."""

    modality = "text"
    id = "test:words"
    VOCAB = ["red", "blue", "disc", "box", "do", "you", "have", "this", "thing"]
    dim = len(VOCAB)

    def encode(self, texts: Sequence[str], **_: object) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().replace("?", "").split():
                if w in self.VOCAB:
                    out[i, self.VOCAB.index(w)] += 1
        return out + 1e-3  # never all-zero


def _colour_features(colour: str, rng: np.random.Generator, noise: float) -> np.ndarray:
    v = np.zeros(8, dtype=np.float32)
    v[COLOURS.index(colour)] = 1.0
    return v + rng.normal(0, noise, 8).astype(np.float32)


def _queries(n: int, seed: int, words: bool = True) -> tuple[np.ndarray, list, list[int]]:
    rng = np.random.default_rng(seed)
    labels = [i % len(PRODUCTS) for i in range(n)]
    photos = np.stack([_colour_features(PRODUCTS[y][0], rng, 0.1) for y in labels])
    texts = [f"do you have this {PRODUCTS[y][1]}?" if words else None for y in labels]
    return photos, texts, labels


def _gallery() -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(99)
    return np.stack([_colour_features(c, rng, 0.0) for c, _ in PRODUCTS]), list(
        range(len(PRODUCTS))
    )


PRODUCT_TEXTS = [f"{c} {s} thing" for c, s in PRODUCTS]


def test_image_scores_take_each_products_best_picture_and_mark_products_without_one() -> None:
    photos = np.eye(3, dtype=np.float32)[[0, 1]]  # one photo like picture 0, one like 1
    gallery = np.eye(3, dtype=np.float32)  # products 0, 0, 2: product 1 has no picture
    words = np.ones((2, 2), dtype=np.float32)
    products = np.ones((3, 2), dtype=np.float32)
    img, txt = photo_text_scores(photos, words, gallery, np.array([0, 0, 2]), products, None)
    assert img[:, 0].tolist() == [1.0, 1.0] and img[:, 2].tolist() == [0.0, 0.0]
    assert np.isnan(img[:, 1]).all() and np.allclose(txt, 1.0)


def test_scores_apply_the_projection_to_photos_and_gallery() -> None:
    photos, texts, _ = _queries(4, 0)
    gallery, owners = _gallery()
    words = WordEncoder().encode(texts)
    products = WordEncoder().encode(PRODUCT_TEXTS)
    img, txt = photo_text_scores(photos, words, gallery, np.array(owners), products, None)
    assert img.shape == txt.shape == (4, 4)
    # a projection that keeps only the noise dimensions changes the image scores
    drop_colour = np.eye(8, dtype=np.float32)[2:]
    img2, txt2 = photo_text_scores(photos, words, gallery, np.array(owners), products, drop_colour)
    assert not np.allclose(img, img2) and np.array_equal(txt, txt2)
    # the photo alone cannot tell a disc from a box of its colour
    assert np.allclose(img[0, 0], img[0, 1], atol=0.05)


def test_fitted_weights_use_both_modalities_and_beat_a_lopsided_configuration() -> None:
    photos, texts, labels = _queries(40, 1)
    gallery, owners = _gallery()
    out = fit_photo_fusion(
        photos, texts, labels, gallery, owners, PRODUCT_TEXTS, None, WordEncoder(), (1.0, 0.0)
    )
    assert out["fitted"] and out["better"] and out["n_queries"] == 40
    assert adopted_weights(out) == {
        "image_weight": out["image_weight"],
        "text_weight": out["text_weight"],
    }
    assert describe_fusion(out).startswith(f"fitted A {out['image_weight']:.3f}")
    assert "configured weights stay" not in describe_fusion(out)
    a, b = out["image_weight"], out["text_weight"]
    assert a**2 + b**2 == pytest.approx(1.0, abs=1e-5) and 0 < a < 1 and 0 < b < 1
    assert out["hit_at_1"] == 1.0 and out["mrr_at_10"] == 1.0  # colour x shape: all right
    assert out["configured"]["hit_at_1"] < 0.75  # the image alone: the shape is a guess
    # the recorded MRR is what the weights give on the same scores
    words, products = WordEncoder().encode(texts), WordEncoder().encode(PRODUCT_TEXTS)
    img, txt = photo_text_scores(photos, words, gallery, np.array(owners), products, None)
    rel = np.eye(4, dtype=bool)[labels]
    assert mrr_of_scores(fused_score_matrix(img, txt, a * a), rel) == pytest.approx(1.0)


def test_a_gain_under_the_noise_guard_keeps_the_configured_weights() -> None:
    photos, texts, labels = _queries(40, 1)
    gallery, owners = _gallery()
    args = (photos, texts, labels, gallery, owners, PRODUCT_TEXTS, None, WordEncoder(), (1, 0))
    out = fit_photo_fusion(*args)
    gain = out["mrr_at_10"] - out["configured"]["mrr_at_10"]
    assert out["better"] and gain >= MIN_FUSION_GAIN
    guarded = fit_photo_fusion(*args, min_gain=gain + 0.001)
    assert not guarded["better"] and guarded["image_weight"] == out["image_weight"]
    assert adopted_weights(guarded) == {}
    assert describe_fusion(guarded).endswith("so the configured weights stay")


def test_configured_weights_that_rank_as_well_are_kept() -> None:
    photos, texts, labels = _queries(40, 2)
    gallery, owners = _gallery()
    out = fit_photo_fusion(
        photos, texts, labels, gallery, owners, PRODUCT_TEXTS, None, WordEncoder(), (1.0, 1.0)
    )
    assert out["fitted"] and not out["better"]  # 50/50 is already perfect here
    assert out["configured"]["mrr_at_10"] == out["mrr_at_10"] == 1.0


def test_too_few_photos_with_words_leave_the_weights_alone() -> None:
    photos, texts, labels = _queries(MIN_FUSION_QUERIES + 10, 3)
    texts = [t if i < MIN_FUSION_QUERIES - 1 else None for i, t in enumerate(texts)]
    gallery, owners = _gallery()

    class Unused(WordEncoder):
        def encode(self, texts: Sequence[str], **_: object) -> np.ndarray:
            raise AssertionError("nothing to encode")

    out = fit_photo_fusion(
        photos, texts, labels, gallery, owners, PRODUCT_TEXTS, None, Unused(), (0.5, 0.5)
    )
    assert not out["fitted"] and out["n_queries"] == MIN_FUSION_QUERIES - 1
    assert f"needs at least {MIN_FUSION_QUERIES}" in out["reason"]
    assert adopted_weights(out) == {} and describe_fusion(out).startswith("not fitted: ")
    none = fit_photo_fusion(
        photos, [None] * len(texts), labels, gallery, owners, PRODUCT_TEXTS, None, Unused(), (1, 1)
    )
    assert none["n_queries"] == 0 and describe_fusion(none) is None  # photos without words


def test_a_product_without_images_is_scored_by_its_text() -> None:
    photos, texts, labels = _queries(40, 4)
    gallery, owners = _gallery()
    keep = [i for i, o in enumerate(owners) if o != 3]  # blue box has no picture
    out = fit_photo_fusion(
        photos,
        texts,
        labels,
        gallery[keep],
        [owners[i] for i in keep],
        PRODUCT_TEXTS,
        None,
        WordEncoder(),
        (0.5, 0.5),
    )
    assert out["fitted"] and np.isfinite(out["mrr_at_10"]) and out["mrr_at_10"] > 0.5
