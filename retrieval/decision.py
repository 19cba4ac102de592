"""Answer, suggest or hand off: a decision from the ranked FAQ scores, and its calibration.

Pure functions. A query is answered automatically when the best entry is confidently above
the answer threshold *and* clearly ahead of the runner-up (top-1/top-2 margin); shown to an
agent as a suggestion when it is above the suggest threshold; handed off otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

__all__ = [
    "UNSURE_PHOTO",
    "Decision",
    "DecisionPolicy",
    "Verdict",
    "best_threshold",
    "calibrate_threshold",
    "decide",
    "decide_products",
    "hand_off_out_of_scope",
]

# how the logged reason of an answer with products begins (the query log keeps the reason,
# not the basis; the recommendations read it back: retrieval/store/events.py)
PRODUCT_ANSWER = "top product score"
FOLLOW_UP_ANSWER = "follow-up:"
SUGGESTION = "suggestion:"  # cards the bot chose (cheaper, similar, popular): not interest
UNSURE_PHOTO = "unsure photo match"  # shown as "is it one of these?", with a hand-off offer


class Decision(StrEnum):
    ANSWER = "answer"
    SUGGEST = "suggest"
    HANDOFF = "handoff"


@dataclass(frozen=True)
class DecisionPolicy:
    answer_threshold: float = 0.6
    suggest_threshold: float = 0.4
    margin: float = 0.02
    source: str = "default"  # "default", "calibrated" or "settings"
    # product questions: show the matches when the best one scores at least this
    product_threshold: float = 0.35
    photo_threshold: float = 0.2  # image-only scores run lower than text ones
    # a question with a photo whose best shown match scores below this is a suggestion
    photo_sure_threshold: float | None = None
    # share of the shop's own FAQ phrasings allowed to show products (retrieval.product_gate)
    product_false_show: float = 0.1

    def __post_init__(self) -> None:
        if self.suggest_threshold > self.answer_threshold:
            raise ValueError("suggest_threshold must not exceed answer_threshold")


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    top_score: float | None
    margin: float | None
    reason: str
    basis: str = "faq"  # what the decision rests on: "faq" (replies) or "products" (matches)


def decide_products(
    top_score: float | None,
    has_text: bool,
    policy: DecisionPolicy,
    *,
    threshold: float | None = None,
    sure: float | None = None,
) -> Verdict | None:
    """For a product question: answer with the matches when the best is good enough, else
    ``None`` (the FAQ decision stands). ``threshold``: the product gate's (see
    :mod:`retrieval.product_gate`); default the policy's product or photo threshold.

    ``sure`` (questions with a photo): a best match shown but below it is a *suggestion*
    (the shopper is asked "is it one of these?" and offered a person; the question waits in
    the agents' queue), not an answer."""
    if top_score is None:
        return None
    if threshold is None:
        threshold = policy.product_threshold if has_text else policy.photo_threshold
    kind = "product" if has_text else "photo"
    if top_score >= threshold and sure is not None and top_score < sure:
        return Verdict(
            Decision.SUGGEST,
            float(top_score),
            None,
            f"{UNSURE_PHOTO} {top_score:.3f} below the sure level {sure:.3f}: "
            "asked 'is it one of these?'",
            basis="products",
        )
    if top_score >= threshold:
        return Verdict(
            Decision.ANSWER,
            float(top_score),
            None,
            f"{PRODUCT_ANSWER} {top_score:.3f} >= {kind} threshold {threshold:.3f}",
            basis="products",
        )
    return None


def decide(scores: Sequence[float], policy: DecisionPolicy) -> Verdict:
    """Decide from FAQ scores sorted best first (one score per distinct entry)."""
    if len(scores) == 0:
        return Verdict(Decision.HANDOFF, None, None, "no FAQ entries")
    top = float(scores[0])
    margin = float(scores[0] - scores[1]) if len(scores) > 1 else None
    if top >= policy.answer_threshold:
        if margin is None or margin >= policy.margin - 1e-9:
            return Verdict(
                Decision.ANSWER,
                top,
                margin,
                f"top score {top:.3f} >= answer threshold {policy.answer_threshold:.3f}",
            )
        return Verdict(
            Decision.SUGGEST,
            top,
            margin,
            f"top two entries within {policy.margin:.3f} of each other",
        )
    if top >= policy.suggest_threshold:
        return Verdict(
            Decision.SUGGEST,
            top,
            margin,
            f"top score {top:.3f} below answer threshold {policy.answer_threshold:.3f}",
        )
    return Verdict(
        Decision.HANDOFF,
        top,
        margin,
        f"top score {top:.3f} below suggest threshold {policy.suggest_threshold:.3f}",
    )


def hand_off_out_of_scope(verdict: Verdict, in_scope: float, threshold: float) -> Verdict:
    """The FAQ verdict, turned into a hand-off when the question's in-scope score (the
    out-of-scope signal, :mod:`retrieval.outofscope`) is below its threshold: a question
    the bank has no answer for goes to an agent instead of getting the nearest answer."""
    if verdict.decision is Decision.HANDOFF or in_scope >= threshold:
        return verdict
    return Verdict(
        Decision.HANDOFF,
        verdict.top_score,
        verdict.margin,
        f"out of scope: in-scope score {in_scope:.3f} below {threshold:.3f}; handed off",
    )


def best_threshold(
    top_scores: Sequence[float] | np.ndarray,
    correct: Sequence[bool] | np.ndarray,
    in_scope: Sequence[bool] | np.ndarray,
    eligible: Sequence[bool] | np.ndarray | None = None,
) -> tuple[float, float]:
    """The one threshold rule of the project: the answer threshold that maximises overall
    accuracy on labelled questions, and that accuracy.

    A question counts as right when it is answered and its top-1 entry is relevant, or when
    it is out of scope and not answered. It is answered when its top score is >= the
    threshold and it is ``eligible`` (e.g. its top-1/top-2 margin is wide enough; default:
    every question). Ties prefer the midpoint of the first (lowest) best plateau, between
    the scores that bound it: it generalises better than the plateau's edge.
    """
    s = np.asarray(top_scores, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    ins = np.asarray(in_scope, dtype=bool)
    if len(s) == 0:
        raise ValueError("no labelled questions to calibrate on")
    can = np.ones(len(s), dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    cuts = np.unique(np.concatenate([s, [s.min() - 1e-3, s.max() + 1e-3]]))
    thresholds = (cuts[:-1] + cuts[1:]) / 2  # one per distinct way of splitting the scores
    answered = (s[None, :] >= thresholds[:, None]) & can[None, :]
    accuracy = np.mean(np.where(answered, ok & ins, ~ins), axis=1)
    best = float(accuracy.max())
    winners = np.flatnonzero(np.isclose(accuracy, best))
    run_end = winners[0]
    while run_end + 1 < len(accuracy) and np.isclose(accuracy[run_end + 1], best):
        run_end += 1
    # the middle of the first best plateau, between the scores that bound it
    lo, hi = cuts[winners[0]], cuts[run_end + 1]
    return float((lo + hi) / 2), best


def calibrate_threshold(
    top_scores: Sequence[float], correct: Sequence[bool], in_scope: Sequence[bool]
) -> tuple[float, float]:
    """The answer threshold that maximises overall accuracy on labelled questions, without a
    margin rule (:func:`best_threshold`). Returns (threshold, accuracy)."""
    return best_threshold(top_scores, correct, in_scope)
