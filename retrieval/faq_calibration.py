"""Fit what an FAQ index version learns from the shop's labelled questions: the answer
threshold and, for banks small enough, the answer head (:mod:`retrieval.answer_head`).

Used by ``retrieval ingest``, ``retrieval reindex`` and ``retrieval eval faq --train``, so
the evaluation measures exactly what the service will run. A labelled question whose text
is itself a phrasing of the bank is scored without that phrasing, so the threshold is fitted
on honest scores (a phrasing always matches itself at cosine 1).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .answer_head import ARRAY_BIAS, ARRAY_WEIGHTS, STRENGTHS, AnswerHead, select_head
from .build import calibrate_faq, calibrate_multilingual, routed, routed_positions
from .encoders.base import Encoder
from .faq import FAQEntry, normalize_text
from .index import VectorIndex
from .indexformat import MULTILINGUAL
from .outofscope import ARRAY_NAMES as OOS_ARRAYS
from .outofscope_fit import fit_out_of_scope, load_offtopic
from .querytext import has_cjk
from .ranking import HEAD_META, OOS_META
from .settings import Settings
from .shop_labels import ShopLabels

__all__ = [
    "as_shop_labels",
    "calibrate_with_labels",
    "fit_out_of_scope_of",
    "calibrate_faq_index",
    "calibrate_from_settings",
    "clear_calibration",
    "describe_head",
    "phrasings_of",
    "question_vectors",
]

log = logging.getLogger(__name__)


def phrasings_of(
    index: VectorIndex, view: VectorIndex | None = None
) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """(entry ids, phrasing vectors, owner row of each vector, text of each vector) of an
    FAQ index version, entries in the order of its records; the vectors of ``view`` (a
    companion, e.g. the multilingual one with one centroid per entry) when given."""
    records = index.meta.get("records") or []
    entry_ids = [r["id"] for r in records]
    row = {e: i for i, e in enumerate(entry_ids)}
    texts_of = {
        (r["id"], variant): text
        for r in records
        for variant, text in FAQEntry.from_record(r).phrasings()
    }
    owners, texts, vectors = [], [], []
    source = view if view is not None else index
    for entry_id in entry_ids:
        variants, vecs = source.item_vectors(entry_id)
        for variant, vec in zip(variants, vecs, strict=True):
            owners.append(row[entry_id])
            texts.append(texts_of.get((entry_id, variant), ""))
            vectors.append(vec)
    matrix = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), source.dim)
    return entry_ids, matrix, np.asarray(owners, dtype=np.int64), texts


def _put_head(index: VectorIndex, head: AnswerHead | None) -> None:
    index.arrays.pop(ARRAY_WEIGHTS, None)
    index.arrays.pop(ARRAY_BIAS, None)
    index.meta.pop(HEAD_META, None)
    if head is not None:
        index.arrays[ARRAY_WEIGHTS] = head.weights
        index.arrays[ARRAY_BIAS] = head.bias
        index.meta[HEAD_META] = {
            "entry_ids": list(head.entry_ids),
            "blend": head.blend,
            "strength": head.strength,
            "out_of_scope": head.out_of_scope,
        }


def describe_head(info: dict[str, Any] | None) -> str:
    """The calibration record's ``answer_head`` entry in words."""
    if not info:
        return "none (cosine alone was as good on the labelled questions)"
    oos = ", with an out-of-scope class" if info.get("out_of_scope") else ""
    return f"{info['entries']} entries, blend {info['blend']}, C {info['strength']:g}{oos}"


def clear_calibration(index: VectorIndex) -> None:
    """Forget threshold and head (no labelled questions any more)."""
    _put_head(index, None)
    index.meta.pop("calibration", None)
    for companion in index.companions.values():
        companion.meta.pop("calibration", None)


def _masks(questions: Sequence[str], texts: Sequence[str]) -> np.ndarray:
    by_text: dict[str, list[int]] = {}
    for d, t in enumerate(texts):
        by_text.setdefault(normalize_text(t), []).append(d)
    masked = np.zeros((len(questions), len(texts)), dtype=bool)
    for i, q in enumerate(questions):
        masked[i, by_text.get(normalize_text(q), [])] = True
    return masked


