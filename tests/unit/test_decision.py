import numpy as np
import pytest

from retrieval.decision import Decision, DecisionPolicy, calibrate_threshold, decide

POLICY = DecisionPolicy(answer_threshold=0.6, suggest_threshold=0.4, margin=0.05)


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ([], Decision.HANDOFF),
        ([0.9], Decision.ANSWER),
        ([0.9, 0.5], Decision.ANSWER),
        ([0.9, 0.88], Decision.SUGGEST),  # confident but ambiguous
        ([0.5, 0.1], Decision.SUGGEST),
        ([0.39, 0.1], Decision.HANDOFF),
        ([0.6, 0.55], Decision.ANSWER),  # at the threshold, margin exactly met
    ],
)
def test_decide(scores: list[float], expected: Decision) -> None:
    v = decide(scores, POLICY)
    assert v.decision is expected
    assert v.reason
    if scores:
        assert v.top_score == scores[0]


def test_policy_rejects_inverted_thresholds() -> None:
    with pytest.raises(ValueError):
        DecisionPolicy(answer_threshold=0.3, suggest_threshold=0.5)


def test_calibration_finds_the_separating_threshold() -> None:
    rng = np.random.default_rng(1)
    inside = rng.uniform(0.7, 0.95, 50)  # in scope, top-1 correct
    outside = rng.uniform(0.2, 0.5, 30)  # out of scope
    scores = np.concatenate([inside, outside])
    t, acc = calibrate_threshold(scores, [True] * 50 + [False] * 30, [True] * 50 + [False] * 30)
    assert acc == 1.0
    assert outside.max() < t <= inside.min()
    # middle of the gap, not its edge
    assert t == pytest.approx((outside.max() + inside.min()) / 2, abs=1e-6)


def test_calibration_prefers_handing_off_wrong_answers() -> None:
    # in-scope questions whose top-1 is wrong are better handed off than answered
    scores = [0.9, 0.8, 0.55, 0.5, 0.52, 0.3]
    correct = [True, True, False, False, False, False]
    in_scope = [True, True, True, True, False, False]
    t, acc = calibrate_threshold(scores, correct, in_scope)
    assert 0.55 < t < 0.8  # the wrong 0.55 answer is handed off, the right 0.8 one answered
    assert acc == pytest.approx(4 / 6)


def test_calibration_needs_data() -> None:
    with pytest.raises(ValueError):
        calibrate_threshold([], [], [])


def test_product_questions_are_answered_with_good_enough_matches() -> None:
    from retrieval.decision import decide_products

    policy = DecisionPolicy(0.6, 0.4, 0.02, product_threshold=0.35, photo_threshold=0.2)
    v = decide_products(0.5, True, policy)
    assert v is not None and v.decision is Decision.ANSWER and v.basis == "products"
    assert v.reason == "top product score 0.500 >= product threshold 0.350"
    assert decide_products(0.3, True, policy) is None  # the FAQ decision stands
    photo = decide_products(0.3, False, policy)
    assert photo is not None and "photo threshold 0.200" in photo.reason
    assert decide_products(0.1, False, policy) is None
    assert decide_products(None, True, policy) is None


def test_a_photo_matched_below_the_sure_level_is_a_suggestion() -> None:
    from retrieval.decision import decide_products

    policy = DecisionPolicy(0.6, 0.4, 0.02, product_threshold=0.35, photo_threshold=0.2)
    unsure = decide_products(0.3, False, policy, sure=0.45)
    assert unsure is not None and unsure.decision is Decision.SUGGEST
    assert unsure.basis == "products" and unsure.top_score == pytest.approx(0.3)
    assert unsure.reason.startswith("unsure photo match 0.300 below the sure level 0.450")
    sure = decide_products(0.45, False, policy, sure=0.45)  # at the level: sure
    assert sure is not None and sure.decision is Decision.ANSWER
    assert decide_products(0.1, False, policy, sure=0.45) is None  # not shown at all
    off = decide_products(0.3, False, policy, sure=-1.0)  # -1: every shown match is sure
    assert off is not None and off.decision is Decision.ANSWER
