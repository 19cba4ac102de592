"""What a promoted model version supplies to the settings."""

from __future__ import annotations

from pathlib import Path

from retrieval.settings import load_settings
from retrieval.training.fitting import ThresholdFit
from retrieval.training.pipeline import promoted_settings

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
