"""``retrieval eval products`` end to end with the real packaged models on a tiny catalog."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.cli import main
from retrieval.training.image import MIN_PHOTOS

from drawn import drawn_shop_files

PRODUCTS = {
    "banana": ("Organic Bananas", "Yellow bananas, sweet and ripe.", (230, 200, 40)),
    "tomato": ("Tomatoes", "Red vine tomatoes for salads.", (200, 30, 30)),
    "cucumber": ("Cucumber", "A long green cucumber.", (40, 150, 60)),
    "milk": ("Oat milk", "A carton of oat drink, one litre.", (235, 235, 240)),
}


def photo(path: Path, colour: tuple[int, int, int], seed: int, stripes: bool) -> str:
    """A noisy picture of a colour (with stripes for half the products)."""
    rng = np.random.default_rng(seed)
    a = np.clip(np.array(colour) + rng.normal(0, 18, (96, 96, 3)), 0, 255).astype(np.uint8)
    if stripes:
        a[::12] = 20
    Image.fromarray(a).save(path)
    return path.name


@pytest.fixture()
def shop(tmp_path: Path) -> dict[str, Path]:
    catalog, queries, train = [], [], []
    for i, (pid, (title, desc, colour)) in enumerate(PRODUCTS.items()):
        stripes = i % 2 == 1
        catalog.append(
            {
                "id": pid,
                "title": title,
                "description": desc,
                "image": photo(tmp_path / f"{pid}.png", colour, i, stripes),
            }
        )
        queries.append(
            {"image": photo(tmp_path / f"q-{pid}.png", colour, 100 + i, stripes), "relevant": [pid]}
        )
        train.append(
            {"image": photo(tmp_path / f"t-{pid}.png", colour, 200 + i, stripes), "relevant": [pid]}
        )
    queries += [
        {"query": "I want some bananas", "relevant": ["banana"]},
        {"query": "red tomatoes for my salad", "relevant": ["tomato"]},
        {"query": "oat drink", "image": "q-milk.png", "relevant": ["milk"]},
    ]
    train.append({"query": "havre dryck", "relevant": ["milk"]})
    paths = {}
    for name, rows in (("catalog", catalog), ("queries", queries), ("train", train)):
        paths[name] = tmp_path / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return paths


@pytest.mark.models
@pytest.mark.slow
def test_eval_products_text_photo_and_training_examples(
    shop: dict[str, Path], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # no promoted model version of the checkout's data folder may supply settings here
    monkeypatch.setenv("RETRIEVAL_DATA_DIR", str(shop["catalog"].parent / "var"))
    args = [
        "eval",
        "products",
        "--catalog",
        str(shop["catalog"]),
        "--queries",
        str(shop["queries"]),
        "--baseline",
        "exact",
        "--baseline",
        "bm25",
        "--json",
        "--no-progress",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    plain = json.loads(out[-1])
    assert plain["n_queries"] == 7 and plain["n_products"] == 4 and plain["n_vectors"] == 4
    assert plain["dataset"] == shop["queries"].resolve().parent.name  # not a baseline's name
    assert plain["hit_at_1"] >= 6 / 7 and plain["recall_at_5"] == 1.0
    assert "overall_accuracy" not in plain  # products have no abstention
    assert plain["baselines"]["exact"]["hit_at_1"] == plain["hit_at_1"]
    # BM25 has no words for the four photo-only queries
    assert plain["baselines"]["bm25"]["hit_at_1"] <= 3 / 7
    # how the photo questions were decided (the photo-only ones and the text-and-photo ones)
    photos = plain["photo_decisions"]
    parts = ("answered_as_sure", "asked_is_it_one_of_these", "nothing_shown")
    assert sum(photos[k] for k in parts) == pytest.approx(1.0, abs=1e-3)
    assert photos["sure_source"].startswith("calibrated: 90% of")
    if photos["answered_as_sure"]:
        assert 0.0 <= photos["sure_first_card_right"] <= 1.0
    assert main(args + ["--train", str(shop["train"])]) == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert trained["n_vectors"] == 8 and trained["n_train_images"] == 4
    assert trained["n_train_texts"] == 0 and trained["n_train_questions"] == 1
    assert trained["hit_at_1"] >= plain["hit_at_1"]
    # one text-only TRAIN question is too few to choose the lexical weight from: said
    assert trained["lexical_weight"].startswith("0.4 (the setting: 1 TRAIN questions")
    # 4 TRAIN photos are too few to learn an image projection from: said, not raised
    assert trained["image_projection"].startswith("none (not learned:")
    assert f"needs at least {MIN_PHOTOS} photos" in trained["image_projection"]


def test_missing_image_in_queries_names_the_line(shop: dict[str, Path], capsys) -> None:  # noqa: ANN001
    bad = shop["queries"].parent / "bad.jsonl"
    bad.write_text('{"image": "nowhere.png", "relevant": ["milk"]}\n', encoding="utf-8")
    code = main(["eval", "products", "--catalog", str(shop["catalog"]), "--queries", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and "bad.jsonl:1: field 'image': image file 'nowhere.png' not found" in err


def test_rasa_is_refused_for_products(shop: dict[str, Path], capsys) -> None:  # noqa: ANN001
    code = main(
        [
            "eval",
            "products",
            "--catalog",
            str(shop["catalog"]),
            "--queries",
            str(shop["queries"]),
            "--baseline",
            "rasa",
        ]
    )
    assert code == 2 and "FAQ evaluations only" in capsys.readouterr().err


@pytest.fixture()
def drawn_shop(tmp_path: Path) -> dict[str, Path]:
    """Drawn products (tests/drawn.py): 20 TRAIN photos (MIN_PHOTOS), 20 query photos."""
    return drawn_shop_files(tmp_path, n_train=5, n_queries=5)


@pytest.mark.models
@pytest.mark.slow
def test_eval_learns_the_image_projection_from_the_train_photos(
    drawn_shop: dict[str, Path],
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """20 TRAIN photos and no configured projection: the eval learns one as ``retrieval train
    --photos`` would (same function, same defaults) and ranks with it; --no-adapt does not.
    Each query is answered once (--latency-sample 0): the real CNN costs about 0.1 s a photo
    on two cores, and the timed answers are no part of what is checked here."""
    from retrieval.settings import load_settings
    from retrieval.training.image import fit_image_projection

    monkeypatch.setenv("RETRIEVAL_DATA_DIR", str(drawn_shop["dir"] / "var"))
    monkeypatch.delenv("RETRIEVAL_IMAGE_PROJECTION", raising=False)
    rows = drawn_shop["photos"].read_text(encoding="utf-8").splitlines()
    train = drawn_shop["dir"] / "train.jsonl"  # the photos without the undecodable one
    train.write_text("".join(r + "\n" for r in rows if "broken" not in r), encoding="utf-8")
    args = ["eval", "products", "--catalog", str(drawn_shop["catalog"])]
    args += ["--queries", str(drawn_shop["queries"]), "--train", str(train), "--no-progress"]
    args += ["--latency-sample", "0"]
    scores = ("hit_at_1", "hit_at_5", "mrr_at_10", "ndcg_at_10")

    def run(*extra: str) -> tuple[dict, list[str]]:
        assert main([*args, *extra, "--json"]) == 0
        out = capsys.readouterr().out.strip().splitlines()
        return json.loads(out[-1]), out

    adapted, out = run()
    assert adapted["image_projection"] == "learned on TRAIN (20 photos)"
    assert "image projection: learned on TRAIN (20 photos)" in out
    # photos without words say nothing about the fusion weights: none fitted, none reported
    assert "fusion_weights" not in adapted and not any(x.startswith("fusion") for x in out)
    assert adapted["fusion"]["image_weight"] == pytest.approx(np.sqrt(0.5))
    plain, _ = run("--no-adapt")
    assert plain["image_projection"] == "none (--no-adapt)"
    assert adapted["n_vectors"] == plain["n_vectors"] == 4 + 20  # the photos join the index
    assert [adapted[k] for k in scores] != [plain[k] for k in scores]  # the projection ranks

    matrix = drawn_shop["dir"] / "projection.npy"
    fit_image_projection(
        drawn_shop["catalog"], train, matrix, settings=load_settings(None), progress=False
    )
    monkeypatch.setenv("RETRIEVAL_IMAGE_PROJECTION", str(matrix))
    configured, _ = run()  # a configured projection wins and nothing is learned
    assert configured["image_projection"] == f"configured ({matrix})"
    assert [configured[k] for k in scores] == [adapted[k] for k in scores]
