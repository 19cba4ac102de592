"""The out-of-scope signal (retrieval.outofscope, fitted by retrieval.outofscope_fit) on synthetic vectors: the threshold maths
against brute force, the scores against their definition, storage, the edge cases (one
entry, single phrasings, empty inputs) and the point of it all: a bank fitted with in-scope
labels only still hands off clear off-topic questions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from retrieval.outofscope import OutOfScopeModel
from retrieval.outofscope_fit import (
    OFFTOPIC_PATH,
    choose_threshold,
    fit_out_of_scope,
    load_offtopic,
)

DIM = 24


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def shop(rng: np.random.Generator, n_entries: int = 6, phrasings: int = 4, questions: int = 8):
    """Entries are clusters in the first half of the space; off-topic messages live in the
    second half. Returns phrasings, owners, questions, their owners, centres."""
    centres = unit(
        np.concatenate(
            [rng.standard_normal((n_entries, DIM // 2)), np.zeros((n_entries, DIM // 2))], axis=1
        )
    )

    def around(c: np.ndarray, k: int, spread: float = 0.35) -> np.ndarray:
        return unit(c + spread * rng.standard_normal((k, DIM)) / np.sqrt(DIM) * 2)

    p = np.concatenate([around(c, phrasings) for c in centres])
    o = np.repeat(np.arange(n_entries), phrasings)
    q = np.concatenate([around(c, questions) for c in centres])
    qo = np.repeat(np.arange(n_entries), questions)
    return p, o, q, qo, centres


def offtopic(rng: np.random.Generator, k: int) -> np.ndarray:
    return unit(
        np.concatenate(
            [0.3 * rng.standard_normal((k, DIM // 2)), rng.standard_normal((k, DIM // 2))], axis=1
        )
    )


# ------------------------------------------------------------------ threshold maths


def brute_force(s_in, ok, groups, prior):
    """Every threshold between / around the scores, objective computed literally."""
    values = np.unique(np.concatenate([s_in, *[v for v, _ in groups.values()]]))
    cands = np.concatenate([[values[0] - 1], (values[1:] + values[:-1]) / 2, [values[-1] + 1]])
    total = sum(w for _, w in groups.values())
    out = []
    for t in cands:
        answered_right = np.mean([(s >= t) and c for s, c in zip(s_in, ok, strict=True)])
        acc = (1 - prior) * answered_right
        for v, w in groups.values():
            acc += prior * w / total * np.mean([x < t for x in v])
        out.append((t, acc))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_threshold_is_the_brute_force_best(seed: int) -> None:
    rng = np.random.default_rng(seed)
    s_in = rng.normal(1.0, 0.3, 40).round(2)  # rounding makes ties
    ok = rng.random(40) < 0.85
    groups = {"a": (rng.normal(0.5, 0.3, 25).round(2), 1.0), "b": (rng.normal(0.8, 0.2, 15), 0.5)}
    for prior in (0.3, 0.5, 0.7):
        got = choose_threshold(s_in, ok, groups, prior=prior, tolerance_se=0.0)
        table = brute_force(s_in, ok, groups, prior)
        best = max(a for _, a in table)
        assert got.accuracy == pytest.approx(best, abs=1e-12)
        assert got.best_accuracy == pytest.approx(best, abs=1e-12)
        # the reported figures are those of the chosen threshold
        t = got.threshold
        assert got.answered_right == pytest.approx(np.mean((s_in >= t) & ok))
        assert got.handed_off["a"] == pytest.approx(np.mean(groups["a"][0] < t))


def test_tolerance_keeps_the_most_answering_threshold_within_the_margin() -> None:
    rng = np.random.default_rng(7)
    s_in, ok = rng.normal(1.0, 0.3, 60), rng.random(60) < 0.9
    groups = {"neg": (rng.normal(0.4, 0.3, 50), 1.0)}
    strict = choose_threshold(s_in, ok, groups, tolerance_se=0.0)
    loose = choose_threshold(s_in, ok, groups, tolerance_se=1.0)
    assert loose.threshold <= strict.threshold
    assert loose.best_accuracy == pytest.approx(strict.accuracy)
    assert loose.accuracy <= strict.accuracy
    # and no lower threshold is within the margin
    table = brute_force(s_in, ok, groups, 0.5)
    best_t, best = max(table, key=lambda r: r[1])  # first best: the lowest threshold
    ab = np.mean((s_in >= best_t) & ok)
    tb = np.mean(groups["neg"][0] < best_t)
    margin = np.sqrt(0.25 * ab * (1 - ab) / 60 + 0.25 * tb * (1 - tb) / 50)
    lower_ok = [t for t, acc in table if acc >= best - margin - 1e-12]
    assert loose.threshold == pytest.approx(min(lower_ok))


def test_no_out_of_scope_evidence_answers_everything() -> None:
    got = choose_threshold(np.array([0.5, 0.9]), np.array([True, True]), {})
    assert got.threshold == -np.inf


# ------------------------------------------------------------------ the signal


def test_scores_follow_their_definition() -> None:
    rng = np.random.default_rng(3)
    p, o, q, qo, _ = shop(rng)
    model = fit_out_of_scope(p, o, q, qo, offtopic(rng, 30), blend=0.7)
    x = unit(rng.standard_normal((5, DIM)))
    refs, owners = model.refs, model.owners
    logits = x @ model.weights.T + model.bias
    prob = np.exp(logits - logits.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    for i in range(5):
        per_entry = [
            max(float(x[i] @ refs[d]) for d in range(len(refs)) if owners[d] == j)
            + 0.7 * prob[i, j]
            for j in range(model.n_entries)
        ]
        assert model.in_scope_scores(x)[i] == pytest.approx(max(per_entry), abs=1e-5)
        assert model.score(x)[i] == pytest.approx(-max(per_entry), abs=1e-5)
    # the decision: out of scope exactly when the in-scope score is below the threshold
    assert np.array_equal(model.is_out_of_scope(x), model.in_scope_scores(x) < model.threshold)
    assert np.array_equal(model.is_out_of_scope(x), model.score(x) > model.oos_threshold)
    # labelled questions joined the references (phrasings' twins excepted)
    assert len(model.refs) == len(p) + len(q)


def test_in_scope_labels_only_still_hand_off_clear_off_topic_questions() -> None:
    rng = np.random.default_rng(11)
    p, o, q, qo, centres = shop(rng, n_entries=8)
    negatives = offtopic(rng, 60)  # the built-in set: no shop-labelled out-of-scope at all
    model = fit_out_of_scope(p, o, q, qo, negatives)
    new_in = np.concatenate(
        [unit(c + 0.7 * rng.standard_normal((10, DIM)) / np.sqrt(DIM)) for c in centres]
    )
    new_off = offtopic(rng, 80)  # unseen off-topic questions
    assert model.is_out_of_scope(new_off).mean() >= 0.95
    assert model.is_out_of_scope(new_in).mean() <= 0.05
    assert "entry-holdout" in model.describe()
    assert model.meta["cv"]["negatives_used"] == 60


def test_the_old_way_answers_everything_and_this_one_does_not() -> None:
    """Without out-of-scope labels an accuracy-maximising threshold sits below every
    in-scope score; the fitted threshold does not."""
    rng = np.random.default_rng(5)
    p, o, q, qo, _ = shop(rng)
    model = fit_out_of_scope(p, o, q, qo, offtopic(rng, 40))
    s = model.in_scope_scores(offtopic(rng, 40))
    assert (s < model.threshold).mean() > 0.9


def test_negatives_the_bank_covers_are_dropped() -> None:
    rng = np.random.default_rng(2)
    p, o, q, qo, _ = shop(rng)
    negatives = np.concatenate([offtopic(rng, 20), p[:3]])  # "hi" in a bank with a greeting
    model = fit_out_of_scope(p, o, q, qo, negatives)
    assert model.meta["cv"]["negatives_given"] == 23
    assert model.meta["cv"]["negatives_used"] == 20
    assert not model.is_out_of_scope(p[:3]).any()


def test_held_out_entries_without_negatives() -> None:
    rng = np.random.default_rng(4)
    p, o, q, qo, _ = shop(rng)
    model = fit_out_of_scope(p, o, q, qo)
    assert "held-out entries used instead" in model.describe()
    assert np.isfinite(model.threshold)


def test_agent_labels_and_near_weight_are_groups() -> None:
    rng = np.random.default_rng(6)
    p, o, q, qo, _ = shop(rng)
    model = fit_out_of_scope(
        p, o, q, qo, offtopic(rng, 30), agent_out_of_scope=offtopic(rng, 10), near_weight=0.5
    )
    handed = model.meta["cv"]["handed_off"]
    assert set(handed) == {
        "off-topic messages",
        "agent-labelled out-of-scope questions",
        "held-out-entry questions",
    }
    assert "agent-labelled" in model.describe()


def test_query_log_moves_the_prior() -> None:
    rng = np.random.default_rng(8)
    p, o, q, qo, centres = shop(rng)
    log = np.concatenate([offtopic(rng, 90), unit(centres[:2] + 0.01)])  # mostly off-topic
    model = fit_out_of_scope(p, o, q, qo, offtopic(rng, 40), query_log=log)
    assert model.meta["cv"]["estimated_prior"] >= 0.7
    few = fit_out_of_scope(p, o, q, qo, offtopic(rng, 40), query_log=log[:10])
    assert "estimated_prior" not in few.meta["cv"]


# ------------------------------------------------------------------ storage


def test_arrays_and_meta_round_trip() -> None:
    rng = np.random.default_rng(9)
    p, o, q, qo, _ = shop(rng)
    model = fit_out_of_scope(p, o, q, qo, offtopic(rng, 30))
    arrays, meta = model.to_arrays(), json.loads(json.dumps(model.to_meta()))
    back = OutOfScopeModel.from_arrays(arrays, meta)
    x = unit(rng.standard_normal((7, DIM)))
    assert np.allclose(back.score(x), model.score(x))
    assert back.threshold == model.threshold
    assert back.describe() == model.describe()


def test_round_trip_of_an_infinite_threshold() -> None:
    empty = fit_out_of_scope(
        np.zeros((0, DIM)), [], negatives=offtopic(np.random.default_rng(0), 5)
    )
    meta = json.loads(json.dumps(empty.to_meta()))  # strict JSON: no Infinity
    back = OutOfScopeModel.from_arrays(empty.to_arrays(), meta)
    assert back.threshold == np.inf


# ------------------------------------------------------------------ edge cases


def test_empty_bank_hands_off_everything() -> None:
    model = fit_out_of_scope(np.zeros((0, DIM)), [])
    x = unit(np.random.default_rng(0).standard_normal((3, DIM)))
    assert model.is_out_of_scope(x).all()
    assert "empty bank" in model.describe()


def test_empty_query_batch() -> None:
    rng = np.random.default_rng(1)
    p, o, q, qo, _ = shop(rng)
    model = fit_out_of_scope(p, o, q, qo, offtopic(rng, 10))
    assert model.score(np.zeros((0, DIM))).shape == (0,)
    assert model.is_out_of_scope(np.zeros((0, DIM))).shape == (0,)


def test_one_entry_bank_lets_the_negatives_decide() -> None:
    rng = np.random.default_rng(12)
    p, o, q, qo, centres = shop(rng, n_entries=1, phrasings=5, questions=12)
    model = fit_out_of_scope(p, o, q, qo, offtopic(rng, 40))
    assert model.weights is None  # no head over a single entry
    assert "one entry" in model.describe()
    assert model.is_out_of_scope(offtopic(rng, 50)).mean() >= 0.9
    close = unit(centres[0] + 0.5 * rng.standard_normal((20, DIM)) / np.sqrt(DIM))
    assert model.is_out_of_scope(close).mean() <= 0.1


def test_single_phrasing_entries_without_labelled_questions() -> None:
    rng = np.random.default_rng(13)
    p, o, _, _, centres = shop(rng, phrasings=1)
    model = fit_out_of_scope(p, o, negatives=offtopic(rng, 40))
    assert "no in-scope question could be scored" in model.describe()
    # the threshold sits above 95% of the negatives' scores: most new ones are handed off
    assert model.is_out_of_scope(offtopic(rng, 200)).mean() >= 0.8
    assert not model.is_out_of_scope(p).any()


def test_two_entries_and_few_questions() -> None:
    rng = np.random.default_rng(14)
    p, o, q, qo, _ = shop(rng, n_entries=2, phrasings=2, questions=2)
    model = fit_out_of_scope(p, o, q, qo, offtopic(rng, 20))
    assert np.isfinite(model.threshold)
    assert model.meta["cv"]["in_scope_questions"] == 4


def test_bad_owners_are_refused() -> None:
    rng = np.random.default_rng(0)
    p = unit(rng.standard_normal((3, DIM)))
    with pytest.raises(ValueError):
        fit_out_of_scope(p, [0, 1])
    with pytest.raises(ValueError):
        fit_out_of_scope(p, [0, 1, 5], n_entries=3)


def test_builtin_offtopic_file() -> None:
    rows = load_offtopic()
    assert 150 <= len(rows) <= 400
    assert {r["lang"] for r in rows} == {"en", "zh"}
    assert all(r["text"].strip() and r["kind"] for r in rows)
    assert len({r["text"] for r in rows}) == len(rows)
    assert len(load_offtopic(OFFTOPIC_PATH, langs=["zh"])) < len(rows)
