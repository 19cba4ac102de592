"""Image adaptation: the learned projection of CNN features (retrieval/training/image.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.errors import InputError, SourceError
from retrieval.training.image import (
    MIN_PHOTOS,
    ProjectionConfig,
    fit_image_projection,
    heldout_mask,
    learn_projection,
    nearest_product_hits,
    pca_directions,
)

from drawn import SHAPES, drawing, drawn_shop_files
from helpers import write_jsonl

# ---- pure parts, synthetic features ---------------------------------------------------------


def test_heldout_mask_is_a_seeded_contiguous_slice_per_product() -> None:
    labels = [0] * 10 + [1] * 20 + [2] * 1
    mask = heldout_mask(labels, 0.2, seed=3)
    assert mask[:10].sum() == 2 and mask[10:30].sum() == 4
    assert not mask[30]  # a product's only photo stays in training
    for lo, hi in ((0, 10), (10, 30)):
        held = np.flatnonzero(mask[lo:hi])
        assert held.max() - held.min() == len(held) - 1  # one run, not scattered
    assert np.array_equal(mask, heldout_mask(labels, 0.2, seed=3))
    assert any(not np.array_equal(mask, heldout_mask(labels, 0.2, seed=s)) for s in range(4, 9))


def test_pca_directions_are_orthonormal_unique_and_padded() -> None:
    x = np.random.default_rng(0).normal(size=(30, 8)) * np.arange(1, 9)
    p = pca_directions(x, 5)
    assert p.shape == (5, 8)
    np.testing.assert_allclose(p @ p.T, np.eye(5), atol=1e-5)
    assert np.abs(p[0]).argmax() == 7  # the direction of largest variance first
    np.testing.assert_allclose(pca_directions(-x, 5), p, atol=1e-5)  # signs fixed
    padded = pca_directions(x[:3], 5)
    assert padded.shape == (5, 8) and not padded[3:].any()


def test_nearest_product_hits_groups_items_per_product() -> None:
    items = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    item_labels = [0, 1, 1]  # product 1 has two images; its best one counts
    queries = np.array([[1.0, 0.1], [0.6, 0.8], [-1.0, 0.0]])
    hits = nearest_product_hits(queries, [1, 1, 0], items, item_labels)
    # query 0 is nearest product 0 (rank 2 for product 1); query 1 hits product 1;
    # query 2 points away from both: product 1's [0, 1] image (cos 0) beats product 0 (cos -1)
    assert hits == {"hit_at_1": 1 / 3, "hit_at_5": 1.0}


def _confusing_features(n_per: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Photos whose class signal is small next to a shared 'shelf' nuisance: raw cosine
    nearest neighbours follow the nuisance, the class lives in a low-variance subspace."""
    rng = np.random.default_rng(seed)
    n_classes, d = 6, 32
    class_dirs = np.zeros((n_classes, d))
    class_dirs[np.arange(n_classes), np.arange(n_classes)] = 1.0  # dims 0-5 carry the class
    labels = np.repeat(np.arange(n_classes), n_per)
    nuisance = rng.normal(size=(len(labels), d - n_classes)) * 3.0  # dims 6-31: background
    photos = np.hstack([np.zeros((len(labels), n_classes)), nuisance])
    photos += class_dirs[labels] + rng.normal(size=photos.shape) * 0.05
    anchors = class_dirs + 0.05 * rng.normal(size=class_dirs.shape)  # clean catalog pictures
    return photos.astype(np.float32), labels, anchors.astype(np.float32)


def test_learned_projection_separates_classes_the_raw_features_confuse() -> None:
    photos, labels, anchors = _confusing_features(60, seed=0)
    test_x, test_y, _ = _confusing_features(10, seed=1)
    anchor_labels = np.arange(len(anchors))
    raw = nearest_product_hits(test_x, test_y, anchors, anchor_labels)
    # one model (averaging several is the next test's)
    config = ProjectionConfig(
        dim=32, epochs=40, batch_size=64, learning_rate=0.02, patience=40, threads=1, members=1
    )
    result = learn_projection(photos, labels, anchors, anchor_labels, config)
    p = result.matrix
    assert p.shape == (32, 32) and p.dtype == np.float32
    learned = nearest_product_hits(test_x @ p.T, test_y, anchors @ p.T, anchor_labels)
    assert raw["hit_at_1"] < 0.6
    assert learned["hit_at_1"] >= 0.9
    assert result.heldout_after["catalog_hit_at_1"] > result.heldout_before["catalog_hit_at_1"]
    # deterministic given the seed; another seed gives another (also good) matrix
    again = learn_projection(photos, labels, anchors, anchor_labels, config)
    np.testing.assert_array_equal(again.matrix, p)
    other = learn_projection(
        photos, labels, anchors, anchor_labels, ProjectionConfig(**{**config.__dict__, "seed": 1})
    )
    assert not np.array_equal(other.matrix, p)


