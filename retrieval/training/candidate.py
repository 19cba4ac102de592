"""Building one candidate model version inside its staging folder (:func:`build_version`):
fine-tune the text encoder (once on a held-out split, optionally refitted on all the data;
or once per fold to cross-validate, then on all the data), learn the image side with
``--photos`` (the projection, the fusion weights, with ``--cnn-epochs`` the image CNN),
judge the candidate against the current model (:mod:`.compare`; with product questions also
on held-out product questions, :mod:`.products`) and return the version's manifest. Every
fine-tuning of the text encoder in a run is called from here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..encoders.text import SentenceTransformerEncoder, resolve_text_model
from ..faq import FAQBank
from ..labelled import LabelledQuery
from ..settings import Settings
from . import versions
from .compare import (
    HeldoutScores,
    Judgement,
    better,
    heldout_scores,
    judge_model,
    judge_scores,
    pooled,
)
from .data import TrainingData, _counts
from .options import TrainOptions
from .pairs import Anchor
from .products import ProductData, better_with_products, judge_products, with_products
from .promotion import _promoted_image_side, promoted_settings
from .text import fine_tune_text

__all__ = ["CNN_FILE", "build_version"]

log = logging.getLogger(__name__)

CNN_FILE = "image-cnn.pth"  # a version's fine-tuned image CNN (--cnn-epochs)


def _write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def _data_hash(
    bank: FAQBank,
    anchors: Sequence[Anchor],
    heldout: Sequence[LabelledQuery],
    out_of_scope: Sequence[str] = (),
) -> str:
    h = hashlib.sha256()
    for e in bank:
        h.update(json.dumps(e.to_record(), sort_keys=True, ensure_ascii=False).encode())
    for a in anchors:
        h.update(json.dumps([a.text, a.entry_id, list(a.negatives)], ensure_ascii=False).encode())
    for q in heldout:
        h.update(json.dumps([q.text, sorted(q.relevant)], ensure_ascii=False).encode())
    for text in out_of_scope:
        h.update(json.dumps(text, ensure_ascii=False).encode())
    return h.hexdigest()


def build_version(
    settings: Settings,
    options: TrainOptions,
    staging: Path,
    model_id: str,
    folds: Sequence[TrainingData],
    products: ProductData | None = None,
) -> dict[str, Any]:
    """Everything of one version inside ``staging``; returns its manifest. One element in
    ``folds``: judged on its held-out share; more: cross-validated, see :func:`_cross_validate`.
    ``products`` (one held-out share only): the model also trains on product questions and
    is judged on the held-out ones as well."""
    data = folds[0]
    base_folder, base_id = resolve_text_model(settings.text_model)
    cross: dict[str, Any] | None = None
    refit: dict[str, Any] | None = None
    product_record: dict[str, Any] | None = None
    if len(folds) > 1:
        mine, theirs, runs = _cross_validate(settings, base_folder, folds, staging, options)
        heldout = [q for fold in folds for q in fold.heldout]
        _write_jsonl(staging / "bank.jsonl", [e.to_record() for e in data.bank])
        _write_jsonl(
            staging / "heldout.jsonl",
            [
                {"query": q.text, "relevant": sorted(q.relevant), "fold": i}
                for i, fold in enumerate(folds, 1)
                for q in fold.heldout
            ],
        )
        anchors, out_of_scope = data.refit_anchors, data.refit_out_of_scope
        training = _train_on_all(
            base_folder, data, staging / "text-model", options, "training on all data"
        )["training"]
        counts = _counts(data.bank, anchors, out_of_scope, heldout)
        cross = {"folds": len(folds), "runs": runs}
        candidate = _encoder(staging / "text-model", options)
        image = _image(settings, options, staging, candidate)
    else:
        # judged on the bank without the held-out questions, which would otherwise find
        # themselves among the phrasings
        heldout, anchors, out_of_scope = data.heldout, data.anchors, data.out_of_scope
        bank_path, heldout_path = staging / "bank.jsonl", staging / "heldout.jsonl"
        _write_jsonl(bank_path, [e.to_record() for e in data.training_bank])
        _write_jsonl(
            heldout_path, [{"query": q.text, "relevant": sorted(q.relevant)} for q in heldout]
        )
        result = fine_tune_text(
            base_folder,
            with_products(data.training_bank, products),
            anchors + (products.anchors if products else []),
            staging / "text-model",
            options.text,
            out_of_scope=out_of_scope,
            progress=options.progress,
        )
        training = dataclasses.asdict(result)
        counts = data.counts
        candidate = _encoder(staging / "text-model", options)
        image = _image(settings, options, staging, candidate)
        judged = (data.training_bank, bank_path, heldout, heldout_path)
        current = _encoder(settings.text_model, options)
        mine = judge_model(settings, candidate, *judged)
        theirs = judge_model(settings, current, *judged)
        if products is not None:
            product_record = _judge_products(candidate, current, products, options)
        if options.refit:
            refit = _refit(base_folder, data, staging / "text-model", options, products)
    keep = (
        "hit_at_1",
        "mrr_at_10",
        "recall_at_5",
        "overall_accuracy",
        "abstain_precision",
        "abstain_recall",
        "n_queries",
        "n_in_scope",
    )
    final = versions.models_dir(settings.data_dir).resolve() / model_id
    applied = promoted_settings(
        settings,
        final / "text-model",
        mine.thresholds,
        final / "image-projection.npy" if image is not None else None,
        image.get("fusion") if image is not None else None,
        # the CNN the projection was learned on: this version's, or the one configured
        (final / CNN_FILE if image.get("cnn") else settings.image_weights)
        if image is not None
        else None,
    )
    kept_from, kept = (None, {}) if image is not None else _promoted_image_side(settings)
    applied |= kept
    if product_record is not None:
        applied["lexical_weight"] = product_record["candidate"]["lexical_weight"]
    promotable = better(mine.metrics, theirs.metrics)
    rule = "held-out MRR@10 and overall accuracy not worse, one of them better"
    if product_record is not None:
        promotable = better_with_products(
            mine.metrics,
            theirs.metrics,
            product_record["candidate"],
            product_record["current"],
        )
        rule = (
            "FAQ held-out MRR@10 and overall accuracy and product held-out MRR@10 not worse, "
            "one of them better"
        )
    return {
        "id": model_id,
        "created_at": datetime.now(UTC).isoformat(),
        "path": str(final),
        "base_model": settings.text_model,
        "base_encoder": base_id,
        "data_hash": _data_hash(
            with_products(data.bank, products),
            anchors + (products.anchors if products else []),
            [*heldout, *(products.heldout if products else [])],
            out_of_scope,
        ),
        "seed": options.text.seed,
        "config": dataclasses.asdict(options.text),
        "counts": counts,
        "training": training,
        "refit": refit,
        "cross_validation": cross,
        "settings": applied,
        "image": image,
        # without --photos: the promoted version whose image settings this one keeps
        "image_kept_from": kept_from,
        # with --product-queries: held-out product figures of both models (see .products)
        "products": product_record,
        "metrics": {
            "candidate": {k: mine.metrics.get(k) for k in keep},
            "current": {k: theirs.metrics.get(k) for k in keep} | {"model": settings.text_model},
            "better": promotable,
            "rule": rule,
            "held_out": f"{len(folds)}-fold cross-validation" if cross else "one held-out share",
        },
    }


def _encoder(model: str | Path, options: TrainOptions) -> SentenceTransformerEncoder:
    return SentenceTransformerEncoder(
        str(model), device=options.text.device, threads=options.text.threads
    )


def _image(
    settings: Settings, options: TrainOptions, staging: Path, text_model: SentenceTransformerEncoder
) -> dict[str, Any] | None:
    """With ``--photos``: learn the image projection into ``staging``; photos with words
    also fit the fusion weights, with the text model this version will run. With
    ``--cnn-epochs`` the image CNN is fine-tuned on the photos first (``image-cnn.pth``) and
    the projection is learned on its features."""
    if options.photos_path is None:
        return None
    from .image import fit_image_projection

    encoder, cnn = None, None
    if options.cnn_epochs > 0:
        from ..encoders.base import resolve_device
        from ..encoders.image import CNNImageEncoder
        from .cnn import CNNConfig, fine_tune_image_cnn

        device = resolve_device(options.text.device)
        if device == "cpu" and options.cnn_last_blocks is None:
            log.warning(
                "fine-tuning the whole image CNN on the CPU: about 0.2 s per image of every "
                "step (hours for thousands of photos); a GPU does it in minutes, and "
                "--cnn-last-blocks 4 trains its last blocks in a fraction of the time"
            )
        cnn = fine_tune_image_cnn(
            settings.catalog_path,
            options.photos_path,
            staging / CNN_FILE,
            settings=settings,
            config=CNNConfig(
                epochs=options.cnn_epochs,
                batch_size=options.cnn_batch(),
                anchor_batch=2 * options.cnn_batch(),
                last_blocks=options.cnn_last_blocks,
                seed=options.text.seed,
                device=device,
            ),
            threads=options.text.threads,
            progress=options.progress,
        )
        encoder = CNNImageEncoder(settings.image_model, staging / CNN_FILE, device=device)
    run = fit_image_projection(
        settings.catalog_path,
        options.photos_path,
        staging / "image-projection.npy",
        settings=settings,
        seed=options.text.seed,
        progress=options.progress,
        text_encoder=text_model,
        encoder=encoder,
    )
    return run | ({"cnn": cnn} if cnn is not None else {})


def _cross_validate(
    settings: Settings,
    base_folder: Path,
    folds: Sequence[TrainingData],
    staging: Path,
    options: TrainOptions,
) -> tuple[Judgement, Judgement, list[dict[str, Any]]]:
    """(candidate, current model, one record per fold): the recipe is trained once per fold
    without that fold's questions and scores them; the thresholds of each model are fitted
    on all its out-of-fold scores together, every labelled question held out once, and the
    figures are computed there. Each fold's model is deleted once it has scored its fold."""
    current = _encoder(settings.text_model, options)
    mine: list[HeldoutScores] = []
    theirs: list[HeldoutScores] = []
    runs: list[dict[str, Any]] = []
    for i, fold in enumerate(folds, 1):
        out = staging / f"fold-{i}"
        result = fine_tune_text(
            base_folder,
            fold.training_bank,
            fold.anchors,
            out,
            options.text,
            out_of_scope=fold.out_of_scope,
            progress=options.progress,
            desc=f"fold {i} of {len(folds)}",
        )
        mine.append(heldout_scores(_encoder(out, options), fold.training_bank, fold.heldout))
        theirs.append(heldout_scores(current, fold.training_bank, fold.heldout))
        shutil.rmtree(out)
        runs.append({"counts": fold.counts, "training": dataclasses.asdict(result)})
    return judge_scores(pooled(mine)), judge_scores(pooled(theirs)), runs


