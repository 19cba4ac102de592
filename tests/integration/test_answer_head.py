"""The answer head: its maths on synthetic vectors with a known answer, its storage in an
index version, and its use by the demo shop's real index and retriever."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval.answer_head import AnswerHead, entry_scores, fit_head, select_head, softmax
from retrieval.errors import IndexError_
from retrieval.faq_calibration import phrasings_of
from retrieval.index import ARRAYS_FILE, VectorIndex
from retrieval.ranking import head_of

DIM = 8


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def axis(i: int) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[i] = 1.0
    return v


def misleading_bank(rng: np.random.Generator, n_questions: int):  # noqa: ANN201
    """Entry 0's questions look like entry 1's phrasing (cosine picks entry 1) but carry a
    direction (axis 5) that only entry 0 has: a linear head can learn it, cosine cannot."""
    phrasings = unit(np.stack([axis(0) + 0.5 * axis(5), axis(1), axis(2)]))
    owners = np.array([0, 1, 2])
    vecs, relevant = [], []
    for i in range(n_questions):
        label = i % 3
        base = {0: 0.8 * axis(1) + 0.6 * axis(5), 1: axis(1), 2: axis(2)}[label]
        vecs.append(base + 0.05 * rng.standard_normal(DIM))
        relevant.append({label})
    return phrasings, owners, unit(np.stack(vecs)), relevant


def test_entry_scores_are_the_best_unmasked_phrasing_of_each_entry() -> None:
    rng = np.random.default_rng(0)
    phrasings, questions = unit(rng.standard_normal((9, DIM))), unit(rng.standard_normal((4, DIM)))
    owners = np.array([2, 0, 1, 1, 0, 2, 2, 1, 0])
    masked = rng.random((4, 9)) < 0.3
    got = entry_scores(questions, phrasings, owners, 4, masked)
    for i in range(4):
        for j in range(3):
            allowed = [
                questions[i] @ phrasings[d] for d in range(9) if owners[d] == j and not masked[i, d]
            ]
            assert got[i, j] == pytest.approx(max(allowed) if allowed else -1.0, abs=1e-6)
        assert got[i, 3] == -1.0  # an entry without phrasings never wins


def test_the_head_learns_what_cosine_cannot() -> None:
    rng = np.random.default_rng(1)
    phrasings, owners, questions, relevant = misleading_bank(rng, 60)
    masked = np.zeros((60, 3), dtype=bool)
    choice = select_head(["a", "b", "c"], phrasings, owners, questions, relevant, masked)
    assert choice.cosine_accuracy == pytest.approx(2 / 3, abs=0.02)  # entry 0's third is wrong
    assert choice.head is not None and choice.accuracy > 0.95
    assert choice.head.entry_ids == ("a", "b", "c")
    assert choice.head.out_of_scope is False  # no out-of-scope questions to learn from

    # fresh questions of entry 0: cosine ranks "b" first, the head "a"
    _, _, fresh, fresh_rel = misleading_bank(np.random.default_rng(2), 30)
    for vec, rel in zip(fresh, fresh_rel, strict=True):
        cos = entry_scores(vec[None, :], phrasings, owners, 3)[0]
        scores = choice.head.rescore(vec, ["a", "b", "c"], cos.tolist())
        assert int(np.argmax(scores)) in rel


def out_of_scope_bank(rng: np.random.Generator, n_questions: int):  # noqa: ANN201
    """Entry 0's questions (2 in 5) look like entry 1's phrasing but carry axis 5, which only
    entry 0's phrasing has: a head without an out-of-scope class fixes them. The
    out-of-scope questions (1 in 5) are as close to entry 2's phrasing as entry 2's own
    questions (cosine 0.8) and differ from them in a direction (axis 6 against axis 4)
    that only an out-of-scope class learns. Cosine alone: 0.4 or so."""
    phrasings = unit(np.stack([axis(0) + 0.5 * axis(5), axis(1), axis(2)]))
    # 0, 1: entry 0; 2: entry 1; 3: entry 2; 4: out of scope (shuffled: the folds are i % 5)
    kinds = rng.permutation(np.arange(n_questions) % 5)
    base = {
        0: 0.8 * axis(1) + 0.6 * axis(5),
        1: 0.8 * axis(1) + 0.6 * axis(5),
        2: axis(1),
        3: 0.8 * axis(2) + 0.6 * axis(4),
        4: 0.8 * axis(2) + 0.6 * axis(6),
    }
    questions = unit(np.stack([base[k] + 0.03 * rng.standard_normal(DIM) for k in kinds]))
    relevant = [{0: {0}, 1: {0}, 2: {1}, 3: {2}}.get(int(k), set()) for k in kinds]
    return phrasings, np.arange(3), questions, relevant


def test_an_out_of_scope_class_learns_what_the_shop_cannot_answer() -> None:
    phrasings, owners, questions, relevant = out_of_scope_bank(np.random.default_rng(7), 60)
    choice = select_head(
        ["a", "b", "c"], phrasings, owners, questions, relevant, np.zeros((60, 3), dtype=bool)
    )
    assert choice.cosine_accuracy < 0.6
    assert choice.head is not None and choice.head.out_of_scope is True
    assert choice.accuracy > 0.95
    assert choice.head.weights.shape == (4, DIM) and choice.head.describe()["out_of_scope"]

    # fresh questions: in-scope ones are answered right, the out-of-scope ones fall below
    _, _, fresh, fresh_rel = out_of_scope_bank(np.random.default_rng(8), 30)
    for vec, rel in zip(fresh, fresh_rel, strict=True):
        cos = entry_scores(vec[None, :], phrasings, owners, 3)[0]
        scores = choice.head.rescore(vec, ["a", "b", "c"], cos.tolist())
        top = int(np.argmax(scores))
        if rel:
            assert top in rel and scores[top] >= choice.threshold
        else:
            assert scores[top] < choice.threshold
        # the entries' probabilities leave out what the out-of-scope class takes
        assert choice.head.probabilities(vec).shape == (3,)
        assert choice.head.probabilities(vec).sum() <= 1.0 + 1e-6


def test_the_out_of_scope_class_must_clear_the_noise_guard_over_the_head_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from retrieval import answer_head

    phrasings, owners, questions, relevant = out_of_scope_bank(np.random.default_rng(11), 60)
    args = (["a", "b", "c"], phrasings, owners, questions, relevant, np.zeros((60, 3), bool))
    monkeypatch.setattr(answer_head, "MIN_GAIN", 0.3)  # the head gains ~0.4, the class ~0.2 more
    choice = select_head(*args)
    assert choice.head is not None and not choice.head.out_of_scope
    assert choice.accuracy == pytest.approx(0.8, abs=0.05)


def test_too_few_out_of_scope_questions_are_not_a_class() -> None:
    phrasings, owners, questions, relevant = out_of_scope_bank(np.random.default_rng(9), 60)
    oos = [i for i, r in enumerate(relevant) if not r]
    keep = [i for i in range(60) if i not in oos[4:]]  # 4 out-of-scope questions left
    choice = select_head(
        ["a", "b", "c"],
        phrasings,
        owners,
        questions[keep],
        [relevant[i] for i in keep],
        np.zeros((len(keep), 3), dtype=bool),
    )
    assert choice.head is not None and choice.head.out_of_scope is False


def test_a_head_with_an_out_of_scope_class_is_stored_with_its_index(tmp_path: Path) -> None:
    from retrieval.faq_calibration import _put_head

    index = VectorIndex(DIM)
    index.add([("a", "q"), ("b", "q")], unit(np.stack([axis(0), axis(1)])))
    rng = np.random.default_rng(10)
    w, b = rng.standard_normal((3, DIM)).astype(np.float32), np.zeros(3, np.float32)
    _put_head(index, AnswerHead(("a", "b"), w, b, 0.5, 10.0, out_of_scope=True))
    index.save(tmp_path / "v1")
    head = head_of(VectorIndex.load(tmp_path / "v1"))
    assert head is not None and head.out_of_scope and head.weights == pytest.approx(w)
    with pytest.raises(ValueError, match="out-of-scope"):
        AnswerHead(("a", "b"), w, b, 0.5, 10.0)  # three rows for two entries and no class


def test_a_gain_within_the_noise_guard_keeps_plain_cosine(monkeypatch: pytest.MonkeyPatch) -> None:
    from retrieval import answer_head

    rng = np.random.default_rng(1)
    phrasings, owners, questions, relevant = misleading_bank(rng, 60)
    masked = np.zeros((60, 3), dtype=bool)
    monkeypatch.setattr(answer_head, "MIN_GAIN", 0.4)  # the head's gain here is ~0.33
    choice = select_head(["a", "b", "c"], phrasings, owners, questions, relevant, masked)
    assert choice.head is None
    assert choice.accuracy == choice.cosine_accuracy
    monkeypatch.setattr(answer_head, "MIN_GAIN", 0.0)
    monkeypatch.setattr(answer_head, "MIN_GAIN_QUESTIONS", 21)  # 20 more right is not enough
    assert select_head(["a", "b", "c"], phrasings, owners, questions, relevant, masked).head is None


def test_no_head_when_cosine_is_already_right() -> None:
    rng = np.random.default_rng(3)
    phrasings = unit(np.stack([axis(0), axis(1), axis(2)]))
    labels = np.arange(45) % 3
    questions = unit(np.stack([axis(j) + 0.1 * rng.standard_normal(DIM) for j in labels]))
    choice = select_head(
        ["a", "b", "c"],
        phrasings,
        np.arange(3),
        questions,
        [{int(j)} for j in labels],
        np.zeros((45, 3), dtype=bool),
    )
    assert choice.cosine_accuracy == 1.0
    assert choice.head is None  # a tie keeps plain cosine


def test_too_few_labelled_questions_keep_plain_cosine() -> None:
    rng = np.random.default_rng(4)
    phrasings, owners, questions, relevant = misleading_bank(rng, 12)
    choice = select_head(
        ["a", "b", "c"], phrasings, owners, questions, relevant, np.zeros((12, 3), dtype=bool)
    )
    assert choice.head is None
    assert choice.accuracy == choice.cosine_accuracy


def test_a_question_that_is_a_phrasing_is_scored_without_it() -> None:
    """The mask: a labelled question equal to a phrasing would otherwise score 1.0 with it."""
    rng = np.random.default_rng(5)
    phrasings, owners, questions, relevant = misleading_bank(rng, 30)
    phrasings = np.concatenate([phrasings, questions[:1]])  # question 0 is also a phrasing of b
    owners = np.append(owners, 1)
    masked = np.zeros((30, 4), dtype=bool)
    masked[0, 3] = True
    scores = entry_scores(questions, phrasings, owners, 3, masked)
    assert scores[0, 1] < 0.99
    unmasked = entry_scores(questions, phrasings, owners, 3)
    assert unmasked[0, 1] == pytest.approx(1.0, abs=1e-5)


def test_rescore_adds_the_blended_probability_and_nothing_for_unknown_entries() -> None:
    w = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    head = AnswerHead(("a", "b"), w, np.zeros(2, np.float32), blend=0.5, strength=10.0)
    q = np.array([2.0, 0.0], dtype=np.float32)
    p = softmax(np.array([2.0, 0.0]))
    got = head.rescore(q, ["b", "new", "a"], [0.4, 0.9, 0.3])
    assert got == pytest.approx([0.4 + 0.5 * p[1], 0.9, 0.3 + 0.5 * p[0]])
    with pytest.raises(ValueError, match="bias"):
        AnswerHead(("a", "b"), w, np.zeros(3, np.float32), 0.5, 10.0)


def test_two_classes_and_one_class_give_proper_probabilities() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(6)
    x = unit(rng.standard_normal((40, DIM)))
    y = np.where(x[:, 0] > 0, 2, 0)  # entries 0 and 2 of 3; entry 1 has no rows
    w, b = fit_head(x, y, 3, 10.0)
    p = softmax(x @ w.T + b)
    ref = LogisticRegression(C=10.0, max_iter=2000).fit(x, y).predict_proba(x)
    assert p[:, [0, 2]] == pytest.approx(ref, abs=1e-5)
    assert p[:, 1].max() < 1e-9
    w1, b1 = fit_head(x, np.full(40, 1), 3, 10.0)
    assert softmax(x @ w1.T + b1)[:, 1] == pytest.approx(np.ones(40))


def test_index_arrays_are_saved_loaded_and_kept_by_compaction(tmp_path: Path) -> None:
    index = VectorIndex(DIM)
    index.add([("a", "q"), ("b", "q")], unit(np.stack([axis(0), axis(1)])))
    index.arrays["weights"] = np.arange(6, dtype=np.float32).reshape(2, 3)
    index.save(tmp_path / "v1")
    loaded = VectorIndex.load(tmp_path / "v1")
    assert loaded.arrays["weights"] == pytest.approx(index.arrays["weights"])
    assert loaded.compacted().arrays["weights"] == pytest.approx(index.arrays["weights"])
    assert "weights" not in loaded.meta and "arrays" not in loaded.meta

    (tmp_path / "v1" / ARRAYS_FILE).write_bytes(b"not an npz file")
    with pytest.raises(IndexError_, match="unreadable"):
        VectorIndex.load(tmp_path / "v1")


@pytest.mark.models
def test_the_retriever_applies_a_head_with_the_real_model(
    demo_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retrieval import answer_head
    from retrieval.faq_calibration import calibrate_faq_index
    from retrieval.indexfolders import load_current
    from retrieval.labelled import read_pairs
    from retrieval.runtime import build_retriever
    from retrieval.snapshot import Snapshot

    from helpers import demo_settings

    settings = demo_settings(demo_data_dir)
    retriever = build_retriever(settings)
    snap = retriever.snapshot
    # the demo's calibration questions (with the 43 it cannot answer) keep a head
    assert snap.answer_head is not None
    assert snap.faq_index.meta["calibration"]["answer_head"]["entries"] == len(snap.faq)

    # refitted here without the noise guard, the retriever must apply the head it is given
    monkeypatch.setattr(answer_head, "MIN_GAIN", 0.0)
    monkeypatch.setattr(answer_head, "MIN_GAIN_QUESTIONS", 0)
    index = load_current(settings.index_dir, "faq", expect={})
    labelled = read_pairs(settings.faq_calibration_path, None)
    cal = calibrate_faq_index(index, retriever.text_encoder, labelled, "test")
    head = head_of(index)
    assert head is not None and cal["answer_head"]["blend"] == head.blend
    assert list(head.entry_ids) == [e.id for e in snap.faq]
    retriever.swap(Snapshot.from_indexes(index, snap.product_index, snap.policy))

    question = "how long does delivery take?"
    result = retriever.query(question)
    vec = retriever.text_encoder.encode([question])[0]
    entry_ids, phrasings, owners, _ = phrasings_of(index)
    cos = entry_scores(vec[None, :], phrasings, owners, len(entry_ids))[0]
    p = head.probabilities(vec)
    for reply in result.replies:
        j = entry_ids.index(reply.entry.id)
        assert reply.score == pytest.approx(cos[j] + head.blend * p[j], abs=1e-4)
    assert result.replies[0].entry.id == "delivery-time"
    scores = [r.score for r in result.replies]
    assert scores == sorted(scores, reverse=True)


def test_reindex_refits_the_head_for_the_new_bank(tmp_path: Path) -> None:
    """With stand-in encoders: "money" questions belong to the refund policy although their
    other words match refund tracking; the head learns it, and a new entry joins its rows."""
    import json

    import yaml

    from retrieval.indexfolders import load_current
    from retrieval.reindex import reindex
    from retrieval.settings import load_settings

    from fakes import ColourImageEncoder, HashingTextEncoder

    entries = [
        {"id": "policy", "question": "refund policy", "answer": "refunds take five days"},
        {"id": "tracking", "question": "refund status tracking", "answer": "track it online"},
        {"id": "hours", "question": "opening hours", "answer": "nine to five"},
    ]
    faq = tmp_path / "faq.yaml"
    faq.write_text(yaml.safe_dump(entries), encoding="utf-8")
    questions = []
    for i in range(16):
        questions += [
            {"query": f"refund status money back w{i}", "relevant": ["policy"]},
            {"query": f"refund status tracking v{i}", "relevant": ["tracking"]},
            {"query": f"opening hours u{i}", "relevant": ["hours"]},
        ]
    calibration = tmp_path / "calibration.jsonl"
    calibration.write_text("\n".join(json.dumps(q) for q in questions) + "\n", encoding="utf-8")
    catalog = tmp_path / "products.jsonl"
    catalog.write_text(json.dumps({"id": "p", "title": "a widget"}) + "\n", encoding="utf-8")
    settings = load_settings(
        None,
        data_dir=tmp_path / "var",
        faq_path=faq,
        catalog_path=catalog,
        faq_calibration_path=calibration,
        multilingual_model="",
    )
    text = HashingTextEncoder(dim=256)
    reindex(settings, text=text, image=ColourImageEncoder(), kinds=("faq",))
    first = load_current(settings.index_dir, "faq", expect={})
    head = head_of(first)
    cal = first.meta["calibration"]
    assert head is not None, cal
    assert head.entry_ids == ("policy", "tracking", "hours")
    assert cal["n_questions"] == 48 and cal["answer_head"]["entries"] == 3

    entries.append({"id": "returns", "question": "return a parcel", "answer": "use the label"})
    faq.write_text(yaml.safe_dump(entries), encoding="utf-8")
    report = reindex(settings, text=text, image=ColourImageEncoder(), kinds=("faq",)).reports[0]
    assert report.mode == "incremental" and report.encoded == 1
    second = load_current(settings.index_dir, "faq", expect={})
    assert head_of(second).entry_ids == ("policy", "tracking", "hours", "returns")

    calibration.write_text("", encoding="utf-8")  # no labelled questions: no head, no threshold
    entries.pop()
    faq.write_text(yaml.safe_dump(entries), encoding="utf-8")
    reindex(settings, text=text, image=ColourImageEncoder(), kinds=("faq",))
    third = load_current(settings.index_dir, "faq", expect={})
    assert head_of(third) is None and "calibration" not in third.meta