def calibrate_faq_index(
    index: VectorIndex,
    text: Encoder,
    labelled: list[tuple[str, set[str]]],
    source: Path | str,
    *,
    multilingual: Encoder | None = None,
    head: bool = True,
    max_entries: int = 1000,
    vectors: np.ndarray | None = None,
) -> dict[str, Any]:
    """Fit threshold (and head) of an FAQ index version and its multilingual companion on
    labelled questions; the results go into the version's metadata and arrays.

    Banks of at most ``max_entries`` entries are scored exactly, each question without its
    own phrasing, and get a head when ``head`` is set and cross-validation keeps one; larger
    banks are calibrated on the HNSW top-1 (exact scores and head fitting grow with entries
    x phrasings). ``vectors`` are the questions'
    vectors when the caller already has them. Returns the calibration record.
    """
    positions = routed_positions(labelled, cjk=False)
    mine = [labelled[i] for i in positions]
    records = index.meta.get("records") or []
    if len(records) > max_entries:
        # exact scores of every question against every phrasing grow too large: the HNSW
        # top-1, and no head
        if head:
            log.info(
                "faq: %d entries is more than answer_head_max_entries (%d): no answer head",
                len(records),
                max_entries,
            )
        _put_head(index, None)
        cal = calibrate_faq(index, text, mine)
        threshold, accuracy, chosen = cal.threshold, cal.accuracy, None
    else:
        entry_ids, phrasings, owners, texts = phrasings_of(index)
        row = {e: i for i, e in enumerate(entry_ids)}
        if vectors is not None:
            qvecs = np.asarray(vectors)[positions]
        else:
            qvecs = text.encode([q for q, _ in mine])
        relevant = [{row[r] for r in rel if r in row} for _, rel in mine]
        choice = select_head(
            entry_ids,
            phrasings,
            owners,
            np.asarray(qvecs),
            relevant,
            _masks([q for q, _ in mine], texts),
            strengths=STRENGTHS if head else (),  # no strengths: cosine alone
        )
        _put_head(index, choice.head)
        threshold, accuracy, chosen = choice.threshold, choice.accuracy, choice.head
    index.meta["calibration"] = {
        "answer_threshold": round(float(threshold), 6),
        "accuracy": round(float(accuracy), 6),
        "n_questions": len(mine),
        "n_out_of_scope": sum(not rel for _, rel in mine),
        "source": str(source),
        "answer_head": None if chosen is None else chosen.describe(),
    }
    if multilingual is not None:
        calibrate_multilingual(index, multilingual, routed(labelled, cjk=True), source)
    return index.meta["calibration"]


def question_vectors(text: Encoder, labelled: list[tuple[str, set[str]]]) -> np.ndarray:
    """The labelled questions' vectors for :func:`calibrate_faq_index` and
    :func:`fit_out_of_scope_of`, encoded once for both: one row per labelled question; only
    the questions the main index answers (``routed_positions``) are encoded, the other rows
    stay zero (neither function reads them)."""
    positions = routed_positions(labelled, cjk=False)
    out = np.zeros((len(labelled), text.dim), dtype=np.float32)
    if positions:
        out[positions] = text.encode([labelled[i][0] for i in positions])
    return out


def calibrate_from_settings(
    index: VectorIndex,
    text: Encoder,
    labelled: list[tuple[str, set[str]]],
    settings: Settings,
    multilingual: Encoder | None = None,
    *,
    vectors: np.ndarray | None = None,
) -> dict[str, Any]:
    """:func:`calibrate_faq_index` on the configured calibration file (ingest, re-index)."""
    return calibrate_faq_index(
        index,
        text,
        labelled,
        settings.faq_calibration_path or "",
        multilingual=multilingual,
        head=settings.answer_head,
        max_entries=settings.answer_head_max_entries,
        vectors=vectors,
    )


# by encoder id (a model's name and version, or its folder's fingerprint: the same id means
# the same weights), so a new encoder object of the same model (e.g. training compares the
# current model with a candidate) does not encode them again; a few models at most
_offtopic: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
_OFFTOPIC_MODELS = 8  # (model, language): the current and a candidate model, two languages
_offtopic_lock = threading.Lock()


