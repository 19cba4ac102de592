"""One ``retrieval train`` run: data in, a new model version out, promoted if it is better.

1. Read the FAQ bank, the labelled training questions, the held-out questions (or a seeded
   share of the training ones) and the agents' feedback; refuse too little data.
2. In ``data_dir/models/.tmp-<id>``: fine-tune the text encoder, fit its thresholds on
   held-out, and judge it against the current model (:mod:`.compare`); with ``refit``,
   train the same recipe again on all the data and keep that model. With ``folds`` k > 1,
   cross-validate instead: train once per fold without its questions, fit the thresholds
   and judge on all the out-of-fold scores, then train the model kept on all the data.
3. Rename the folder into place (manifest last) and record the version in SQL.
4. Promote it when the rule holds (or ``force``): ``PROMOTED.json`` names it and a full
   re-index follows; a re-index that fails puts the previous promotion back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from ..encoders.text import SentenceTransformerEncoder, resolve_text_model
from ..errors import InputError, NotFound, RetrievalError
from ..evaluation.baselines import normalize_text
from ..faq import FAQBank, load_faq
from ..labelled import LabelledQuery, read_labelled
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
from .fitting import ThresholdFit
from .pairs import Anchor, anchors_from_bank
from .photo_fusion import adopted_weights
from .text import TextTrainingConfig, fine_tune_text

__all__ = [
    "MIN_ANCHORS",
    "MIN_ENTRIES",
    "MIN_HELDOUT",
    "TrainOptions",
    "TrainReport",
    "TrainingData",
    "TrainingError",
    "gather",
    "gather_folds",
    "promote",
    "promoted_settings",
    "train",
]

log = logging.getLogger(__name__)

CNN_FILE = "image-cnn.pth"  # a version's fine-tuned image CNN (--cnn-epochs)
MIN_ANCHORS = 8  # training texts with a known answer (phrasings, questions, feedback)
MIN_ENTRIES = 2  # answers among them: a contrastive loss needs something to tell apart
MIN_HELDOUT = 4  # in-scope held-out questions to fit thresholds and judge on


class TrainingError(RetrievalError):
    """A training run that could not finish; nothing it wrote is kept or promoted."""


@dataclass(frozen=True)
class TrainOptions:
    bank_path: Path | None = None  # default: settings.faq_path plus approved drafts
    train_path: Path | None = None
    heldout_path: Path | None = None
    heldout_share: float = 0.2
    photos_path: Path | None = None  # labelled shopper photos: learn the image projection
    cnn_epochs: int = 0  # with photos_path and more than 0: fine-tune the image CNN first
    cnn_batch_size: int = 64  # photos per CNN step, beside up to twice as many catalog images
    refit: bool = False  # after judging, train again on all data, held-out included
    # 2 or more: judge and fit thresholds by k-fold cross-validation of --train, then train
    # the shipped model on all data (implies refit)
    folds: int = 1
    feedback: bool = True
    text: TextTrainingConfig = field(default_factory=TextTrainingConfig)
    force: bool = False
    promote: bool = True
    reindex: bool = True
    progress: bool = True


@dataclass(frozen=True)
class TrainReport:
    manifest: dict[str, Any]
    promoted: bool
    reason: str
    reindexed: list[str] = field(default_factory=list)


def _shuffled_groups(queries: list[LabelledQuery], seed: int) -> list[list[LabelledQuery]]:
    """The questions per answer (out-of-scope ones as one group), answers in sorted order,
    each group shuffled with one seeded generator."""
    by_label: dict[str, list[LabelledQuery]] = {}
    for q in queries:
        by_label.setdefault(min(q.relevant) if q.relevant else "", []).append(q)
    rng = random.Random(seed)
    groups = []
    for label in sorted(by_label):
        group = by_label[label][:]
        rng.shuffle(group)
        groups.append(group)
    return groups


def _split(
    queries: list[LabelledQuery], share: float, seed: int
) -> tuple[list[LabelledQuery], list[LabelledQuery]]:
    """(train, held-out): a seeded ``share`` of the questions, at least one per answer that
    has three or more (so held-out covers the answers), out-of-scope ones split alike."""
    train, heldout = [], []
    for group in _shuffled_groups(queries, seed):
        n = round(len(group) * share)
        if n == 0 and len(group) >= 3:
            n = 1
        heldout += group[:n]
        train += group[n:]
    return train, heldout


def _folds(queries: list[LabelledQuery], k: int, seed: int) -> list[list[LabelledQuery]]:
    """``k`` seeded folds of the questions, stratified per answer (out of scope alike): each
    answer's questions are shuffled and dealt round the folds, continuing where the last
    answer stopped, so the folds differ in size by at most one question."""
    dealt = [q for group in _shuffled_groups(queries, seed) for q in group]
    return [dealt[i::k] for i in range(k)]


def _without(bank: FAQBank, texts: set[str]) -> FAQBank:
    """The bank without the example phrasings in ``texts`` (held-out questions)."""
    entries = {}
    for e in bank:
        kept = tuple(x for x in e.examples if normalize_text(x) not in texts)
        entries[e.id] = dataclasses.replace(e, examples=kept)
    return FAQBank(entries, bank.source)


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


@dataclass(frozen=True)
class TrainingData:
    """What one run trains and judges on (:func:`gather`)."""

    bank: FAQBank  # the whole bank
    training_bank: FAQBank  # without the held-out questions among its phrasings
    anchors: list[Anchor]  # training texts, held-out questions left out
    heldout: list[LabelledQuery]
    counts: dict[str, int]
    out_of_scope: list[str]  # labelled out-of-scope training questions
    refit_anchors: list[Anchor]  # every text, held-out included (``--refit``)
    refit_out_of_scope: list[str]


def _anchors(
    bank: FAQBank, questions: Sequence[LabelledQuery], feedback: Sequence[Anchor], held: set[str]
) -> list[Anchor]:
    """The bank's phrasings, then each in-scope question and feedback text not already
    among them, leaving out texts in ``held`` (normalised)."""
    anchors = anchors_from_bank(bank)
    seen = {normalize_text(a.text) for a in anchors}
    for q in questions:
        key = normalize_text(q.text or "")
        if q.relevant and q.text and key not in seen and key not in held:
            anchors.append(Anchor(q.text, min(q.relevant), "train"))
            seen.add(key)
    anchors.extend(a for a in feedback if normalize_text(a.text) not in held)
    return anchors


def _counts(
    bank: FAQBank,
    anchors: Sequence[Anchor],
    out_of_scope: Sequence[str],
    heldout: Sequence[LabelledQuery],
) -> dict[str, int]:
    return {
        "entries": len(bank),
        "anchors": len(anchors),
        "from_bank": sum(a.source == "bank" for a in anchors),
        "from_train": sum(a.source == "train" for a in anchors),
        "from_feedback": sum(a.source == "feedback" for a in anchors),
        "out_of_scope": len(out_of_scope),
        "heldout": len(heldout),
        "heldout_out_of_scope": sum(1 for q in heldout if not q.relevant),
    }


def _out_of_scope(questions: Sequence[LabelledQuery]) -> list[str]:
    return list(dict.fromkeys(q.text for q in questions if not q.relevant and q.text))


def _read(
    settings: Settings, engine: Engine | None, options: TrainOptions
) -> tuple[FAQBank, list[LabelledQuery], list[LabelledQuery] | None, list[Anchor]]:
    """(bank, labelled training questions, --heldout questions or None, feedback anchors)."""
    from ..reindex import load_bank

    bank = load_faq(options.bank_path) if options.bank_path else load_bank(settings)
    ids = [e.id for e in bank]
    labelled = (
        read_labelled(options.train_path, known_ids=ids, images=False) if options.train_path else []
    )
    heldout = (
        read_labelled(options.heldout_path, known_ids=ids, images=False)
        if options.heldout_path
        else None
    )
    feedback: list[Anchor] = []
    if options.feedback and engine is not None:
        from .feedback import feedback_anchors

        feedback = list(feedback_anchors(engine, ids))
    return bank, labelled, heldout, feedback


def _training_data(
    bank: FAQBank,
    train: list[LabelledQuery],
    heldout: list[LabelledQuery],
    feedback: Sequence[Anchor],
    everything: list[LabelledQuery],
    *,
    more_heldout: str,
) -> TrainingData:
    """One split's :class:`TrainingData`, or a one-line refusal (``more_heldout`` says how
    to get more held-out questions). ``everything``: all labelled questions in file order,
    for the model trained on all data, which thus does not depend on the split."""
    held_texts = {normalize_text(q.text or "") for q in heldout}
    training_bank = _without(bank, held_texts)
    anchors = _anchors(training_bank, train, feedback, held_texts)
    entries = {a.entry_id for a in anchors}
    in_scope_heldout = sum(1 for q in heldout if q.relevant)
    if len(anchors) < MIN_ANCHORS or len(entries) < MIN_ENTRIES:
        raise InputError(
            f"too little data to train: {len(anchors)} training texts for {len(entries)} "
            f"answers (need at least {MIN_ANCHORS} for at least {MIN_ENTRIES} answers: add "
            "example phrasings to the bank or labelled questions with --train)"
        )
    if in_scope_heldout < MIN_HELDOUT:
        raise InputError(
            f"too little held-out data: {in_scope_heldout} in-scope held-out questions (need at "
            f"least {MIN_HELDOUT}: {more_heldout})"
        )
    out_of_scope = [t for t in _out_of_scope(train) if normalize_text(t) not in held_texts]
    return TrainingData(
        bank,
        training_bank,
        anchors,
        heldout,
        _counts(bank, anchors, out_of_scope, heldout),
        out_of_scope,
        _anchors(bank, everything, feedback, set()),
        _out_of_scope(everything),
    )


def gather(settings: Settings, engine: Engine | None, options: TrainOptions) -> TrainingData:
    """The run's data (:class:`TrainingData`), or a one-line refusal."""
    bank, labelled, heldout, feedback = _read(settings, engine, options)
    if heldout is not None:
        train, everything = labelled, [*labelled, *heldout]
    else:
        train, heldout = _split(labelled, options.heldout_share, options.text.seed)
        everything = labelled
    return _training_data(
        bank,
        train,
        heldout,
        feedback,
        everything,
        more_heldout="give --heldout FILE, or more questions with --train",
    )


