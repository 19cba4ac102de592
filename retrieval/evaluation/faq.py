"""``retrieval eval faq``: the FAQ answer bank on labelled questions, system and baselines.

The system is the shop's own query path: the FAQ index version is built, calibrated on
TRAIN and published by the code ``retrieval ingest`` runs (into a temporary data folder, so
nothing the running service uses is touched), or with ``published`` it is the version the
service runs now; the questions are answered by :class:`~retrieval.retriever.Retriever` as
the service answers them (cleaning, routing Chinese questions to the multilingual view,
the answer head, the decision), in batches for speed. Latency is timed separately, one
question at a time through :meth:`~retrieval.retriever.Retriever.query`, and those answers
are checked against the batch ones. Only the evaluation's own parts live here: baselines,
metrics, and a TRAIN question that is a phrasing of the bank is calibrated on without it
(:mod:`retrieval.faq_calibration`).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..decision import Decision, DecisionPolicy, calibrate_threshold, decide
from ..encoders import text_encoder
from ..encoders.base import Encoder
from ..errors import InputError
from ..faq import FAQBank, load_faq
from ..faq_calibration import as_shop_labels, describe_head
from ..index import VectorIndex
from ..indexformat import MULTILINGUAL
from ..indexstore import current_version
from ..ingest import build_faq_version, publish_built
from ..labelled import LabelledQuery, read_labelled, read_unlabelled
from ..results import QueryResult
from ..retriever import Retriever
from ..runtime import DEFAULT_ANSWER, SUGGEST_GAP, build_retriever
from ..settings import Settings
from .baselines import BM25Scorer, ExactScorer, best_per_item, normalize_text
from .metrics import Outcome
from .results import Evaluation, SystemResult
from .runner import LATENCY_SAMPLE, answer_all, gate_info

__all__ = [
    "FAQSetup",
    "evaluate_faq",
    "faq_outcome",
    "faq_retriever",
    "system_outcomes",
    "with_training_examples",
]

log = logging.getLogger(__name__)

K = 10  # ranking depth of the metrics
EXTRA = 4  # as the retriever: a few more entries so the margin sees the runner-up group


@dataclass(frozen=True)
class FAQSetup:
    """The bank's phrasings as documents: key, text and owning entry of each."""

    bank: FAQBank
    entry_ids: tuple[str, ...]
    groups: dict[str, str]  # entry id -> answer group
    keys: tuple[tuple[str, str], ...]
    texts: tuple[str, ...]
    owners: np.ndarray

    @classmethod
    def of(cls, bank: FAQBank) -> FAQSetup:
        entry_ids = tuple(e.id for e in bank)
        keys, texts, owners = [], [], []
        for i, entry in enumerate(bank):
            for variant, text in entry.phrasings():
                keys.append((entry.id, variant))
                texts.append(text)
                owners.append(i)
        return cls(
            bank,
            entry_ids,
            {e.id: e.group or e.id for e in bank},
            tuple(keys),
            tuple(texts),
            np.asarray(owners, dtype=np.int64),
        )

    def same_text(self, query: str) -> list[int]:
        q = normalize_text(query)
        return [d for d, t in enumerate(self.texts) if normalize_text(t) == q]


def faq_outcome(
    ranked: Sequence[str],
    scores: Sequence[float],
    relevant: frozenset[str],
    policy: DecisionPolicy,
    groups: dict[str, str],
    *,
    query_ms: float = 0.0,
    encode_ms: float = 0.0,
) -> Outcome:
    """Decide as the retriever does (best score per answer group) and record the outcome."""
    seen, group_scores = set(), []
    for entry_id, score in zip(ranked, scores, strict=True):
        group = groups.get(entry_id, entry_id)
        if group not in seen:
            seen.add(group)
            group_scores.append(float(score))
    verdict = decide(group_scores, policy)
    return Outcome(
        tuple(ranked[:K]),
        relevant,
        verdict.top_score,
        verdict.decision == Decision.ANSWER,
        query_ms,
        encode_ms,
    )


def _policy(threshold: float, margin: float, gap: float = SUGGEST_GAP) -> DecisionPolicy:
    return DecisionPolicy(threshold, threshold - gap, margin)


