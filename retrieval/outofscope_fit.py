"""Fitting the out-of-scope (hand-off) signal of :mod:`retrieval.outofscope` for an FAQ
bank, from the shop's own data and the built-in off-topic messages.

**Threshold (operating point).** Fitted by entry-holdout cross-validation: the threshold
``t`` maximises the expected accuracy at an assumed out-of-scope share ``prior`` (0.5:
real traffic often has half or more unanswerable messages)::

    (1 - prior) * P(answered and right | in scope) + prior * P(handed off | out of scope)

where the out-of-scope side is a weighted mix of the off-topic set, agent-labelled
questions and held-out-entry questions (``near_weight``; 0 by default). Then, among the
thresholds whose accuracy is within ``tolerance_se`` (1.5) standard errors of the best, the
one that answers the most is kept: hand off only on evidence. Both defaults were chosen by
nested cross-validation on the HINT3 train files and Bitext as the most rejecting rule
that hands off at most 1 % of the in-scope questions Bitext answers right. Weighing
held-out entries (0.5) rejects many more in-domain unanswerable questions (cross-validated
accuracy at prior 0.5 about 0.85 instead of 0.77 on the HINT3 shops), but holding out one
of two sibling entries ("track refund" / "get refund") makes pseudo out-of-scope questions
nearer than real ones, and placing the threshold on them handed off 6-13 % of rightly
ranked in-scope questions (6 % on Bitext). They still drive the choice of signal and are reported
in the cross-validation figures (:attr:`OutOfScopeModel.meta`).

Pure numpy and scikit-learn; no I/O besides reading the built-in off-topic file: vectors
in, a frozen model out, arrays and a JSON-able dict for storage in an index version.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .answer_head import fit_head
from .outofscope import DUPLICATE, OutOfScopeModel, entry_scores, vector_rows

__all__ = [
    "OFFTOPIC_PATH",
    "ThresholdChoice",
    "choose_threshold",
    "fit_out_of_scope",
    "load_offtopic",
]

PRIOR = 0.5  # assumed out-of-scope share of traffic
BLEND = 1.0  # weight of P(entry | question) added to the cosine
STRENGTH = 10.0  # inverse L2 penalty of the logistic regression (scikit-learn's C)
FOLDS = 5
TOLERANCE_SE = 1.5  # answer-most threshold within this many standard errors of the best
NEAR_WEIGHT = 0.0  # weight of held-out-entry questions in the out-of-scope mix
AGENT_WEIGHT = 1.0  # weight of agent-labelled out-of-scope questions (off-topic set: 1)
NEGATIVE_OVERLAP_QUANTILE = 0.25  # a negative this close to the bank is dropped (see below)
MAX_HEAD_ENTRIES = 1000  # above this, no logistic regression (cosine alone)
MIN_LOG = 50  # unlabelled log questions needed before the prior is estimated from them
PRIOR_RANGE = (0.2, 0.8)  # an estimated prior is clipped to this range
HEAD_MAX_ITER = 3000
OFFTOPIC_PATH = Path(__file__).resolve().parent / "data" / "offtopic.jsonl"


def _dim_of(*arrays: np.ndarray | None) -> int:
    for a in arrays:
        if a is not None and np.size(a):
            a = np.asarray(a)
            return int(a.shape[-1])
    return 0


def load_offtopic(
    path: Path | str = OFFTOPIC_PATH, langs: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """The built-in off-topic messages (``{"text", "lang", "kind"}`` per line), optionally
    only those in ``langs``. The one reader of the file; the caller encodes the texts."""
    wanted = None if langs is None else set(langs)
    rows = []
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                if wanted is None or row.get("lang") in wanted:
                    rows.append(row)
    return rows


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold on the in-scope score (answer when ``score >= threshold``) and what it
    did on the cross-validated questions it was chosen on."""

    threshold: float
    accuracy: float  # expected accuracy at the prior, on the cross-validated questions
    answered_right: float  # share of in-scope questions answered with the right entry
    handed_off: dict[str, float]  # per out-of-scope group: share handed off
    best_accuracy: float  # before the tolerance moved the threshold down