def test_members_average_the_matrices_of_consecutive_seeds() -> None:
    photos, labels, anchors = _confusing_features(30, seed=0)
    base = {"dim": 32, "epochs": 8, "batch_size": 64, "learning_rate": 0.02, "threads": 1}
    base["heldout_fraction"] = 0.0  # every member trains on the same photos, for all epochs

    def fit(seed: int, members: int):  # noqa: ANN202
        config = ProjectionConfig(**base, seed=seed, members=members)
        return learn_projection(photos, labels, anchors, np.arange(len(anchors)), config)

    singles = [fit(seed, 1).matrix for seed in (3, 4, 5)]
    averaged = fit(3, 3)
    assert not np.array_equal(singles[0], singles[1])  # the seeds differ ...
    np.testing.assert_allclose(averaged.matrix, np.mean(singles, axis=0), atol=1e-6)  # ... P = mean
    assert averaged.member_best_epochs == (8, 8, 8) and averaged.best_epoch == 8


def test_cached_features_are_still_subject_to_the_image_limits(tmp_path: Path) -> None:
    """A photo whose vector is cached is judged by today's limits, as an uncached one is:
    the projection and the CNN fine-tuning (which always decodes) then skip the same
    photos, and so hold out the same ones."""
    from retrieval.training.image_features import FeatureCache, encode_image_files

    from fakes import ColourImageEncoder

    small, large = tmp_path / "small.png", tmp_path / "large.png"
    Image.new("RGB", (40, 40), "red").save(small)
    Image.new("RGB", (100, 100), "blue").save(large)

    class Counting(ColourImageEncoder):
        calls = 0

        def encode(self, items, **kw):  # noqa: ANN001, ANN003
            Counting.calls += len(items)
            return super().encode(items, **kw)

    encoder = Counting()

    def run(max_pixels: int) -> tuple[np.ndarray, list[Path]]:
        cache = FeatureCache(tmp_path / "cache", encoder.id)
        return encode_image_files(
            [small, large], encoder, max_bytes=10**6, max_pixels=max_pixels, cache=cache
        )

    vectors, bad = run(max_pixels=10**6)
    assert vectors.shape == (2, 12) and bad == [] and Counting.calls == 2
    vectors, bad = run(max_pixels=50 * 50)  # both cached now; the large one is over the limit
    assert bad == [large] and Counting.calls == 2  # nothing encoded again
    assert np.allclose(vectors, encoder.encode([Image.open(small)]))
    large.unlink()  # a photo gone since the file was listed is skipped, not raised
    vectors, bad = run(max_pixels=10**6)
    assert bad == [large] and vectors.shape == (1, 12)


def test_learn_projection_without_catalog_images_uses_the_photos_alone() -> None:
    photos, labels, _ = _confusing_features(60, seed=0)
    test_x, test_y, _ = _confusing_features(10, seed=1)
    config = ProjectionConfig(
        dim=32, epochs=40, batch_size=64, learning_rate=0.02, patience=40, threads=1, members=1
    )
    p = learn_projection(photos, labels, None, None, config).matrix
    raw = nearest_product_hits(test_x, test_y, photos, labels)
    learned = nearest_product_hits(test_x @ p.T, test_y, photos @ p.T, labels)
    assert learned["hit_at_1"] > raw["hit_at_1"] + 0.2


# ---- bad input (refused before any model loads) ---------------------------------------------


def _picture(path: Path, colour: tuple[int, int, int]) -> str:
    Image.new("RGB", (64, 64), colour).save(path)
    return path.name


