"""Promoting a model version: the settings a version supplies once promoted
(:func:`promoted_settings`; a run without ``--photos`` carries the promoted version's image
settings over, :data:`IMAGE_KEYS`), and :func:`promote`, which makes a version (or the
packaged models) the promoted one through ``PROMOTED.json`` and re-indexes, putting the
previous promotion back when the re-index fails.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from ..errors import NotFound
from ..settings import Settings
from . import versions
from .fitting import ThresholdFit
from .photo_fusion import adopted_weights

__all__ = ["IMAGE_KEYS", "promote", "promoted_settings"]

# what --photos learns; a version trained without photos keeps the promoted version's
IMAGE_KEYS = ("image_projection", "image_weights", "image_weight", "text_weight")


def _promoted_image_side(settings: Settings) -> tuple[str | None, dict[str, Any]]:
    """(id, image settings) of the promoted version, which a run without ``--photos``
    carries over: training the text model must not drop the shop's image adaptation."""
    try:
        current = versions.promoted_id(settings.data_dir)
        manifest = versions.read_manifest(settings.data_dir, current) if current else None
    except (NotFound, ValueError):  # a damaged pointer: nothing to carry
        return None, {}
    if manifest is None:
        return None, {}
    kept = {k: v for k, v in manifest.get("settings", {}).items() if k in IMAGE_KEYS}
    return (current if kept else None), kept


def promote(
    settings: Settings,
    engine: Engine | None,
    manifest: dict[str, Any] | None,
    *,
    reindex: bool = True,
    reload_settings: Callable[[], Settings] | None = None,
    progress: bool = False,
) -> list[str]:
    """Make ``manifest``'s version (None: the packaged models) the promoted one and re-index.

    Call while holding :func:`versions.locked`. If the re-index fails, the previous
    promotion is put back and the error raised."""
    from ..reindex import reindex as run_reindex

    try:
        previous_id = versions.promoted_id(settings.data_dir)
        previous = versions.read_manifest(settings.data_dir, previous_id) if previous_id else None
    except (NotFound, ValueError):  # a damaged pointer: nothing worth restoring
        previous = None
    versions.set_promoted(settings.data_dir, manifest)
    lines: list[str] = []
    if reindex:
        fresh = reload_settings() if reload_settings else _overlaid(settings, manifest)
        try:
            summary = run_reindex(fresh, engine, progress=progress, created_by="retrieval train")
        except BaseException:
            versions.set_promoted(settings.data_dir, previous)
            raise
        lines = [r.line() for r in summary.reports]
    if engine is not None:
        if manifest is None:
            versions.retire_all(engine)
        else:
            versions.record(engine, manifest, "promoted")
    return lines


def _overlaid(settings: Settings, manifest: dict[str, Any] | None) -> Settings:
    """``settings`` with the version's values (None: the packaged models). Every promoted
    key the version does not supply goes back to its default: ``settings`` may hold the
    previous version's values (its fine-tuned CNN, say), which must not outlive it."""
    from ..settings import PROMOTED_KEYS

    update = {k: type(settings).model_fields[k].default for k in PROMOTED_KEYS}
    if manifest is not None:
        update.update(manifest["settings"])
    return settings.model_copy(update=update)


def promoted_settings(
    settings: Settings,
    text_model: Path,
    thresholds: ThresholdFit,
    projection: Path | None,
    fusion: dict[str, Any] | None = None,
    image_weights: Path | None = None,
) -> dict[str, Any]:
    """The settings a promoted version supplies. With a calibration file the thresholds are
    left to the re-index that promotion runs: it fits them, and the answer head (whose
    scores are on their own scale), on that file with the new model. Fusion weights come
    with the version only when the fit adopts them (``fusion`` is
    :func:`~.photo_fusion.fit_photo_fusion`'s record, see :func:`~.photo_fusion.adopted_weights`).
    ``image_weights`` is the image CNN the projection was learned on, when not the packaged
    one: a projection only fits the features it was learned on."""
    out: dict[str, Any] = {"text_model": str(text_model)}
    path = settings.faq_calibration_path
    if path is None or not path.exists():
        out.update(
            answer_threshold=round(thresholds.answer_threshold, 6),
            suggest_threshold=round(thresholds.suggest_threshold, 6),
            answer_margin=thresholds.margin,
        )
    if projection is not None:
        out["image_projection"] = str(projection)
    if image_weights is not None:
        out["image_weights"] = str(image_weights)
    out.update(adopted_weights(fusion))
    return out