def _calibrate(
    rank_train: Callable[[int], tuple[str | None, float]], train: list[LabelledQuery]
) -> tuple[float, float]:
    """(threshold, accuracy on TRAIN) from each TRAIN question's top-1 id and score."""
    tops, correct, in_scope = [], [], []
    for i, q in enumerate(train):
        top_id, score = rank_train(i)
        tops.append(score)
        correct.append(top_id is not None and top_id in q.relevant)
        in_scope.append(bool(q.relevant))
    return calibrate_threshold(tops, correct, in_scope)


def _scored_baseline(
    name: str,
    score: Callable[[int, bool], np.ndarray],
    setup: FAQSetup,
    queries: list[LabelledQuery],
    extra_ms: Sequence[float],
    train: list[LabelledQuery] | None,
    fallback: tuple[float, str],
    margin: float,
    gap: float,
    build_s: float,
) -> SystemResult:
    """A baseline that scores every phrasing: ``score(i, is_train)`` for query or TRAIN i."""
    n = len(setup.entry_ids)
    if train is not None:

        def rank_train(i: int) -> tuple[str | None, float]:
            masked = setup.same_text(train[i].text or "")
            idx, s = best_per_item(score(i, True), setup.owners, n, 1, masked=masked)
            return (setup.entry_ids[idx[0]], float(s[0])) if len(idx) else (None, -1.0)

        threshold, acc = _calibrate(rank_train, train)
        source = f"calibrated on TRAIN ({len(train)} questions, accuracy {acc:.3f})"
    else:
        threshold, source = fallback
    policy = _policy(threshold, margin, gap)
    outcomes = []
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        idx, s = best_per_item(score(i, False), setup.owners, n, K + EXTRA)
        outcome = faq_outcome(
            [setup.entry_ids[j] for j in idx], s.tolist(), q.relevant, policy, setup.groups
        )
        ms = (time.perf_counter() - t0) * 1e3 + extra_ms[i]
        outcomes.append(
            Outcome(
                outcome.ranked, q.relevant, outcome.top_score, outcome.answered, ms, extra_ms[i]
            )
        )
    stored = threshold if np.isfinite(threshold) else None
    return SystemResult(name, tuple(outcomes), True, stored, source, build_s)


def with_training_examples(bank: FAQBank, train: Sequence[LabelledQuery]) -> FAQBank:
    """The bank with each in-scope TRAIN question added as an example of its first relevant
    entry (one entry per question: language versions of an answer share it through search)."""
    extra: dict[str, list[str]] = {}
    for q in train:
        if q.relevant and q.text:
            extra.setdefault(min(q.relevant), []).append(q.text)
    entries = {}
    for entry in bank:
        known = set(entry.examples) | {entry.question}
        added = tuple(dict.fromkeys(t for t in extra.get(entry.id, ()) if t not in known))
        entries[entry.id] = dataclasses.replace(entry, examples=entry.examples + added)
    return FAQBank(entries, bank.source)


def _threshold_source(retriever: Retriever, train: list[LabelledQuery] | None) -> str:
    """Where the system's answer threshold and hand-off signal came from, in words."""
    oos = retriever.snapshot.out_of_scope
    hand_off = (
        f" Hand-off signal: {oos.describe()}"
        if oos is not None
        else " Hand-off signal: none (the answer threshold alone decides)."
    )
    zh = retriever.snapshot.multilingual_out_of_scope
    if zh is not None:
        hand_off += f" Chinese questions (multilingual view): {zh.describe()}"
    elif MULTILINGUAL in retriever.snapshot.faq_index.companions:
        hand_off += (
            " Chinese questions (multilingual view): no hand-off signal (no Chinese in the "
            "bank or the labelled questions); its answer threshold alone decides."
        )
    return _answer_threshold_source(retriever, train) + hand_off


def _answer_threshold_source(retriever: Retriever, train: list[LabelledQuery] | None) -> str:
    """Where the system's answer threshold came from, in words."""
    policy = retriever.snapshot.policy
    cal = retriever.snapshot.faq_index.meta.get("calibration") or {}
    if policy.source == "calibrated":
        return (
            f"calibrated on {'TRAIN' if train is not None else cal.get('source', '?')} "
            f"({cal.get('n_questions', '?')} questions, cross-validated accuracy "
            f"{cal.get('accuracy', float('nan')):.3f}; answer head: "
            f"{describe_head(cal.get('answer_head'))})"
        )
    if policy.source == "settings":
        return "settings"
    return "default (no TRAIN given)"


