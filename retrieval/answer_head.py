"""The answer head: a linear classifier over the FAQ's entries that re-scores the nearest
neighbours.

Nearest-neighbour search asks "which phrasing is closest to this question?". A shop that
has labelled questions (the calibration file) can also ask "which entry do questions like
this one belong to?": a multinomial logistic regression on the same sentence vectors,
trained on every phrasing of the bank and every labelled in-scope question. It learns
which directions of the embedding separate the shop's answers, where cosine weighs all
directions alike. A candidate's score becomes

    score(entry) = cosine(question, entry's closest phrasing) + blend · P(entry | question)

When the labelled questions include out-of-scope ones (an empty answer list), the head may
also learn an *out-of-scope* class: probability it gives that class is taken from the
entries, so a question that looks like what the shop cannot answer scores lower everywhere
and falls below the answer threshold more often. Cross-validation decides whether to keep it.

The head is fitted when the FAQ index is built (ingest, re-index), kept in the index
version beside the vectors, so it always matches that version's entries. Its strength and
blend are chosen by cross-validation on the labelled questions (:func:`select_head`),
which also yields the answer threshold on the blended scale; when no choice beats plain
cosine there, no head is kept. All functions here are pure numpy (and scikit-learn's
solver): the index and the encoder are the caller's.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .decision import calibrate_threshold

__all__ = [
    "AnswerHead",
    "HeadChoice",
    "entry_scores",
    "fit_head",
    "select_head",
]

log = logging.getLogger(__name__)

STRENGTHS = (10.0, 100.0)  # inverse L2 penalty (scikit-learn's C) tried by select_head
BLENDS = (0.25, 0.5, 1.0)  # weight of the probability added to the cosine
FOLDS = 5
MIN_QUESTIONS = 20  # labelled questions needed before a head is worth choosing
MIN_OUT_OF_SCOPE = 5  # out-of-scope questions needed before an out-of-scope class is tried
# a head must beat cosine alone by this much cross-validated accuracy, and by at least
# MIN_GAIN_QUESTIONS questions: one more right answer in 74 is noise, not evidence
MIN_GAIN = 0.01
MIN_GAIN_QUESTIONS = 2
ARRAY_WEIGHTS = "answer_head_weights"  # names of the head's arrays in a VectorIndex
ARRAY_BIAS = "answer_head_bias"


@dataclass(frozen=True)
class AnswerHead:
    """Weights and bias per entry (rows in ``entry_ids`` order, then the out-of-scope class
    when ``out_of_scope``) and the blend weight."""

    entry_ids: tuple[str, ...]
    weights: np.ndarray  # (n_entries [+ 1], dim)
    bias: np.ndarray  # (n_entries [+ 1],)
    blend: float
    strength: float
    out_of_scope: bool = False  # a last row for questions the shop has no answer for

    def __post_init__(self) -> None:
        rows = len(self.entry_ids) + int(self.out_of_scope)
        if self.weights.shape != (rows, self.weights.shape[1]):
            raise ValueError("answer head: one weight row per entry (and out-of-scope) expected")
        if self.bias.shape != (rows,):
            raise ValueError("answer head: one bias per entry (and out-of-scope) expected")
        object.__setattr__(self, "_row", {e: i for i, e in enumerate(self.entry_ids)})

    def probabilities(self, vector: np.ndarray) -> np.ndarray:
        """P(entry | question) for every entry, in ``entry_ids`` order (with an out-of-scope
        class they sum to 1 - P(out of scope))."""
        p = softmax(self.weights @ np.asarray(vector, dtype=np.float32) + self.bias)
        return p[: len(self.entry_ids)]

    def rescore(
        self, vector: np.ndarray, entry_ids: Sequence[str], scores: Sequence[float]
    ) -> list[float]:
        """Cosine scores of candidate entries plus ``blend`` times their probability (an
        entry the head does not know gets none)."""
        p = self.probabilities(vector)
        row = self._row  # type: ignore[attr-defined]
        return [
            float(s) + (self.blend * float(p[row[e]]) if e in row else 0.0)
            for e, s in zip(entry_ids, scores, strict=True)
        ]

    def describe(self) -> dict:
        return {
            "entries": len(self.entry_ids),
            "blend": self.blend,
            "strength": self.strength,
            "out_of_scope": self.out_of_scope,
        }


@dataclass(frozen=True)
class HeadChoice:
    """What :func:`select_head` found: the head (or None: cosine alone was as good), the
    answer threshold on its scale and the cross-validated accuracy behind the choice."""

    head: AnswerHead | None
    threshold: float
    accuracy: float
    cosine_accuracy: float


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def entry_scores(
    questions: np.ndarray,
    phrasings: np.ndarray,
    owners: np.ndarray,
    n_entries: int,
    masked: np.ndarray | None = None,
    *,
    missing: float = -1.0,
) -> np.ndarray:
    """(questions x entries) best cosine per entry (or item: any owner of several vectors),
    exact; ``masked[i, d]`` hides vector ``d`` from question ``i`` (a labelled question that
    is itself a phrasing of the bank). An entry with no vector scores ``missing``."""
    sims = questions @ phrasings.T
    if masked is not None:
        sims = np.where(masked, -np.inf, sims)
    out = np.full((len(questions), n_entries), missing, dtype=np.float64)
    order = np.argsort(owners, kind="stable")
    bounds = np.searchsorted(owners[order], np.arange(n_entries + 1))
    for j in range(n_entries):
        cols = order[bounds[j] : bounds[j + 1]]
        if len(cols):
            out[:, j] = np.maximum(sims[:, cols].max(axis=1), -1.0)
    return out


def fit_head(
    vectors: np.ndarray,
    labels: np.ndarray,
    n_entries: int,
    strength: float,
    *,
    max_iter: int = 2000,
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression; returns (weights, bias) with a row for every entry
    (an entry without a training row gets a large negative bias: probability ~0)."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    present = np.unique(labels)
    weights = np.zeros((n_entries, vectors.shape[1]), dtype=np.float32)
    bias = np.full(n_entries, -30.0, dtype=np.float32)
    if len(present) == 1:
        bias[present[0]] = 0.0
        return weights, bias
    model = LogisticRegression(C=strength, max_iter=max_iter)
    # one BLAS thread: these problems are small, and on a busy machine more threads make
    # each lbfgs step wait for the others (7 s instead of 0.2 s for Bitext on 2 cores)
    with threadpool_limits(1), warnings.catch_warnings():
        # a bank of one phrasing per entry has as many classes as rows, which scikit-learn
        # warns about; that is the intent here
        warnings.filterwarnings("ignore", message="The number of unique classes")
        model.fit(vectors, labels)
    if len(present) == 2:  # scikit-learn keeps one row for two classes
        w, b = model.coef_[0] / 2, model.intercept_[0] / 2
        weights[present[0]], bias[present[0]] = -w, -b
        weights[present[1]], bias[present[1]] = w, b
    else:
        weights[model.classes_] = model.coef_
        bias[model.classes_] = model.intercept_
    return weights, bias


def _training_rows(
    phrasings: np.ndarray,
    owners: np.ndarray,
    questions: np.ndarray,
    labels: np.ndarray,
    keep_phrasing: np.ndarray,
    keep_question: np.ndarray,
    out_of_scope_label: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Phrasings with their entry and labelled questions with theirs; out-of-scope
    questions (label -1) join as ``out_of_scope_label`` when one is given."""
    if out_of_scope_label is None:
        keep_question = keep_question & (labels >= 0)
    else:
        labels = np.where(labels >= 0, labels, out_of_scope_label)
    x = np.concatenate([phrasings[keep_phrasing], questions[keep_question]])
    y = np.concatenate([owners[keep_phrasing], labels[keep_question]])
    return x, y