@pytest.fixture()
def tiny_shop(tmp_path: Path) -> dict[str, Path]:
    catalog = [
        {"id": "red", "title": "Red thing", "image": _picture(tmp_path / "red.png", (200, 0, 0))},
        {
            "id": "blue",
            "title": "Blue thing",
            "image": _picture(tmp_path / "blue.png", (0, 0, 200)),
        },
    ]
    photo = _picture(tmp_path / "photo.png", (180, 20, 20))
    return {
        "dir": tmp_path,
        "catalog": write_jsonl(tmp_path / "catalog.jsonl", catalog),
        "photo": tmp_path / photo,
        "out": tmp_path / "projection.npy",
    }


def _settings(tmp_path: Path):  # noqa: ANN202
    from retrieval.settings import load_settings

    return load_settings(None, data_dir=tmp_path / "var")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"image": "photo.png", "relevant": ["red"]}] * 5, f"needs at least {MIN_PHOTOS} photos"),
        (
            [{"image": "photo.png", "relevant": ["red"]}] * MIN_PHOTOS,
            "at least 2 products",
        ),
        (
            [
                {"image": "photo.png", "relevant": ["red"]},
                {"image": "photo.png", "relevant": ["green"]},
            ],
            r"photos.jsonl:2: field 'relevant': unknown id 'green'",
        ),
        (
            [
                {"image": "photo.png", "relevant": ["red"]},
                {"image": "gone.png", "relevant": ["red"]},
            ],
            r"photos.jsonl:2: field 'image': image file 'gone.png' not found",
        ),
        (
            [{"image": "photo.png", "relevant": ["red", "blue"]}],
            r"photos.jsonl:1: field 'relevant': a training photo must name exactly one product",
        ),
    ],
    ids=["too-few", "one-product", "unknown-product", "missing-file", "two-products"],
)
def test_bad_photo_files_are_refused_and_leave_the_old_projection(
    tiny_shop: dict[str, Path], rows: list[dict], message: str
) -> None:
    photos = write_jsonl(tiny_shop["dir"] / "photos.jsonl", rows)
    np.save(tiny_shop["out"], np.eye(3, dtype=np.float32))
    before = tiny_shop["out"].read_bytes()
    with pytest.raises((InputError, SourceError), match=message):
        fit_image_projection(
            tiny_shop["catalog"],
            photos,
            tiny_shop["out"],
            settings=_settings(tiny_shop["dir"]),
            progress=False,
        )
    assert tiny_shop["out"].read_bytes() == before
    assert sorted(p.name for p in tiny_shop["dir"].iterdir() if p.name.startswith(".")) == []


# ---- the real packaged CNN on generated pictures --------------------------------------------


# Every photo costs the real CNN about 0.1 s on two cores: the photos are as few as the
# tests allow, and the evaluations answer each query once (--latency-sample 0; that the
# timed answers equal the batch ones is test_query_path.py's and test_retriever.py's).
NO_TIMING = ["--latency-sample", "0"]


@pytest.fixture()
def drawn_shop(tmp_path: Path) -> dict[str, Path]:
    """20 photos (MIN_PHOTOS, five of each product) and 12 query photos."""
    return drawn_shop_files(tmp_path, n_train=5, n_queries=3)


