"""Property tests of threshold and fusion-weight fitting on synthetic scores (seeded numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.evaluation.metrics import mrr_at_k
from retrieval.training.fitting import (
    fit_fusion_weights,
    fit_thresholds,
    fused_score_matrix,
    mrr_of_scores,
    overall_accuracy_of,
)

SEEDS = range(20)


def _labelled(rng: np.random.Generator, n: int):
    """Top scores where right answers sit above wrong ones and out-of-scope questions."""
    in_scope = rng.random(n) < 0.7
    correct = in_scope & (rng.random(n) < 0.8)
    top = np.where(correct, rng.uniform(0.5, 1.0, n), rng.uniform(0.0, 0.7, n))
    second = top - rng.uniform(0.0, 0.2, n)
    return top, second, correct, in_scope


@pytest.mark.parametrize("seed", SEEDS)
def test_threshold_fit_is_the_optimum_over_every_threshold(seed: int) -> None:
    rng = np.random.default_rng(seed)
    top, second, correct, in_scope = _labelled(rng, 200)
    fit = fit_thresholds(top, second, correct, in_scope)
    # independent brute force: every score as the threshold (answer from it up), and above all
    best = max(
        overall_accuracy_of(top, second, correct, in_scope, t, m)
        for t in [*top.tolist(), 2.0]
        for m in (0.0, 0.01, 0.02, 0.03, 0.05)
    )
    assert fit.accuracy == pytest.approx(best)
    achieved = overall_accuracy_of(top, second, correct, in_scope, fit.answer_threshold, fit.margin)
    assert achieved == pytest.approx(fit.accuracy)
    assert fit.suggest_threshold <= fit.answer_threshold
    assert fit.n == 200


@pytest.mark.parametrize("seed", SEEDS)
def test_separable_scores_give_perfect_accuracy_with_the_threshold_in_the_gap(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 100
    in_scope = rng.random(n) < 0.6
    top = np.where(in_scope, rng.uniform(0.62, 1.0, n), rng.uniform(0.0, 0.58, n))
    fit = fit_thresholds(top, np.full(n, -1.0), in_scope, in_scope)
    assert fit.accuracy == 1.0
    assert top[~in_scope].max() < fit.answer_threshold <= top[in_scope].min()


def test_margin_is_chosen_when_close_calls_are_the_wrong_ones() -> None:
    rng = np.random.default_rng(0)
    n = 300
    correct = rng.random(n) < 0.7
    top = rng.uniform(0.6, 0.9, n)  # every question scores high: only the margin can tell
    second = np.where(correct, top - rng.uniform(0.06, 0.3, n), top - rng.uniform(0.0, 0.04, n))
    in_scope = correct  # the close calls are out-of-scope questions: they should be handed off
    fit = fit_thresholds(top, second, correct, in_scope)
    assert fit.margin == 0.05
    assert fit.accuracy == 1.0


@pytest.mark.parametrize("seed", SEEDS)
def test_training_and_ingest_place_the_threshold_by_one_rule(seed: int) -> None:
    """Without a margin, `retrieval train` fits the threshold ingest calibrates: the middle
    of the first best plateau, not its edge."""
    from retrieval.decision import calibrate_threshold

    rng = np.random.default_rng(seed)
    top, second, correct, in_scope = _labelled(rng, 150)
    fit = fit_thresholds(top, second, correct, in_scope, margins=(0.0,))
    threshold, accuracy = calibrate_threshold(top, correct, in_scope)
    assert (fit.answer_threshold, fit.accuracy) == pytest.approx((threshold, accuracy))
    assert top[top < fit.answer_threshold].size and top[top >= fit.answer_threshold].size
    below = top[top < fit.answer_threshold].max()
    above = top[top >= fit.answer_threshold].min()
    assert below < fit.answer_threshold < above  # strictly inside a gap between scores


def test_no_data_is_refused() -> None:
    with pytest.raises(ValueError, match="no labelled questions"):
        fit_thresholds([], [], [], [])


def test_mrr_of_scores_matches_the_evaluation_metric() -> None:
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(50, 30))
    relevant = rng.random((50, 30)) < 0.05
    ids = [f"p{i}" for i in range(30)]
    expected = np.mean(
        [
            mrr_at_k(
                [ids[j] for j in np.argsort(-scores[q], kind="stable")],
                frozenset(ids[j] for j in np.flatnonzero(relevant[q])),
                10,
            )
            for q in range(50)
        ]
    )
    assert mrr_of_scores(scores, relevant) == pytest.approx(expected)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("w_true", [0.1, 0.5, 0.9])
def test_fusion_fit_finds_the_weight_that_generated_the_ranking(seed: int, w_true: float) -> None:
    """Scores built so that only the fused score at ``w_true`` ranks the right product first."""
    rng = np.random.default_rng(seed)
    nq, npr = 40, 25
    img = rng.uniform(-0.2, 0.6, (nq, npr))
    txt = rng.uniform(-0.2, 0.6, (nq, npr))
    relevant = np.zeros((nq, npr), dtype=bool)
    right = rng.integers(0, npr, nq)
    relevant[np.arange(nq), right] = True
    # the right product wins on the fused score at w_true by a clear gap, and on neither
    # modality alone (so a wrong weight loses it)
    fused = fused_score_matrix(img, txt, w_true)
    for q in range(nq):
        others = np.delete(np.arange(npr), right[q])
        target = fused[q, others].max() + 0.05
        # move image and text scores of the right product along the line that keeps one
        # modality below the best rival on its own
        img[q, right[q]] = img[q, others].max() - 0.01
        txt[q, right[q]] = (target - w_true * img[q, right[q]]) / (1 - w_true)
    fit = fit_fusion_weights(img, txt, relevant)
    assert fit.mrr == pytest.approx(1.0)
    w_fit = fit.image_weight**2
    assert fused_score_matrix(img, txt, w_fit).argmax(axis=1).tolist() == right.tolist()
    assert fit.image_weight**2 + fit.text_weight**2 == pytest.approx(1.0)
    # a brute force over the same grid never beats the fit
    grid = np.clip(np.linspace(0, 1, 21), 0.01, 0.99)
    assert max(mrr_of_scores(fused_score_matrix(img, txt, w), relevant) for w in grid) <= fit.mrr


def test_fusion_fit_follows_the_only_informative_modality() -> None:
    rng = np.random.default_rng(3)
    nq, npr = 60, 20
    relevant = np.zeros((nq, npr), dtype=bool)
    relevant[np.arange(nq), rng.integers(0, npr, nq)] = True
    informative = np.where(relevant, 0.9, rng.uniform(0.0, 0.5, (nq, npr)))
    noise = rng.uniform(0.0, 1.0, (nq, npr))
    on_image = fit_fusion_weights(informative, noise, relevant)
    on_text = fit_fusion_weights(noise, informative, relevant)
    assert on_image.mrr == on_text.mrr == 1.0
    assert on_image.image_weight > on_image.text_weight
    assert on_text.text_weight > on_text.image_weight
    assert mrr_of_scores(noise, relevant) < 0.5  # the other modality alone would rank badly


def test_missing_modality_uses_the_other_one() -> None:
    img = np.array([[np.nan, np.nan]])
    txt = np.array([[0.2, 0.8]])
    assert fused_score_matrix(img, txt, 0.7).tolist() == [[0.2, 0.8]]
    with pytest.raises(ValueError, match="share a non-empty shape"):
        fit_fusion_weights(np.zeros((2, 3)), np.zeros((3, 2)), np.zeros((2, 3), dtype=bool))


def _scores(rng: np.random.Generator, n: int):
    """Held-out scores with rankings that agree with them: a right top-1 where ``correct``,
    else the right group somewhere in places 2-11 (or nowhere for out of scope)."""
    from retrieval.training.compare import HeldoutScores

    top, second, correct, in_scope = _labelled(rng, n)
    ranked, relevant = [], []
    for ok, ins in zip(correct, in_scope, strict=True):
        order = [f"g{i}" for i in rng.permutation(12)[:10]]
        right = order[0] if ok else (str(rng.choice(order[1:] + ["nowhere"])) if ins else None)
        ranked.append(tuple(order))
        relevant.append(frozenset({right}) if right else frozenset())
    scores = HeldoutScores(top, second, in_scope, tuple(ranked), tuple(relevant))
    assert (scores.correct == correct).all()
    return scores


@pytest.mark.parametrize("seed", range(5))
def test_cross_validated_judgement_counts_as_the_evaluation_does(seed: int) -> None:
    from retrieval.evaluation.metrics import hit_at_k
    from retrieval.training.compare import judge_scores, pooled

    rng = np.random.default_rng(seed)
    parts = [_scores(rng, n) for n in (37, 41, 40)]
    scores = pooled(parts)
    assert len(scores.top) == 118 and scores.ranked[37] == parts[1].ranked[0]
    judged = judge_scores(scores)
    fit, m = judged.thresholds, judged.metrics
    # thresholds fitted on all folds together; the figures use them
    assert fit == fit_thresholds(scores.top, scores.second, scores.correct, scores.in_scope)
    assert m["overall_accuracy"] == pytest.approx(fit.accuracy)
    ins = scores.in_scope
    assert m["n_queries"] == 118 and m["n_in_scope"] == int(ins.sum())
    assert m["hit_at_1"] == pytest.approx(scores.correct[ins].mean())
    rows = [(r, rel) for r, rel, i in zip(scores.ranked, scores.relevant, ins, strict=True) if i]
    assert m["hit_at_1"] == pytest.approx(np.mean([hit_at_k(r, rel, 1) for r, rel in rows]))
    mrr = [mrr_at_k(r, rel, 10) for r, rel in rows]
    assert m["mrr_at_10"] == pytest.approx(np.mean(mrr)) and m["mrr_at_10"] > m["hit_at_1"]
    answered = (scores.top >= fit.answer_threshold) & (
        scores.top - scores.second >= fit.margin - 1e-9
    )
    assert m["abstain_recall"] == pytest.approx(np.mean(~answered[~ins]))