def system_outcomes(
    retriever: Retriever,
    queries: Sequence[LabelledQuery],
    *,
    progress: bool = False,
    latency_sample: int = LATENCY_SAMPLE,
) -> tuple[list[Outcome], dict[str, Any]]:
    """Each question's outcome through the service's query path (:func:`answer_all`), how
    the latency was timed, and the product gate's share of questions shown products."""
    answered = answer_all(
        retriever,
        [q.text or "" for q in queries],
        same=lambda a, b: _ranked(a) == _ranked(b) and a.decision == b.decision,
        k_faq=K,
        k_products=1,
        latency_sample=latency_sample,
        progress=progress,
    )
    outcomes = answered.outcomes(
        [q.relevant for q in queries],
        lambda r: (_ranked(r), r.verdict.top_score, r.decision == Decision.ANSWER),
    )
    # with products published beside the FAQ: how often an FAQ question would show products
    return outcomes, {**answered.info, **gate_info(answered.results)}


def _ranked(result: QueryResult) -> tuple[str, ...]:
    return tuple(c.entry.id for c in result.replies[:K])


def _unlabelled(path: Path | None, queries_path: Path) -> tuple[list[str], int]:
    """The --unlabelled questions less those that are also scored queries, and how many
    were left out: the scored queries' own distribution must never calibrate them."""
    if path is None:
        return [], 0
    scored = {
        normalize_text(q.text or "")
        for q in read_labelled(queries_path, known_ids=None, images=False)
    }
    texts = read_unlabelled(path)
    kept = [t for t in texts if normalize_text(t) not in scored]
    return kept, len(texts) - len(kept)


def faq_retriever(
    settings: Settings,
    bank: FAQBank,
    train: Sequence[LabelledQuery] | None,
    folder: Path,
    *,
    encoder: Encoder | None = None,
    progress: bool = False,
    unlabelled: Sequence[str] = (),
) -> Retriever:
    """Build, calibrate and publish ``bank`` as ``retrieval ingest`` does, into the data
    folder ``folder``, and the retriever the service would run on it. ``unlabelled``:
    questions from traffic without labels (the query log's part in the hand-off fit)."""
    # a private hnswlib index in the folder, whatever store the shop's settings name
    run = settings.model_copy(
        update={"data_dir": folder, "database_url": None, "vector_store": "hnswlib"}
    )
    text = encoder or text_encoder(run)
    labels = as_shop_labels([(q.text or "", set(q.relevant)) for q in train] if train else None)
    labels.unlabelled = list(unlabelled)
    index = build_faq_version(run, bank, labels, text, progress=progress)
    publish_built(run, "faq", index)
    return build_retriever(run, text=text, kinds=("faq",))