def _judge_products(
    candidate: SentenceTransformerEncoder,
    current: SentenceTransformerEncoder,
    products: ProductData,
    options: TrainOptions,
) -> dict[str, Any]:
    """Both models' held-out product figures, each with the lexical weight chosen for it."""
    seed = options.text.seed
    return {
        "counts": products.counts,
        "candidate": judge_products(
            candidate, products, seed=seed, progress=options.progress
        ).record(),
        "current": judge_products(current, products, seed=seed, progress=options.progress).record(),
        "ranking": "text cosine and BM25 fused as the service ranks text-only product "
        "questions; lexical weight: the best held-out hit@1 (cv_hit_at_1: its 5-fold "
        "cross-validated estimate)",
    }


def _train_on_all(
    base_folder: Path,
    data: TrainingData,
    out_dir: Path,
    options: TrainOptions,
    desc: str,
    products: ProductData | None = None,
) -> dict[str, Any]:
    """Train the recipe from the base model on every text, held-out included, into
    ``out_dir``; returns the manifest's record of it."""
    anchors = data.refit_anchors + (products.refit_anchors if products else [])
    result = fine_tune_text(
        base_folder,
        with_products(data.bank, products),
        anchors,
        out_dir,
        options.text,
        out_of_scope=data.refit_out_of_scope,
        progress=options.progress,
        desc=desc,
    )
    return {
        "anchors": len(anchors),
        "out_of_scope": len(data.refit_out_of_scope),
        "training": dataclasses.asdict(result),
    }


def _refit(
    base_folder: Path,
    data: TrainingData,
    model_dir: Path,
    options: TrainOptions,
    products: ProductData | None = None,
) -> dict:
    """Train the version's model again on all the data (:func:`_train_on_all`) and put it
    in place of the judged one in ``model_dir``. The judged model's thresholds and held-out
    figures stay with the version (there is nothing left to measure the refitted one on)."""
    scratch = model_dir.with_name(model_dir.name + ".refit")
    record = _train_on_all(base_folder, data, scratch, options, "refitting on all data", products)
    shutil.rmtree(model_dir)
    scratch.rename(model_dir)
    return record