def _eval_hit1(shop: dict[str, Path], capsys: pytest.CaptureFixture) -> float:
    from retrieval.cli import main

    args = ["eval", "products", "--catalog", str(shop["catalog"]), *NO_TIMING]
    assert main([*args, "--queries", str(shop["queries"]), "--json", "--no-progress"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["hit_at_1"]


@pytest.mark.models
@pytest.mark.slow
def test_projection_from_drawn_photos_improves_the_real_retriever(
    drawn_shop: dict[str, Path], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = drawn_shop["dir"] / "var"
    monkeypatch.setenv("RETRIEVAL_DATA_DIR", str(data_dir))
    out = drawn_shop["dir"] / "models" / "projection.npy"
    metrics = fit_image_projection(
        drawn_shop["catalog"],
        drawn_shop["photos"],
        out,
        settings=_settings(drawn_shop["dir"]),
        progress=False,
    )
    matrix = np.load(out)
    assert matrix.shape == (256, 1280) and matrix.dtype == np.float32
    assert metrics["n_photos"] == 20 and metrics["n_skipped_images"] == 1  # the broken jpeg
    assert metrics["n_products"] == 4 and metrics["n_catalog_images"] == 4
    assert metrics["best_epoch"] >= 1
    assert list((data_dir / "cache" / "image-features").glob("*.npz"))  # vectors kept for reruns

    untuned = _eval_hit1(drawn_shop, capsys)
    monkeypatch.setenv("RETRIEVAL_IMAGE_PROJECTION", str(out))
    tuned = _eval_hit1(drawn_shop, capsys)
    assert tuned > untuned


@pytest.mark.models
@pytest.mark.slow
def test_words_beside_the_photos_fit_the_fusion_weights_of_the_eval(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Photos that carry the shopper's words ("do you have this disc?"): ``eval products
    --train`` learns the projection, fits A and B on the photos it held out, and ranks the
    queries with them; with the weights configured it leaves them alone (fits nothing:
    watched, so that the run needs only the 20 photos a projection is learned from).

    The fit's minimum of held-out photos is lowered to 12 here, so that 80 drawn photos do
    (the shipped 20 would need 136, each encoded by the real CNN: 15 s more on 2 cores)."""
    from retrieval.cli import main
    from retrieval.training import image, photo_fusion

    fitted: list[int] = []
    real_fit = image.fit_photo_fusion

    def watched_fit(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        fitted.append(len(args[0]))  # the held-out photos it fits on
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(image, "fit_photo_fusion", watched_fit)
    monkeypatch.setattr(photo_fusion, "MIN_FUSION_QUERIES", 12)
    monkeypatch.setenv("RETRIEVAL_DATA_DIR", str(tmp_path / "var"))
    rng = np.random.default_rng(1)
    catalog, photos, queries = [], [], []
    for pid, (shape, colour) in SHAPES.items():
        image = drawing(tmp_path / f"{pid}.png", shape, colour, rng, photo=False)
        catalog.append({"id": pid, "title": pid.replace("-", " "), "image": image})
    per_product = 20  # 15 % held out: 3 photos of each of 4 products, the lowered minimum
    for i in range(per_product):
        for pid, (shape, colour) in SHAPES.items():
            image = drawing(tmp_path / f"t{i}-{pid}.png", shape, colour, rng, photo=True)
            word = pid.split("-")[1]
            photos.append({"image": image, "relevant": [pid], "query": f"do you have this {word}?"})
    for i in range(3):
        for pid, (shape, colour) in SHAPES.items():
            image = drawing(tmp_path / f"q{i}-{pid}.png", shape, colour, rng, photo=True)
            word = pid.split("-")[1]
            queries.append({"image": image, "relevant": [pid], "query": f"any {word} like this?"})
    assert heldout_mask([i % 4 for i in range(len(photos))], 0.15, 0).sum() == 12
    args = [
        "eval",
        "products",
        "--catalog",
        str(write_jsonl(tmp_path / "catalog.jsonl", catalog)),
        "--queries",
        str(write_jsonl(tmp_path / "queries.jsonl", queries)),
        "--train",
        str(write_jsonl(tmp_path / "photos.jsonl", photos)),
        "--no-progress",
        "--json",
        *NO_TIMING,
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("fusion weights: A ") for line in printed)
    out = json.loads(printed[-1])
    used = out["fusion"]
    assert used["image_weight"] ** 2 + used["text_weight"] ** 2 == pytest.approx(1.0)
    assert out["fusion_weights"].startswith("fitted A ")
    assert " on 12 held-out photos with words: " in out["fusion_weights"]
    if out["fusion_weights"].endswith("so the configured weights stay"):
        assert used["image_weight"] == pytest.approx(np.sqrt(0.5))
    else:
        assert used["image_weight"] != pytest.approx(np.sqrt(0.5))
    assert out["hit_at_1"] >= 0.75  # colour from the photo, shape from the words
    assert fitted == [12]

    # configured: the first five photos of each product (20, MIN_PHOTOS) learn the projection
    monkeypatch.setenv("RETRIEVAL_IMAGE_WEIGHT", "0.3")
    args[args.index("--train") + 1] = str(write_jsonl(tmp_path / "few.jsonl", photos[:20]))
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["image_projection"] == "learned on TRAIN (20 photos)"
    assert out["fusion_weights"] == "configured"
    assert out["fusion"]["image_weight"] == pytest.approx(0.3 / np.hypot(0.3, 0.5))
    assert fitted == [12]  # nothing fitted this time


def test_modules_export_what_they_define() -> None:
    from retrieval.training import image, image_features, photo_fusion

    for mod in (image, image_features, photo_fusion):
        assert mod.__all__ and all(hasattr(mod, name) for name in mod.__all__), mod.__name__
