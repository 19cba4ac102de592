"""Hybrid ranking: fusing dense (cosine) and lexical (BM25) scores.

Fusion (pure functions): :func:`rrf` (reciprocal rank fusion), :func:`weighted`
(``(1 - w) * dense cosine + w * BM25 / the query's best BM25``) and :func:`choose_weight`
(``w`` by k-fold cross-validation on labelled queries).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["WeightChoice", "choose_weight", "hit_at_1", "max_normalized", "rrf", "weighted"]


def rrf(rankings: Sequence[Sequence[str]], k: int = 60) -> list[tuple[str, float]]:
    """Reciprocal rank fusion: each id scores ``sum over rankings of 1 / (k + rank)`` (rank
    from 1; an id repeated in one ranking counts at its first place). Best first; ties keep
    the order in which ids first appear (first ranking first)."""
    if k < 0:
        raise ValueError("k must be >= 0")
    scores: dict[str, float] = {}
    for ranking in rankings:
        seen = set()
        for rank, item in enumerate(ranking, start=1):
            if item in seen:
                continue
            seen.add(item)
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])


def max_normalized(scores: Mapping[str, float]) -> dict[str, float]:
    """Scores divided by the largest (the query's best BM25 score): the best is 1, an item
    sharing no token 0. Empty or all-zero scores give zeros."""
    top = max(scores.values(), default=0.0)
    if not top > 0:
        return {i: 0.0 for i in scores}
    return {i: max(0.0, s) / top for i, s in scores.items()}


def weighted(
    dense: Mapping[str, float], lexical: Mapping[str, float], weight: float
) -> list[tuple[str, float]]:
    """Weighted score fusion of one query's candidates: ``(1 - weight) * dense + weight *
    lexical / max(lexical)``, best first (ties: dense candidates first, in their order).

    - ``dense``: cosine similarities (comparable across queries already, in [-1, 1]);
    - ``lexical``: raw BM25 scores, normalised per query by the query's largest one. BM25 grows
      with the query's length and rare words, so raw scores are not comparable between
      queries; dividing by the maximum keeps 0 = "no shared token" (a min-max would push the
      weakest candidate to 0 however good it is, and depend on how many candidates came);
    - a candidate missing from ``lexical`` scores 0 there; one missing from ``dense`` gets the
      lowest dense score given (it ranked below every dense candidate; callers that can
      should pass its exact cosine instead).
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError("weight must lie in [0, 1]")
    lex = max_normalized(lexical)
    floor = min(dense.values(), default=0.0)
    ids = list(dict.fromkeys([*dense, *lexical]))
    scored = [
        (i, (1.0 - weight) * float(dense.get(i, floor)) + weight * lex.get(i, 0.0)) for i in ids
    ]
    return sorted(scored, key=lambda kv: -kv[1])


def hit_at_1(ranking: Sequence[tuple[str, float]], relevant: Collection[str]) -> float:
    return 1.0 if ranking and ranking[0][0] in relevant else 0.0


@dataclass(frozen=True)
class WeightChoice:
    """The chosen fusion weight and how it was chosen.

    ``table``: one row per candidate weight: ``weight``, ``mean`` (the metric over all
    queries) and ``folds`` (the metric on each held-out fold). ``cv_score``: the metric on
    each held-out fold with the weight chosen on the other folds, averaged (an honest estimate
    of what choosing does); ``fold_weights``: those per-fold choices."""

    weight: float
    cv_score: float
    table: list[dict] = field(default_factory=list)
    fold_weights: list[float] = field(default_factory=list)


def choose_weight(
    examples: Sequence[tuple[Mapping[str, float], Mapping[str, float], Collection[str]]],
    *,
    weights: Sequence[float] | None = None,
    folds: int = 5,
    seed: int = 0,
    metric: Callable[[Sequence[tuple[str, float]], Collection[str]], float] = hit_at_1,
) -> WeightChoice:
    """Choose the :func:`weighted` fusion weight by k-fold cross-validation.

    ``examples``: per labelled query its dense candidate scores, its lexical candidate scores
    and its relevant ids. The chosen weight is the one with the best mean metric over all
    queries (ties: the smaller weight); the folds (a seeded shuffle) give ``cv_score``.
    Pure: no index or model is touched."""
    if not examples:
        raise ValueError("no labelled queries")
    grid = [float(w) for w in (weights if weights is not None else np.linspace(0, 1, 21))]
    if not grid:
        raise ValueError("no candidate weights")
    n = len(examples)
    folds = max(2, min(int(folds), n))
    values = _metric_table(examples, grid, metric)  # weights x queries
    fold_of = np.empty(n, dtype=np.int64)
    fold_of[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
    per_fold = np.stack([values[:, fold_of == f].mean(axis=1) for f in range(folds)])
    held, fold_weights = [], []
    for f in range(folds):
        best = int(np.argmax(values[:, fold_of != f].mean(axis=1)))  # ties: the smaller weight
        fold_weights.append(grid[best])
        held.append(per_fold[f, best])
    means = values.mean(axis=1)
    table = [
        {"weight": w, "mean": float(means[i]), "folds": [float(x) for x in per_fold[:, i]]}
        for i, w in enumerate(grid)
    ]
    sizes = np.bincount(fold_of, minlength=folds)
    return WeightChoice(
        grid[int(np.argmax(means))],
        float(np.average(held, weights=sizes)),
        table,
        fold_weights,
    )


def _metric_table(
    examples: Sequence[tuple[Mapping[str, float], Mapping[str, float], Collection[str]]],
    grid: Sequence[float],
    metric: Callable[[Sequence[tuple[str, float]], Collection[str]], float],
) -> np.ndarray:
    """The metric of every example at every weight. For hit@1 the fused scores are computed
    as arrays (the top of :func:`weighted`'s ranking is its first maximum); other metrics get
    :func:`weighted`'s ranking."""
    out = np.zeros((len(grid), len(examples)))
    for q, (dense, lexical, relevant) in enumerate(examples):
        if metric is not hit_at_1:
            for j, w in enumerate(grid):
                out[j, q] = metric(weighted(dense, lexical, w), relevant)
            continue
        ids = list(dict.fromkeys([*dense, *lexical]))
        if not ids:
            continue
        lex = max_normalized(lexical)
        floor = min(dense.values(), default=0.0)
        d = np.array([float(dense.get(i, floor)) for i in ids])
        lx = np.array([lex.get(i, 0.0) for i in ids])
        hit = np.array([i in relevant for i in ids])
        for j, w in enumerate(grid):
            out[j, q] = float(hit[int(np.argmax((1.0 - w) * d + w * lx))])
    return out
