"""Judging a candidate model against the current one on held-out labelled questions.

Each model gets its own thresholds, fitted on its held-out scores (:func:`fit_thresholds`);
both are then measured with the evaluation code (:func:`retrieval.evaluation.faq.evaluate_faq`)
with those thresholds. The promotion rule: the candidate's held-out MRR@10 and overall
accuracy are both at least the current model's, and one of them is higher.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..encoders.base import Encoder
from ..evaluation.baselines import best_per_item
from ..evaluation.faq import FAQSetup, evaluate_faq
from ..evaluation.metrics import Outcome, summarize
from ..faq import FAQBank
from ..labelled import LabelledQuery
from ..settings import Settings
from .fitting import ThresholdFit, fit_thresholds

__all__ = [
    "HeldoutScores",
    "Judgement",
    "better",
    "heldout_scores",
    "judge_model",
    "judge_scores",
    "pooled",
]

EPS = 1e-9


RANKED = 10  # answer groups kept per question, for MRR@10


@dataclass(frozen=True)
class HeldoutScores:
    top: np.ndarray
    second: np.ndarray
    in_scope: np.ndarray
    ranked: tuple[tuple[str, ...], ...]  # each question's best answer groups, best first
    relevant: tuple[frozenset[str], ...]  # the groups of its relevant entries

    @property
    def correct(self) -> np.ndarray:
        """Whether each question's top answer group is a right one."""
        return np.array(
            [bool(r) and r[0] in rel for r, rel in zip(self.ranked, self.relevant, strict=True)],
            dtype=bool,
        )


@dataclass(frozen=True)
class Judgement:
    thresholds: ThresholdFit
    metrics: dict[str, Any]  # the evaluation's metrics of the system on held-out


def heldout_scores(
    encoder: Encoder, bank: FAQBank, queries: Sequence[LabelledQuery]
) -> HeldoutScores:
    """Top and runner-up answer-group scores of each held-out question (exact search); a
    question that is itself a phrasing of the bank is scored without that phrasing."""
    setup = FAQSetup.of(bank)
    docs = encoder.encode(list(setup.texts), progress=False)
    qvecs = encoder.encode([q.text or "" for q in queries], progress=False)
    group_index = {g: i for i, g in enumerate(sorted(set(setup.groups.values())))}
    owners = np.asarray(
        [group_index[setup.groups[setup.entry_ids[o]]] for o in setup.owners], dtype=np.int64
    )
    names = sorted(group_index)
    top, second, in_scope, ranked, relevant = [], [], [], [], []
    for q, vec in zip(queries, qvecs, strict=True):
        masked = setup.same_text(q.text or "")
        idx, s = best_per_item(docs @ vec, owners, len(group_index), RANKED, masked=masked)
        top.append(float(s[0]) if len(s) else -1.0)
        second.append(float(s[1]) if len(s) > 1 else -1.0)
        in_scope.append(bool(q.relevant))
        ranked.append(tuple(names[int(i)] for i in idx))
        relevant.append(frozenset(setup.groups[r] for r in q.relevant if r in setup.groups))
    return HeldoutScores(
        np.asarray(top),
        np.asarray(second),
        np.asarray(in_scope),
        tuple(ranked),
        tuple(relevant),
    )


def pooled(parts: Sequence[HeldoutScores]) -> HeldoutScores:
    """The scores of several held-out sets (cross-validation folds) as one set."""
    return HeldoutScores(
        np.concatenate([p.top for p in parts]),
        np.concatenate([p.second for p in parts]),
        np.concatenate([p.in_scope for p in parts]),
        tuple(r for p in parts for r in p.ranked),
        tuple(r for p in parts for r in p.relevant),
    )


def judge_scores(scores: HeldoutScores) -> Judgement:
    """Thresholds fitted on ``scores`` and the evaluation's metrics with them, computed from
    the scores themselves (exact search over answer groups, as :func:`heldout_scores`
    ranks them): what cross-validation judges on, where no single index holds every fold."""
    fit = fit_thresholds(scores.top, scores.second, scores.correct, scores.in_scope)
    answered = (scores.top >= fit.answer_threshold) & (
        scores.top - scores.second >= fit.margin - 1e-9
    )
    outcomes = [
        Outcome(ranked, relevant, float(top), bool(a))
        for ranked, relevant, top, a in zip(
            scores.ranked, scores.relevant, scores.top, answered, strict=True
        )
    ]
    return Judgement(fit, summarize(outcomes, abstention=True))


def judge_model(
    settings: Settings,
    encoder: Encoder,
    bank: FAQBank,
    bank_path: Path,
    heldout: Sequence[LabelledQuery],
    heldout_path: Path,
    *,
    progress: bool = False,
) -> Judgement:
    """Fit the thresholds of ``encoder`` on held-out and measure it there with them."""
    scores = heldout_scores(encoder, bank, heldout)
    fit = fit_thresholds(scores.top, scores.second, scores.correct, scores.in_scope)
    tuned = settings.model_copy(
        update={
            "answer_threshold": fit.answer_threshold,
            "suggest_threshold": fit.suggest_threshold,
            "answer_margin": fit.margin,
        }
    )
    # latency_sample=0: each question answered once (the judgement reads no timings)
    evaluation = evaluate_faq(
        tuned,
        bank_path,
        heldout_path,
        None,
        encoder=encoder,
        progress=progress,
        dataset="heldout",
        latency_sample=0,
    )
    return Judgement(fit, evaluation.system.metrics)


def better(candidate: dict[str, Any], current: dict[str, Any]) -> bool:
    """The promotion rule: MRR@10 and overall accuracy not worse, and one of them better."""
    keys = ("mrr_at_10", "overall_accuracy")
    c = [float(candidate.get(k) or 0.0) for k in keys]
    r = [float(current.get(k) or 0.0) for k in keys]
    not_worse = all(a >= b - EPS for a, b in zip(c, r, strict=True))
    return not_worse and any(a > b + EPS for a, b in zip(c, r, strict=True))