def select_head(
    entry_ids: Sequence[str],
    phrasings: np.ndarray,
    owners: np.ndarray,
    questions: np.ndarray,
    relevant: Sequence[set[int]],
    masked: np.ndarray,
    *,
    strengths: Sequence[float] = STRENGTHS,
    blends: Sequence[float] = BLENDS,
    folds: int = FOLDS,
) -> HeadChoice:
    """Choose strength and blend by ``folds``-fold cross-validation on the labelled
    questions, then fit the head on everything.

    ``relevant[i]`` holds question i's right entries (row numbers; empty = out of scope);
    ``masked[i, d]`` says phrasing d has question i's text (it is then hidden from that
    question's cosine and left out of the head that scores it). Each candidate setting is
    judged by the overall accuracy (ties: hit@1) of its cross-fitted scores at the threshold
    that is best for them. Cosine alone is kept unless a head beats it by the noise guard:
    ``MIN_GAIN`` accuracy and ``MIN_GAIN_QUESTIONS`` questions. With at least
    ``MIN_OUT_OF_SCOPE`` out-of-scope questions each setting is also tried with an
    out-of-scope class, kept only when it beats what the first step kept (the best head
    without one, or cosine alone) by the same guard.
    """
    n, nq = len(entry_ids), len(questions)
    in_scope = np.array([bool(r) for r in relevant])
    labels = np.array([min(r) if r else -1 for r in relevant], dtype=np.int64)
    cosine = entry_scores(questions, phrasings, owners, n, masked)

    def judge(scores: np.ndarray) -> tuple[float, float, float]:
        top = scores.argmax(axis=1)
        correct = np.array([t in r for t, r in zip(top, relevant, strict=True)])
        threshold, accuracy = calibrate_threshold(scores.max(axis=1), correct, in_scope)
        hit = float(correct[in_scope].mean()) if in_scope.any() else 0.0
        return accuracy, hit, threshold

    base_acc, base_hit, base_thr = judge(cosine)
    base = (base_acc, base_hit, None, 0.0, base_thr, False)
    by_class = {False: base, True: base}  # the best setting without / with an out-of-scope class
    classes = (False, True) if (~in_scope).sum() >= MIN_OUT_OF_SCOPE else (False,)
    if nq >= MIN_QUESTIONS and in_scope.sum() >= 2:
        fold_of = np.arange(nq) % folds
        for strength in strengths:
            for oos in classes:
                probs = np.zeros((nq, n))
                for f in range(folds):
                    held = fold_of == f
                    keep_phr = ~masked[held].any(axis=0)
                    x, y = _training_rows(
                        phrasings, owners, questions, labels, keep_phr, ~held, n if oos else None
                    )
                    w, b = fit_head(x, y, n + oos, strength)
                    probs[held] = softmax(questions[held] @ w.T + b)[:, :n]
                for blend in blends:
                    acc, hit, thr = judge(cosine + blend * probs)
                    if (acc, hit) > by_class[oos][:2]:
                        by_class[oos] = (acc, hit, strength, blend, thr, oos)
    # each step up must clear the noise guard: a head over cosine alone, then an
    # out-of-scope class over what the first step kept
    needed = max(MIN_GAIN, MIN_GAIN_QUESTIONS / nq)

    def gains(more: tuple, less: tuple) -> bool:
        better = more[:2] > less[:2]  # (accuracy, hit@1): a tie keeps the simpler
        return more[2] is not None and better and more[0] - less[0] >= needed - 1e-12

    best = by_class[False] if gains(by_class[False], base) else base
    if gains(by_class[True], best):
        best = by_class[True]
    accuracy, _, strength, blend, threshold, oos = best
    head = None
    if strength is not None:
        x, y = _training_rows(
            phrasings,
            owners,
            questions,
            labels,
            np.ones(len(phrasings), bool),
            np.ones(nq, bool),
            n if oos else None,
        )
        w, b = fit_head(x, y, n + oos, strength)
        head = AnswerHead(tuple(entry_ids), w, b, float(blend), float(strength), bool(oos))
    log.info(
        "answer head: %s (best cross-validated accuracy with a head %.3f, with an "
        "out-of-scope class %s, cosine alone %.3f; each step must gain %.3f)",
        "none" if head is None else head.describe(),
        by_class[False][0],
        f"{by_class[True][0]:.3f}" if len(classes) == 2 else "not tried",
        base_acc,
        needed,
    )
    return HeadChoice(head, float(threshold), float(accuracy), float(base_acc))