def gather_folds(
    settings: Settings, engine: Engine | None, options: TrainOptions
) -> list[TrainingData]:
    """The ``options.folds`` cross-validation splits of ``--train``: fold i holds out the
    i-th seeded share of the questions, so each question is held out exactly once."""
    if options.heldout_path is not None:
        raise InputError("--folds cross-validates on --train: it cannot be combined with --heldout")
    bank, labelled, _, feedback = _read(settings, engine, options)
    parts = _folds(labelled, options.folds, options.text.seed)
    return [
        _training_data(
            bank,
            [q for j, part in enumerate(parts) if j != i for q in part],
            held,
            feedback,
            labelled,
            more_heldout=f"use fewer --folds, or more questions with --train (fold {i + 1})",
        )
        for i, held in enumerate(parts)
    ]


def _build(
    settings: Settings,
    options: TrainOptions,
    staging: Path,
    model_id: str,
    folds: Sequence[TrainingData],
) -> dict[str, Any]:
    """Everything of one version inside ``staging``; returns its manifest. One element in
    ``folds``: judged on its held-out share; more: cross-validated, see :func:`_cross_validate`."""
    data = folds[0]
    base_folder, base_id = resolve_text_model(settings.text_model)
    cross: dict[str, Any] | None = None
    refit: dict[str, Any] | None = None
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
            data.training_bank,
            anchors,
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
        mine = judge_model(settings, candidate, *judged)
        theirs = judge_model(settings, _encoder(settings.text_model, options), *judged)
        if options.refit:
            refit = _refit(base_folder, data, staging / "text-model", options)
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
    return {
        "id": model_id,
        "created_at": datetime.now(UTC).isoformat(),
        "path": str(final),
        "base_model": settings.text_model,
        "base_encoder": base_id,
        "data_hash": _data_hash(data.bank, anchors, heldout, out_of_scope),
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
        "metrics": {
            "candidate": {k: mine.metrics.get(k) for k in keep},
            "current": {k: theirs.metrics.get(k) for k in keep} | {"model": settings.text_model},
            "better": better(mine.metrics, theirs.metrics),
            "rule": "held-out MRR@10 and overall accuracy not worse, one of them better",
            "held_out": f"{len(folds)}-fold cross-validation" if cross else "one held-out share",
        },
    }


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
        if device == "cpu":
            log.warning(
                "fine-tuning the image CNN on the CPU: about 0.2 s per image of every step "
                "(hours for thousands of photos); a GPU does it in minutes"
            )
        cnn = fine_tune_image_cnn(
            settings.catalog_path,
            options.photos_path,
            staging / CNN_FILE,
            settings=settings,
            config=CNNConfig(
                epochs=options.cnn_epochs,
                batch_size=options.cnn_batch_size,
                anchor_batch=2 * options.cnn_batch_size,
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


def _train_on_all(
    base_folder: Path, data: TrainingData, out_dir: Path, options: TrainOptions, desc: str
) -> dict[str, Any]:
    """Train the recipe from the base model on every text, held-out included, into
    ``out_dir``; returns the manifest's record of it."""
    result = fine_tune_text(
        base_folder,
        data.bank,
        data.refit_anchors,
        out_dir,
        options.text,
        out_of_scope=data.refit_out_of_scope,
        progress=options.progress,
        desc=desc,
    )
    return {
        "anchors": len(data.refit_anchors),
        "out_of_scope": len(data.refit_out_of_scope),
        "training": dataclasses.asdict(result),
    }


def _refit(base_folder: Path, data: TrainingData, model_dir: Path, options: TrainOptions) -> dict:
    """Train the version's model again on all the data (:func:`_train_on_all`) and put it
    in place of the judged one in ``model_dir``. The judged model's thresholds and held-out
    figures stay with the version (there is nothing left to measure the refitted one on)."""
    scratch = model_dir.with_name(model_dir.name + ".refit")
    record = _train_on_all(base_folder, data, scratch, options, "refitting on all data")
    shutil.rmtree(model_dir)
    scratch.rename(model_dir)
    return record


def train(
    settings: Settings,
    engine: Engine | None,
    options: TrainOptions,
    *,
    reload_settings: Callable[[], Settings] | None = None,
) -> TrainReport:
    """Run the whole pipeline (see the module docstring). ``reload_settings`` rebuilds the
    settings after a promotion, for the re-index (default: ``settings`` with the version's)."""
    folds = (
        gather_folds(settings, engine, options)
        if options.folds > 1
        else [gather(settings, engine, options)]
    )
    with versions.locked(settings.data_dir):
        for name in versions.clean_orphans(settings.data_dir):
            log.warning("removed %s, left by a training run that did not finish", name)
        model_id = versions.new_model_id()
        t0 = time.perf_counter()
        staging = versions.staging_dir(settings.data_dir, model_id)
        try:
            manifest = _build(settings, options, staging, model_id, folds)
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
