"""The image projection shipped beside a catalog (retrieval.settings.catalog_projection): used
for that catalog and image model when none is configured, never for another catalog, another
model or a fine-tuned network, and a configured value (also none) always wins. The demo
catalog's own projection, when present, is read by the fusion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from retrieval.settings import catalog_projection, load_settings

from helpers import DATA

MODEL = "package:efficientnet-lite0"


def _shop(tmp_path: Path, **sidecar: object) -> Path:
    catalog = tmp_path / "products.jsonl"
    catalog.write_text('{"id": "a", "title": "apple"}\n', encoding="utf-8")
    np.save(tmp_path / "image-projection.npy", np.eye(4, 8, dtype=np.float16))
    info = {"catalog": "products.jsonl", "image_model": MODEL, **sidecar}
    (tmp_path / "image-projection.json").write_text(json.dumps(info), encoding="utf-8")
    return catalog


def test_a_projection_beside_its_catalog_is_used(tmp_path: Path) -> None:
    catalog = _shop(tmp_path)
    assert catalog_projection(catalog, MODEL, None) == tmp_path / "image-projection.npy"
    settings = load_settings(None, data_dir=tmp_path / "var", catalog_path=catalog)
    assert settings.effective_image_projection == tmp_path / "image-projection.npy"


@pytest.mark.parametrize(
    ("sidecar", "model", "weights"),
    [
        ({"catalog": "other.jsonl"}, MODEL, None),  # learned for another catalog file
        ({}, "torchvision:resnet50", None),  # another image model
        ({}, MODEL, Path("finetuned.pt")),  # a fine-tuned network: other features
    ],
)
def test_a_projection_for_something_else_is_not(
    tmp_path: Path, sidecar: dict, model: str, weights: Path | None
) -> None:
    catalog = _shop(tmp_path, **sidecar)
    assert catalog_projection(catalog, model, weights) is None


def test_a_broken_or_missing_sidecar_means_no_projection(tmp_path: Path) -> None:
    catalog = _shop(tmp_path)
    (tmp_path / "image-projection.json").write_text("{not json", encoding="utf-8")
    assert catalog_projection(catalog, MODEL, None) is None
    (tmp_path / "image-projection.json").unlink()
    assert catalog_projection(catalog, MODEL, None) is None


def test_a_configured_projection_or_none_wins(tmp_path: Path) -> None:
    catalog = _shop(tmp_path)
    mine = tmp_path / "mine.npy"
    explicit = load_settings(
        None, data_dir=tmp_path / "v", catalog_path=catalog, image_projection=mine
    )
    assert explicit.effective_image_projection == mine
    off = load_settings(None, data_dir=tmp_path / "v", catalog_path=catalog).model_copy(
        update={"image_projection": None}
    )
    assert off.effective_image_projection is None


def test_the_demo_projection_matches_the_demo_catalog_and_the_fusion_reads_it() -> None:
    """The shipped demo projection (scripts/build_demo_projection.py) belongs to the demo
    catalog and the packaged CNN, and the fusion applies it: image vectors shrink to its k."""
    from retrieval.fusion import Fusion
    from retrieval.runtime import make_fusion

    settings = load_settings(None, promoted=False)
    path = settings.effective_image_projection
    assert path is not None and path.resolve() == DATA / "catalog" / "image-projection.npy"
    matrix = np.load(path)
    info = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert list(matrix.shape) == info["shape"] and matrix.shape[1] == 1280
    assert "val" not in info["learned_from"]  # the validation photos stay an evaluation set

    class Dim:
        def __init__(self, dim: int) -> None:
            self.dim = dim

    fusion: Fusion = make_fusion(settings, Dim(384), Dim(1280))  # type: ignore[arg-type]
    assert fusion.image_projection is not None
    assert fusion.image_projection.dtype == np.float32
    assert fusion.image_projection.shape == matrix.shape


def test_an_empty_setting_turns_the_shipped_projection_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = _shop(tmp_path)
    monkeypatch.setenv("RETRIEVAL_IMAGE_PROJECTION", "")
    settings = load_settings(None, data_dir=tmp_path / "v", catalog_path=catalog)
    assert settings.image_projection is None and settings.effective_image_projection is None