def offtopic_vectors(text: Encoder, lang: str = "en") -> np.ndarray:
    """The built-in off-topic messages in ``lang`` (``en``: those of the main view; ``zh``:
    those of the multilingual view, which answers Chinese questions), encoded once per
    model (read-only)."""
    key = (text.id, lang)
    with _offtopic_lock:
        vectors = _offtopic.get(key)
        if vectors is not None:
            _offtopic.move_to_end(key)
            return vectors
    vectors = text.encode([r["text"] for r in load_offtopic(langs=[lang])])
    vectors.setflags(write=False)
    with _offtopic_lock:
        _offtopic[key] = vectors
        while len(_offtopic) > _OFFTOPIC_MODELS:
            _offtopic.popitem(last=False)
    return vectors


def fit_out_of_scope_of(
    index: VectorIndex,
    text: Encoder,
    labelled: list[tuple[str, set[str]]] | None,
    *,
    max_entries: int = 1000,
    vectors: np.ndarray | None = None,
    noisy: Sequence[bool] | None = None,
    agent_weight: float = 1.0,
    unlabelled: Sequence[str] = (),
    view: VectorIndex | None = None,
) -> str | None:
    """Fit the hand-off signal of an FAQ index version (:mod:`retrieval.outofscope`) from
    what a new shop has: its phrasings, its labelled in-scope questions, the built-in
    off-topic messages, and any labelled out-of-scope questions (the calibration file's
    empty answer lists, agents' labels). Stored in the version's arrays and metadata;
    returns its description, or None when the bank is empty or larger than
    ``max_entries`` (the threshold alone decides there). ``vectors`` are the labelled
    questions' vectors when the caller already has them (:func:`question_vectors`).
    ``noisy[i]`` marks an agent's out-of-scope label: those form their own group of weight
    ``agent_weight``; the file's out-of-scope questions weigh 1, as the off-topic set.
    ``unlabelled``: questions from traffic, whose scores re-estimate the out-of-scope share
    (``query_log`` of :func:`retrieval.outofscope_fit.fit_out_of_scope`).

    ``view``: fit the signal of the version's multilingual companion instead, for the
    questions it answers (those with CJK characters), with ``text`` its encoder and the
    Chinese off-topic messages as negatives; stored in the companion."""
    target = view if view is not None else index
    cjk = view is not None
    if cjk and vectors is not None:
        raise ValueError("vectors are the main view's; the multilingual fit encodes its own")
    _clear_out_of_scope(target)
    records = index.meta.get("records") or []
    if not records or len(records) > max_entries:
        return None
    entry_ids, phrasings, owners, _ = phrasings_of(index, view)
    row = {e: i for i, e in enumerate(entry_ids)}
    positions = routed_positions(labelled, cjk=cjk) if labelled else []
    mine = [labelled[i] for i in positions] if labelled else []
    if not mine:
        qvecs = np.zeros((0, target.dim), np.float32)
    elif vectors is not None:
        qvecs = np.asarray(vectors, dtype=np.float32)[positions]
    else:
        qvecs = np.asarray(text.encode([q for q, _ in mine]), dtype=np.float32)
    lab = np.array(
        [min((row[r] for r in rel if r in row), default=-1) if rel else -2 for _, rel in mine],
        dtype=np.int64,
    )
    from_agent = np.zeros(len(mine), dtype=bool)
    if noisy is not None and mine:
        from_agent = np.asarray(noisy, dtype=bool)[positions]
    model = fit_out_of_scope(
        phrasings,
        owners,
        qvecs[lab >= 0],
        lab[lab >= 0],
        offtopic_vectors(text, "zh" if cjk else "en"),
        labelled_out_of_scope=qvecs[(lab == -2) & ~from_agent],
        agent_out_of_scope=qvecs[(lab == -2) & from_agent],
        agent_weight=agent_weight,
        query_log=_encoded_unlabelled(text, unlabelled, cjk=cjk),
        n_entries=len(entry_ids),
    )
    target.arrays.update(model.to_arrays())
    target.meta[OOS_META] = model.to_meta()
    return model.describe()