def choose_threshold(
    in_scores: np.ndarray,
    in_correct: np.ndarray,
    oos: Mapping[str, tuple[np.ndarray, float]],
    *,
    prior: float = PRIOR,
    tolerance_se: float = TOLERANCE_SE,
) -> ThresholdChoice:
    """The threshold on in-scope scores maximising ``(1 - prior) * P(answered and right |
    in scope) + prior * sum_g w_g * P(handed off | group g)`` (weights ``w_g`` normalised),
    then the lowest threshold (the one answering most) whose accuracy is within
    ``tolerance_se`` standard errors (binomial, at the best threshold) of the best.

    ``oos`` maps a group name to (scores, weight); empty groups and zero weights are
    ignored. A question is answered when its score is ``>=`` the threshold; candidates are
    the midpoints between consecutive distinct scores and one below / above them all.
    """
    s_in = np.asarray(in_scores, dtype=np.float64)
    ok = np.asarray(in_correct, dtype=bool)
    groups = {
        g: (np.asarray(v, dtype=np.float64), float(w))
        for g, (v, w) in oos.items()
        if len(v) and w > 0
    }
    if not groups or len(s_in) == 0:  # nothing to weigh: answer everything
        share = float(ok.mean()) if len(ok) else 0.0
        return ThresholdChoice(-math.inf, (1 - prior) * share, share, {}, (1 - prior) * share)
    total = sum(w for _, w in groups.values())
    allv = np.concatenate([s_in, *[v for v, _ in groups.values()]])
    cuts = np.unique(allv)
    cand = np.concatenate([[cuts[0] - 1e-6], (cuts[1:] + cuts[:-1]) / 2, [cuts[-1] + 1e-6]])
    n_in = max(len(s_in), 1)
    # answered-and-right counts per candidate: right questions with score >= cand
    right = np.sort(s_in[ok])
    a_in = (len(right) - np.searchsorted(right, cand, side="left")) / n_in
    acc = (1 - prior) * a_in
    var = (1 - prior) ** 2 * a_in * (1 - a_in) / n_in
    tnr: dict[str, np.ndarray] = {}
    for g, (v, w) in groups.items():
        sv = np.sort(v)
        t = np.searchsorted(sv, cand, side="left") / len(sv)  # share below the threshold
        tnr[g] = t
        acc = acc + prior * (w / total) * t
        var = var + (prior * w / total) ** 2 * t * (1 - t) / len(sv)
    best = int(np.argmax(acc))
    margin = tolerance_se * math.sqrt(max(var[best], 0.0))
    pick = int(np.flatnonzero(acc >= acc[best] - margin - 1e-12)[0])  # lowest such candidate
    return ThresholdChoice(
        float(cand[pick]),
        float(acc[pick]),
        float(a_in[pick]),
        {g: float(t[pick]) for g, t in tnr.items()},
        float(acc[best]),
    )


