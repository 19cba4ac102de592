"""One ``retrieval train`` run: data in, a new model version out, promoted if it is better.

1. Read the FAQ bank, the labelled training questions, the held-out questions (or a seeded
   share of the training ones) and the agents' feedback; refuse too little data
   (:mod:`.data`).
2. In ``data_dir/models/.tmp-<id>``: fine-tune the text encoder, fit its thresholds on
   held-out, and judge it against the current model (:mod:`.compare`); with ``refit``,
   train the same recipe again on all the data and keep that model. With ``folds`` k > 1,
   cross-validate instead: train once per fold without its questions, fit the thresholds
   and judge on all the out-of-fold scores, then train the model kept on all the data
   (:mod:`.candidate`). With product questions the model also learns product matching,
   and is judged on held-out product questions too (:mod:`.products`).
3. Rename the folder into place (manifest last) and record the version in SQL.
4. Promote it when the rule holds (or ``force``): ``PROMOTED.json`` names it and a full
   re-index follows; a re-index that fails puts the previous promotion back
   (:mod:`.promotion`).

This module runs those steps in order, under the models folder's lock (:func:`train`).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from ..errors import InputError, RetrievalError
from ..settings import Settings
from . import versions
from .candidate import build_version
from .data import gather, gather_folds
from .options import TrainOptions
from .products import gather_products
from .promotion import promote

__all__ = ["TrainReport", "TrainingError", "train"]

log = logging.getLogger(__name__)


class TrainingError(RetrievalError):
    """A training run that could not finish; nothing it wrote is kept or promoted."""


@dataclass(frozen=True)
class TrainReport:
    manifest: dict[str, Any]
    promoted: bool
    reason: str
    reindexed: list[str] = field(default_factory=list)


def train(
    settings: Settings,
    engine: Engine | None,
    options: TrainOptions,
    *,
    reload_settings: Callable[[], Settings] | None = None,
) -> TrainReport:
    """Run the whole pipeline (see the module docstring). ``reload_settings`` rebuilds the
    settings after a promotion, for the re-index (default: ``settings`` with the version's)."""
    if options.product_queries_path is not None and options.folds > 1:
        raise InputError(
            "--product-queries is judged on one held-out share: it cannot be combined with --folds"
        )
    folds = (
        gather_folds(settings, engine, options)
        if options.folds > 1
        else [gather(settings, engine, options)]
    )
    products = None
    if options.product_queries_path is not None:
        products = gather_products(
            options.catalog_path or settings.catalog_path,
            options.product_queries_path,
            options.heldout_share,
            options.text.seed,
        )
    with versions.locked(settings.data_dir):
        for name in versions.clean_orphans(settings.data_dir):
            log.warning("removed %s, left by a training run that did not finish", name)
        model_id = versions.new_model_id()
        t0 = time.perf_counter()
        staging = versions.staging_dir(settings.data_dir, model_id)
        try:
            manifest = build_version(settings, options, staging, model_id, folds, products)
            manifest["seconds"] = round(time.perf_counter() - t0, 1)
            versions.finalize(staging, manifest)
        except OSError as exc:
            raise TrainingError(
                f"cannot write model version {model_id} under {staging.parent}: "
                f"{exc.strerror or exc}; nothing was kept or promoted"
            ) from None
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        if engine is not None:
            versions.record(engine, manifest, "trained")
        if not options.promote:
            return TrainReport(manifest, False, "not promoted (--no-promote)")
        if not (manifest["metrics"]["better"] or options.force):
            return TrainReport(manifest, False, "not promoted: not better than the current model")
        try:
            reindexed = promote(
                settings,
                engine,
                manifest,
                reindex=options.reindex,
                reload_settings=reload_settings,
                progress=options.progress,
            )
        except OSError as exc:
            raise TrainingError(
                f"cannot promote model version {model_id}: {exc.strerror or exc}; it is kept "
                f"(`retrieval models rollback {model_id}` promotes it later)"
            ) from None
        why = "forced" if options.force and not manifest["metrics"]["better"] else "better"
        return TrainReport(manifest, True, f"promoted ({why})", reindexed)
