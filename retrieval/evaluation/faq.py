"""``retrieval eval faq``: the FAQ answer bank on labelled questions, system and baselines.

The system runs the query path of :class:`~retrieval.retriever.Retriever` step by step (one
question at a time: encode, search the HNSW index, group per answer, decide) on an index
built fresh in a temporary directory, so nothing the running service uses is touched.
The answer threshold is calibrated on TRAIN when given; a TRAIN question that is itself a
phrasing in the bank is scored without that phrasing, so calibration sees honest scores.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..build import build_faq_index
from ..decision import Decision, DecisionPolicy, calibrate_threshold, decide
from ..encoders import text_encoder
from ..encoders.base import Encoder
from ..faq import FAQBank, load_faq
from ..faq_calibration import calibrate_faq_index, describe_head, head_of, rank_entries
from ..index import IndexParams, VectorIndex
from ..runtime import DEFAULT_ANSWER, SUGGEST_GAP
from ..settings import Settings
from .baselines import BM25Scorer, ExactScorer, best_per_item, normalize_text
from .labelled import LabelledQuery, read_labelled
from .metrics import Outcome
from .results import Evaluation, SystemResult

__all__ = ["FAQSetup", "evaluate_faq", "faq_outcome", "with_training_examples"]

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


def _encode_one_by_one(
    encoder: Encoder, texts: Sequence[str], progress: bool
) -> tuple[np.ndarray, list[float]]:
    """Encode each query on its own, as a shopper's question is, timing each."""
    vecs, ms = [], []
    for text in tqdm(texts, desc="encoding queries", unit="q", disable=not progress):
        t0 = time.perf_counter()
        vecs.append(encoder.encode([text])[0])
        ms.append((time.perf_counter() - t0) * 1e3)
    return np.asarray(vecs, dtype=np.float32), ms


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


def _system(
    index: VectorIndex,
    setup: FAQSetup,
    queries: list[LabelledQuery],
    qvecs: np.ndarray,
    encode_ms: list[float],
    train: list[LabelledQuery] | None,
    tvecs: np.ndarray | None,
    settings: Settings,
    build_s: float,
    encoder: Encoder,
) -> SystemResult:
    head = None
    if train is not None and tvecs is not None:
        # what ingest does with the shop's calibration file: threshold and answer head
        cal = calibrate_faq_index(
            index,
            encoder,
            [(q.text or "", set(q.relevant)) for q in train],
            "TRAIN",
            head=settings.answer_head,
            max_entries=settings.answer_head_max_entries,
            vectors=tvecs,
        )
        head = head_of(index)
        threshold = cal["answer_threshold"]
        source = (
            f"calibrated on TRAIN ({len(train)} questions, cross-validated accuracy "
            f"{cal['accuracy']:.3f}; answer head: {describe_head(cal['answer_head'])})"
        )
    elif settings.answer_threshold is not None:
        threshold, source = settings.answer_threshold, "settings"
    else:
        threshold, source = DEFAULT_ANSWER, "default (no TRAIN given)"
    policy = _policy(threshold, settings.answer_margin)
    outcomes = []
    for q, vec, enc_ms in zip(queries, qvecs, encode_ms, strict=True):
        t0 = time.perf_counter()
        ranked = rank_entries(index, head, vec, K + EXTRA)
        ids = [h.item_id for h, _ in ranked]
        scores = [score for _, score in ranked]
        outcome = faq_outcome(ids, scores, q.relevant, policy, setup.groups)
        search_ms = (time.perf_counter() - t0) * 1e3
        outcomes.append(
            Outcome(
                outcome.ranked,
                outcome.relevant,
                outcome.top_score,
                outcome.answered,
                enc_ms + search_ms,
                enc_ms,
            )
        )
    return SystemResult("system", tuple(outcomes), True, threshold, source, build_s)


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


def evaluate_faq(
    settings: Settings,
    bank_path: Path,
    queries_path: Path,
    train_path: Path | None = None,
    *,
    baselines: Sequence[str] = (),
    progress: bool = True,
    dataset: str | None = None,
    encoder: Encoder | None = None,
    train_as_examples: bool = False,
) -> Evaluation:
    """Evaluate the FAQ system (and ``baselines``) on labelled queries.

    With ``train_as_examples`` the in-scope TRAIN questions also join the bank as examples
    of their answer (as the Rasa baseline learns from them); calibration still scores each
    TRAIN question without its own phrasing.
    """
    bank = load_faq(bank_path)
    ids = [e.id for e in bank]
    queries = read_labelled(queries_path, known_ids=ids, images=False)
    train = read_labelled(train_path, known_ids=ids, images=False) if train_path else None
    if train_as_examples and train:
        bank = with_training_examples(bank, train)
    encoder = encoder or text_encoder(settings)
    setup = FAQSetup.of(bank)
    params = IndexParams(settings.hnsw_m, settings.hnsw_ef_construction, settings.hnsw_ef_search)

    t0 = time.perf_counter()
    built = build_faq_index(bank, encoder, params, progress=progress)
    with tempfile.TemporaryDirectory(prefix="retrieval-eval-") as tmp:
        built.save(Path(tmp) / "faq")
        index = VectorIndex.load(Path(tmp) / "faq", ef=settings.hnsw_ef_search)
    build_s = time.perf_counter() - t0

    qvecs, encode_ms = _encode_one_by_one(encoder, [q.text or "" for q in queries], progress)
    tvecs = encoder.encode([q.text or "" for q in train], progress=progress) if train else None
    results = [
        _system(index, setup, queries, qvecs, encode_ms, train, tvecs, settings, build_s, encoder)
    ]
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
    info = {
        "n_entries": len(bank),
        "train_as_examples": bool(train_as_examples and train),
        "n_vectors": len(index),
        "text_encoder": encoder.id,
        "hnsw": {"m": params.m, "ef_construction": params.ef_construction, "ef": params.ef},
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