def _dedup_questions(refs: np.ndarray, questions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(same[i, d]: question i is reference d's text, question i has a twin)."""
    if len(questions) == 0 or len(refs) == 0:
        same = np.zeros((len(questions), len(refs)), dtype=bool)
        return same, np.asarray(same.any(axis=1))
    same = np.asarray((questions @ refs.T) > DUPLICATE)
    return same, np.asarray(same.any(axis=1))


def _negatives_kept(
    negatives: np.ndarray, refs: np.ndarray, owners: np.ndarray, quantile: float
) -> np.ndarray:
    """Mask of built-in negatives to keep: a negative at least as close to a reference as a
    typical reference is to its own entry's nearest other reference (``quantile`` of those
    leave-one-out cosines) is something this bank may answer ("hi" for a bank with a
    greeting entry), so it is dropped."""
    if len(negatives) == 0 or len(refs) == 0:
        return np.ones(len(negatives), dtype=bool)
    sims = refs @ refs.T
    np.fill_diagonal(sims, -2.0)
    sims[sims > DUPLICATE] = -2.0
    same_entry = owners[:, None] == owners[None, :]
    nearest = np.where(same_entry, sims, -2.0).max(axis=1)
    nearest = nearest[nearest > -2.0]
    tau = float(np.quantile(nearest, quantile)) if len(nearest) else DUPLICATE
    keep: np.ndarray = (negatives @ refs.T).max(axis=1) < tau
    return keep


def _folds(
    n_entries: int, item_owner: np.ndarray, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Entry fold per entry and question fold per in-scope item, never the item's entry
    fold (each item is scored once as in scope, and once as out of scope when its entry
    is held out)."""
    entry_fold = np.empty(n_entries, dtype=np.int64)
    entry_fold[rng.permutation(n_entries)] = np.arange(n_entries) % k
    item_fold = np.empty(len(item_owner), dtype=np.int64)
    for j in range(n_entries):
        idx = np.flatnonzero(item_owner == j)
        rng.shuffle(idx)
        if k > 1:
            item_fold[idx] = (
                entry_fold[j] + 1 + (np.arange(len(idx)) + rng.integers(k - 1)) % (k - 1)
            ) % k
        else:
            item_fold[idx] = 0
    return entry_fold, item_fold


def _sorted_by_owner(refs: np.ndarray, owners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(owners, kind="stable")
    return refs[order], owners[order]


def fit_out_of_scope(
    phrasings: np.ndarray,
    owners: Sequence[int] | np.ndarray,
    questions: np.ndarray | None = None,
    question_owners: Sequence[int] | np.ndarray | None = None,
    negatives: np.ndarray | None = None,
    *,
    labelled_out_of_scope: np.ndarray | None = None,
    agent_out_of_scope: np.ndarray | None = None,
    agent_weight: float = AGENT_WEIGHT,
    query_log: np.ndarray | None = None,
    n_entries: int | None = None,
    prior: float = PRIOR,
    near_weight: float = NEAR_WEIGHT,
    tolerance_se: float = TOLERANCE_SE,
    blend: float = BLEND,
    strength: float = STRENGTH,
    folds: int = FOLDS,
    max_head_entries: int = MAX_HEAD_ENTRIES,
    seed: int = 0,
) -> OutOfScopeModel:
    """Fit the out-of-scope signal of an FAQ bank and choose its threshold by entry-holdout
    cross-validation.

    ``phrasings`` (n, dim) are the bank's unit vectors and ``owners[i]`` the entry row of
    phrasing i (rows 0..n_entries-1). ``questions`` / ``question_owners`` are labelled
    in-scope questions (a question whose vector equals a phrasing is scored without that
    phrasing); without any, the phrasings themselves are the in-scope questions.
    ``negatives`` are the encoded built-in off-topic messages (:func:`load_offtopic`), less
    those the bank covers (see ``_negatives_kept``). ``labelled_out_of_scope`` are the
    operators' labelled out-of-scope questions (the calibration file's, weight 1);
    ``agent_out_of_scope`` are questions the shop's agents marked as out of scope (noisy),
    a group of weight ``agent_weight`` beside the off-topic set (weight 1) and held-out
    entries (``near_weight``). ``query_log``:
    unlabelled questions from traffic; with at least ``MIN_LOG`` of them the out-of-scope
    share is estimated from how many the cross-validated threshold would answer
    (black-box shift estimation), clipped to ``PRIOR_RANGE``, and used instead of ``prior``.

    Cross-validation: entries fall into ``folds`` folds; in fold f the entries of fold f
    are removed (their questions and phrasings are scored as out of scope), and a share of
    the other entries' questions is held out and scored as in scope, against a model
    fitted on what remains. The built-in and agent negatives are scored by every fold's
    model. :func:`choose_threshold` then picks the threshold. A bank with one entry cannot
    hold an entry out: its questions are scored leave-one-out and the negatives decide.
    """
    dim = _dim_of(
        phrasings, questions, negatives, labelled_out_of_scope, agent_out_of_scope, query_log
    )
    p = vector_rows(phrasings, dim)
    o = np.asarray(owners, dtype=np.int64).reshape(-1)
    n = int(n_entries if n_entries is not None else (o.max() + 1 if len(o) else 0))
    q = vector_rows(questions, dim)
    qo = np.asarray(question_owners if question_owners is not None else [], dtype=np.int64).reshape(
        -1
    )
    if len(qo) != len(q) or len(o) != len(p):
        raise ValueError("one owner per phrasing and per labelled question expected")
    for own in (o, qo):
        if len(own) and (own.min() < 0 or own.max() >= n):
            raise ValueError("owners must be entry rows in 0..n_entries-1")
    neg_all = vector_rows(negatives, dim)
    labelled_oos = vector_rows(labelled_out_of_scope, dim)
    agent = vector_rows(agent_out_of_scope, dim)
    log = vector_rows(query_log, dim)
    settings = {
        "prior": prior,
        "near_weight": near_weight,
        "agent_weight": agent_weight,
        "tolerance_se": tolerance_se,
        "strength": strength,
        "folds": folds,
        "seed": seed,
    }

    # the reference set: phrasings plus labelled questions that are not a phrasing's twin
    same, twin = _dedup_questions(p, q)
    refs = np.concatenate([p, q[~twin]]) if len(q) else p
    ref_owner = np.concatenate([o, qo[~twin]]) if len(q) else o
    use_head = 2 <= n <= max_head_entries and len(refs) > 0
    blend_used = float(blend) if use_head else 0.0

    if n == 0 or len(refs) == 0:
        meta = {
            "settings": settings,
            "source": "empty bank: every question is handed off",
            "signals": "none",
            "cv": {},
        }
        return OutOfScopeModel(
            np.zeros((0, dim), np.float32),
            np.zeros(0, np.int64),
            n,
            None,
            None,
            0.0,
            math.inf,
            meta,
        )

    keep_neg = _negatives_kept(neg_all, refs, ref_owner, NEGATIVE_OVERLAP_QUANTILE)
    neg = neg_all[keep_neg]

    # in-scope items scored in cross-validation: the labelled questions, else the phrasings;
    # an item is scored without every reference that is its text (itself, twins)
    items, item_owner = (q, qo) if len(q) else (p, o)
    item_refs = (items @ refs.T) > DUPLICATE
    rng = np.random.default_rng(seed)
    if n >= 2:
        k = max(2, folds)  # folds beyond the entries' count hold only in-scope items
        entry_fold, item_fold = _folds(n, item_owner, k, rng)
    else:  # no entry can be held out: items scored k-fold, the negatives decide
        k = max(1, min(max(2, folds), len(items)))
        entry_fold = np.full(1, -1)
        item_fold = rng.permutation(len(items)) % k

    in_s, in_ok, near_s, neg_s, labelled_s, agent_s = [], [], [], [], [], []
    for f in range(k):
        held_entries = entry_fold == f
        held_items = item_fold == f
        hide = item_refs[held_items].any(axis=0) | held_entries[ref_owner]
        fit_r, fit_o = refs[~hide], ref_owner[~hide]
        if len(fit_r) == 0:
            continue
        fit_r, fit_o = _sorted_by_owner(fit_r, fit_o)
        w = b = None
        if use_head and len(np.unique(fit_o)) >= 2:
            w, b = fit_head(fit_r, fit_o, n, strength, max_iter=HEAD_MAX_ITER)

        def scores(x: np.ndarray) -> np.ndarray:
            return entry_scores(x, fit_r, fit_o, n, w, b, blend_used)  # noqa: B023

        # in scope: held items whose entry is still in the bank
        live = held_items & ~held_entries[item_owner] & np.isin(item_owner, fit_o)
        if live.any():
            es = scores(items[live])
            in_s.append(es.max(axis=1))
            in_ok.append(es.argmax(axis=1) == item_owner[live])
        if held_entries.any():
            oos_items = items[held_entries[item_owner]]
            extra = (
                p[held_entries[o] & ~same.any(axis=0)] if len(q) else np.zeros((0, dim), np.float32)
            )
            x = np.concatenate([oos_items, extra])
            if len(x):
                near_s.append(scores(x).max(axis=1))
        if len(neg):
            neg_s.append(scores(neg).max(axis=1))
        if len(labelled_oos):
            labelled_s.append(scores(labelled_oos).max(axis=1))
        if len(agent):
            agent_s.append(scores(agent).max(axis=1))

    def cat(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(0)

    s_in, ok_in = cat(in_s), cat(in_ok).astype(bool)
    groups = {
        "off-topic messages": (cat(neg_s), 1.0),
        "labelled out-of-scope questions": (cat(labelled_s), 1.0),
        "agent-labelled out-of-scope questions": (cat(agent_s), float(agent_weight)),
        "held-out-entry questions": (cat(near_s), float(near_weight)),
    }
    weighted = {g: v for g, v in groups.items() if len(v[0]) and v[1] > 0}
    note = ""
    if not weighted and len(groups["held-out-entry questions"][0]):
        # no negatives at all: the held-out entries are the only out-of-scope evidence
        weighted = {"held-out-entry questions": (groups["held-out-entry questions"][0], 1.0)}
        note = " (no off-topic or agent negatives: held-out entries used instead)"

    # final model on everything
    refs_s, owners_s = _sorted_by_owner(refs, ref_owner)
    w_all = b_all = None
    if use_head:
        w_all, b_all = fit_head(refs_s, owners_s, n, strength, max_iter=HEAD_MAX_ITER)

    cv: dict[str, Any] = {
        "in_scope_questions": int(len(s_in)),
        "ranked_right": float(ok_in.mean()) if len(ok_in) else None,
        "negatives_given": int(len(neg_all)),
        "negatives_used": int(len(neg)),
        "labelled_out_of_scope": int(len(labelled_oos)),
        "agent_out_of_scope": int(len(agent)),
        "held_out_entry_questions": int(len(groups["held-out-entry questions"][0])),
    }
    if len(s_in) == 0 and weighted:
        # no honest in-scope score (every entry a single phrasing, no labelled questions):
        # the threshold sits above 95% of the off-topic scores of the full model
        full = OutOfScopeModel(refs_s, owners_s, n, w_all, b_all, blend_used, 0.0, {})
        pool = np.concatenate([full.in_scope_scores(x) for x in (neg, labelled_oos, agent)])
        if len(pool) == 0:
            pool = cat([v for v, _ in weighted.values()])
        threshold = float(np.quantile(pool, 0.95)) if len(pool) else -math.inf
        source = (
            "no in-scope question could be scored without its own phrasing: threshold above "
            "95% of the off-topic messages' scores"
        )
        choice = None
    elif not weighted:
        threshold, choice = -math.inf, None
        source = "no out-of-scope evidence (no negatives, no entry to hold out): answers everything"
    else:
        choice = choose_threshold(s_in, ok_in, weighted, prior=prior, tolerance_se=tolerance_se)
        threshold = choice.threshold
        how = (
            f"{k}-fold entry-holdout cross-validation"
            if n >= 2
            else "one entry, so no entry holdout: leave-one-out in-scope scores against the off-topic messages"
        )
        source = (
            f"{how}; maximum expected accuracy at an assumed out-of-scope share {prior:g}, "
            f"out-of-scope side = "
            + ", ".join(f"{g} (weight {v[1]:g})" for g, v in weighted.items())
            + note
            + f"; then the most-answering threshold within {tolerance_se:g} SE of the best"
        )
        # unlabelled traffic: estimate the out-of-scope share and choose again
        if len(log) >= MIN_LOG:
            full = OutOfScopeModel(refs_s, owners_s, n, w_all, b_all, blend_used, threshold, {})
            answered_log = float((full.in_scope_scores(log) >= threshold).mean())
            answered_in = float((s_in >= threshold).mean())
            tot = sum(v[1] for v in weighted.values())
            answered_oos = sum(
                v[1] / tot * float((v[0] >= threshold).mean()) for v in weighted.values()
            )
            if answered_in - answered_oos > 0.05:
                est = (answered_in - answered_log) / (answered_in - answered_oos)
                est = float(np.clip(est, *PRIOR_RANGE))
                choice = choose_threshold(
                    s_in, ok_in, weighted, prior=est, tolerance_se=tolerance_se
                )
                threshold = choice.threshold
                cv["estimated_prior"] = est
                source += (
                    f"; out-of-scope share re-estimated from {len(log)} logged questions as "
                    f"{est:.2f} and the threshold chosen again"
                )
    if choice is not None:
        cv.update(
            accuracy=choice.accuracy,
            best_accuracy=choice.best_accuracy,
            answered_right=choice.answered_right,
            handed_off=choice.handed_off,
        )
        if len(near_s) and "held-out-entry questions" not in choice.handed_off:
            near = cat(near_s)
            cv["handed_off"]["held-out-entry questions (not weighed)"] = float(
                (near < threshold).mean()
            )
    meta = {
        "settings": settings,
        "source": source,
        "signals": "max_entry(cosine to nearest reference + blend * P_head(entry))",
        "cv": json.loads(json.dumps(cv)),
    }
    return OutOfScopeModel(refs_s, owners_s, n, w_all, b_all, blend_used, float(threshold), meta)