def evaluate_faq(
    settings: Settings,
    bank_path: Path | None,
    queries_path: Path,
    train_path: Path | None = None,
    *,
    baselines: Sequence[str] = (),
    progress: bool = True,
    dataset: str | None = None,
    encoder: Encoder | None = None,
    train_as_examples: bool = False,
    published: bool = False,
    latency_sample: int = LATENCY_SAMPLE,
    unlabelled_path: Path | None = None,
) -> Evaluation:
    """Evaluate the FAQ system (and ``baselines``) on labelled queries.

    With ``published`` the system is the FAQ version published in the settings' data folder
    (the one the service runs; ``bank_path`` and TRAIN are not used). Otherwise ``bank_path``
    is built and calibrated on TRAIN as ingest would. With ``train_as_examples`` the
    in-scope TRAIN questions also join the bank as examples of their answer (as the Rasa
    baseline learns from them); calibration still scores each TRAIN question without its
    own phrasing. ``unlabelled_path``: questions from traffic without labels, which the
    hand-off fit reads as ingest and re-index read the query log; a question whose text is
    also a scored query is left out of them (counted in the output).
    """
    with tempfile.TemporaryDirectory(prefix="retrieval-eval-") as tmp:
        t0 = time.perf_counter()
        unlabelled: tuple[list[str], int] = ([], 0)
        if published:
            if unlabelled_path is not None:
                raise InputError("--published scores the published version: no --unlabelled")
            if train_path is not None:
                raise InputError("--published scores the published version: it takes no TRAIN")
            # the products too when they are published: the service's product gate then
            # says how often an FAQ question would show products
            kinds = ("faq", "products") if current_version(settings, "products") else ("faq",)
            retriever = build_retriever(settings, text=encoder, kinds=kinds)
            bank, train = retriever.snapshot.faq, None
        else:
            if bank_path is None:
                raise InputError("give the FAQ bank to build (or score the published version)")
            bank = load_faq(bank_path)
            ids = [e.id for e in bank]
            train = read_labelled(train_path, known_ids=ids, images=False) if train_path else None
            if train_as_examples and train:
                bank = with_training_examples(bank, train)
            unlabelled = _unlabelled(unlabelled_path, queries_path)
            retriever = faq_retriever(
                settings,
                bank,
                train,
                Path(tmp),
                encoder=encoder,
                progress=progress,
                unlabelled=unlabelled[0],
            )
        build_s = time.perf_counter() - t0
    queries = read_labelled(queries_path, known_ids=[e.id for e in bank], images=False)
    index = retriever.snapshot.faq_index
    outcomes, timing = system_outcomes(
        retriever, queries, progress=progress, latency_sample=latency_sample
    )
    policy = retriever.snapshot.policy
    results = [
        SystemResult(
            "system",
            tuple(outcomes),
            True,
            policy.answer_threshold,
            _threshold_source(retriever, train),
            build_s,
        )
    ]
    setup = FAQSetup.of(bank)
    encoder = retriever.text_encoder
    if baselines:
        t0 = time.perf_counter()
        qvecs = encoder.encode([q.text or "" for q in queries])
        encode_ms = [(time.perf_counter() - t0) * 1e3 / max(1, len(queries))] * len(queries)
        tvecs = encoder.encode([q.text or "" for q in train]) if train else None
    for name in baselines:
        if name == "exact":
            t0 = time.perf_counter()
            exact = ExactScorer(_phrasing_vectors(index, setup))
            sys = results[0]
            results.append(
                _scored_baseline(
                    "exact",
                    lambda i, is_train, exact=exact: exact.scores(
                        tvecs[i] if is_train else qvecs[i]
                    ),
                    setup,
                    queries,
                    encode_ms,
                    train,
                    (sys.threshold or DEFAULT_ANSWER, sys.threshold_source),
                    settings.answer_margin,
                    SUGGEST_GAP,
                    time.perf_counter() - t0 + build_s,
                )
            )
        elif name == "bm25":
            t0 = time.perf_counter()
            bm25 = BM25Scorer(setup.texts)
            results.append(
                _scored_baseline(
                    "bm25",
                    lambda i, is_train, bm25=bm25: bm25.scores(
                        (train[i] if is_train and train else queries[i]).text or ""
                    ),
                    setup,
                    queries,
                    [0.0] * len(queries),
                    train,
                    (-np.inf, "none: answers every question (no TRAIN given)"),
                    0.0,
                    0.0,
                    time.perf_counter() - t0,
                )
            )
        elif name == "rasa":
            from .rasa import rasa_baseline

            results.append(rasa_baseline(bank, queries, train, progress=progress))
        else:
            raise ValueError(f"unknown baseline {name!r}")
    ml = index.companions.get(MULTILINGUAL)
    info = {
        "n_entries": len(bank),
        "train_as_examples": bool(train_as_examples and train),
        "n_vectors": len(index),
        "text_encoder": encoder.id,
        "multilingual_encoder": None if ml is None else ml.meta.get("text_encoder"),
        "index_version": retriever.snapshot.faq_version if published else None,
        "hnsw": {
            "m": index.params.m,
            "ef_construction": index.params.ef_construction,
            "ef": index.params.ef,
        },
        **timing,
    }
    if unlabelled_path is not None:
        info["unlabelled"] = {
            "file": str(unlabelled_path),
            "questions": len(unlabelled[0]),
            "left_out_as_scored_queries": unlabelled[1],
        }
    name = dataset or Path(queries_path).resolve().parent.name
    return Evaluation("faq", name, tuple(results), info)


def _phrasing_vectors(index: VectorIndex, setup: FAQSetup) -> np.ndarray:
    """The stored vector of every phrasing, in the setup's document order."""
    out = np.zeros((len(setup.keys), index.dim), dtype=np.float32)
    pos = {key: d for d, key in enumerate(setup.keys)}
    for entry_id in setup.entry_ids:
        variants, vectors = index.item_vectors(entry_id)
        for variant, vec in zip(variants, vectors, strict=True):
            out[pos[(entry_id, variant)]] = vec
    return out