def _clear_out_of_scope(index: VectorIndex) -> None:
    for name in OOS_ARRAYS.values():
        index.arrays.pop(name, None)
    index.meta.pop(OOS_META, None)


def _encoded_unlabelled(
    text: Encoder, unlabelled: Sequence[str], *, cjk: bool
) -> np.ndarray | None:
    """The unlabelled questions the view answers (Chinese ones: the multilingual view),
    encoded. Only those: the other language's traffic would set this view's estimate of
    the out-of-scope share."""
    mine = [q for q in unlabelled if has_cjk(q) == cjk]
    return np.asarray(text.encode(mine), dtype=np.float32) if mine else None


def as_shop_labels(labels: ShopLabels | list[tuple[str, set[str]]] | None) -> ShopLabels:
    """A plain list of labelled questions is the operators' own (none noisy)."""
    if isinstance(labels, ShopLabels):
        return labels
    pairs = list(labels or [])
    return ShopLabels(labelled=pairs, noisy=[False] * len(pairs), from_file=len(pairs))


def calibrate_with_labels(
    index: VectorIndex,
    text: Encoder,
    labels: ShopLabels,
    settings: Settings,
    multilingual: Encoder | None = None,
) -> None:
    """Everything an FAQ index version learns from the shop's labelled questions, as ingest
    and re-index fit it: threshold and answer head (:func:`calibrate_from_settings`), then
    the hand-off signal (:func:`fit_out_of_scope_of`), the questions encoded once for both.
    Without labels the calibration is cleared and the hand-off signal is fitted on the
    phrasings and the built-in off-topic messages alone."""
    labelled = labels.labelled
    vectors = question_vectors(text, labelled) if labelled else None
    if labelled:
        cal = calibrate_from_settings(
            index, text, labelled, settings, multilingual, vectors=vectors
        )
        cal["labels"] = labels.describe()
        cal["agent_labels"] = sum(labels.from_agents.values())
    else:
        clear_calibration(index)
    fit_out_of_scope_of(
        index,
        text,
        labelled,
        max_entries=settings.answer_head_max_entries,
        vectors=vectors,
        noisy=labels.noisy,
        agent_weight=settings.agent_label_weight,
        unlabelled=labels.unlabelled,
    )
    companion = index.companions.get(MULTILINGUAL) if multilingual is not None else None
    if companion is None or multilingual is None:
        return
    # Chinese questions are answered by the multilingual view: its own hand-off signal,
    # fitted the same way in its own vector space, when the shop's data holds Chinese
    _clear_out_of_scope(companion)  # a view without Chinese data keeps no older signal
    if not speaks_cjk(index, labelled):
        log.info(
            "faq: no Chinese in the bank or the labelled questions: Chinese questions are "
            "handed off by the multilingual view's answer threshold alone"
        )
        return
    fit_out_of_scope_of(
        index,
        multilingual,
        labelled,
        max_entries=settings.answer_head_max_entries,
        noisy=labels.noisy,
        agent_weight=settings.agent_label_weight,
        unlabelled=labels.unlabelled,
        view=companion,
    )


MIN_CJK_QUESTIONS = 10  # as routed_positions: fewer Chinese labelled questions are noise


def speaks_cjk(index: VectorIndex, labelled: Sequence[tuple[str, set[str]]]) -> bool:
    """Whether the shop's data has Chinese (CJK) for the multilingual view's hand-off signal:
    a phrasing of the bank, or enough labelled in-scope questions. The signal's in-scope side
    is the labelled questions (all of them when fewer than 10 are Chinese), so with English
    labels it learns from English questions, which score higher in the multilingual space
    than Chinese ones. A Chinese phrasing in the bank is part of each entry's vector in the
    view (one per entry, all languages), which lifts Chinese questions' scores: on the demo
    bank with English labels the signal cost one in-scope Chinese question of 163, while on
    the English-only Bitext bank it handed off 14% more of the answerable Chinese questions
    (docs/evaluation.md)."""
    for record in index.meta.get("records") or []:
        entry = FAQEntry.from_record(record)
        if any(has_cjk(text) for _, text in entry.phrasings()):
            return True
    asked = sum(1 for q, rel in labelled if rel and has_cjk(q))
    return asked >= MIN_CJK_QUESTIONS
