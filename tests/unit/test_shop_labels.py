"""The labelled questions an FAQ version learns from: the calibration file plus the agents'
console actions (retrieval.shop_labels), merged purely and then wired through re-index on a
real SQLite database with the project's migrations."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from retrieval.index import VectorIndex
from retrieval.indexfolders import current_version, version_dir
from retrieval.outofscope import OutOfScopeModel
from retrieval.ranking import OOS_META, out_of_scope_of
from retrieval.reindex import reindex
from retrieval.settings import load_settings
from retrieval.shop_labels import merge_labels

from consoledb import agent_db, log_agent_actions
from fakes import HashingTextEncoder


def test_the_file_wins_and_the_latest_agent_label_on_a_text_wins() -> None:
    file_labels = [("Where is my parcel?", {"delivery"}), ("do you sell bikes", set())]
    agent = [
        ("where is my  PARCEL?", "returns", "accept"),  # the file holds this text: dropped
        ("can I pay by card", None, "write"),
        ("can I pay by card", "payment", "edit"),  # later: wins
        ("gift wrapping?", None, "reject"),
    ]
    labels = merge_labels(file_labels, agent)
    assert labels.labelled == [
        ("Where is my parcel?", {"delivery"}),
        ("do you sell bikes", set()),
        ("can I pay by card", {"payment"}),
        ("gift wrapping?", set()),
    ]
    # only the agents' out-of-scope labels are noisy; the file's are the operators' word
    assert labels.noisy == [False, False, False, True]
    assert (labels.from_file, dict(labels.from_agents)) == (2, {"edit": 1, "reject": 1})
    assert "2 from agents (1 edit, 1 reject)" in labels.describe()


def test_the_digest_follows_the_agents_labels_only() -> None:
    none = merge_labels([("a", {"x"})], [])
    assert none.digest == ""
    one = merge_labels([("a", {"x"})], [("b", None, "write")])
    same = merge_labels([("a", {"y"})], [("b", None, "write")])
    other = merge_labels([("a", {"x"})], [("b", "x", "accept")])
    assert one.digest and one.digest == same.digest != other.digest


TOPICS = ["delivery", "returns", "payment", "warranty", "sizes", "stores"]


def _write_bank(path: Path) -> None:
    entries = [
        {
            "id": t,
            "question": f"question about {t}",
            "examples": [f"tell me about {t}", f"{t} please", f"info on {t} policy"],
            "answer": f"all about {t}",
        }
        for t in TOPICS
    ]
    path.write_text(yaml.safe_dump(entries), encoding="utf-8")


def _log_action(engine, n: int, text: str, action: str, faq_id: str | None) -> None:  # noqa: ANN001
    log_agent_actions(engine, f"q{n}", text, (action, faq_id))


@pytest.fixture()
def shop(tmp_path: Path):  # noqa: ANN201
    faq = tmp_path / "faq.yaml"
    _write_bank(faq)
    calibration = tmp_path / "calibration.jsonl"
    calibration.write_text(
        "\n".join(f'{{"query": "what is your {t} rule", "relevant": ["{t}"]}}' for t in TOPICS)
        + "\n",
        encoding="utf-8",
    )
    engine = agent_db(tmp_path)
    settings = load_settings(
        None,
        data_dir=tmp_path / "var",
        faq_path=faq,
        faq_calibration_path=calibration,
    )
    return settings, engine, HashingTextEncoder()


def _published(settings) -> VectorIndex:  # noqa: ANN001
    version = current_version(settings.index_dir, "faq")
    return VectorIndex.load(version_dir(settings.index_dir, "faq", version))


def test_agent_labels_reach_the_hand_off_fit_and_move_the_threshold(shop) -> None:  # noqa: ANN001
    settings, engine, text = shop
    first = reindex(settings, engine, kinds=("faq",), text=text).reports[0]
    before = _published(settings)
    assert before.meta[OOS_META]["cv"]["agent_out_of_scope"] == 0
    assert before.meta["calibration"]["agent_labels"] == 0

    # agents wrote replies to questions near the shop's topics, and confirmed one answer
    near = [
        "delivery to the moon",
        "returns of gift cards bought abroad",
        "payment in gold bars",
        "warranty for the neighbour's car",
        "sizes for dogs",
        "stores on mars",
    ]
    for n, q in enumerate(near):
        _log_action(engine, n, q, "write", None)
    _log_action(engine, 99, "how fast is shipping", "accept", "delivery")

    second = reindex(settings, engine, kinds=("faq",), text=text).reports[0]
    assert first.version != second.version and second.mode == "incremental"  # bank unchanged
    after = _published(settings)
    cv = after.meta[OOS_META]["cv"]
    assert cv["agent_out_of_scope"] == len(near)
    assert cv["labelled_out_of_scope"] == 0
    assert "agent-labelled out-of-scope questions" in cv["handed_off"]
    assert after.meta["calibration"]["agent_labels"] == len(near) + 1
    assert after.meta["calibration"]["n_questions"] == len(TOPICS) + len(near) + 1
    assert _oos(after).threshold != pytest.approx(_oos(before).threshold)

    # nothing new: nothing to refit
    third = reindex(settings, engine, kinds=("faq",), text=text).reports[0]
    assert third.mode == "unchanged"


def test_learning_from_agents_can_be_turned_off(shop) -> None:  # noqa: ANN001
    settings, engine, text = shop
    _log_action(engine, 1, "payment in gold bars", "write", None)
    off = settings.model_copy(update={"learn_from_agents": False})
    reindex(off, engine, kinds=("faq",), text=text)
    meta = _published(off).meta
    assert meta[OOS_META]["cv"]["agent_out_of_scope"] == 0
    assert meta["calibration"]["n_questions"] == len(TOPICS)


def _oos(index: VectorIndex) -> OutOfScopeModel:
    model = out_of_scope_of(index)
    assert model is not None
    return model


def test_training_reads_the_agents_out_of_scope_labels_but_never_judges_on_them(
    shop,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    from retrieval.training.data import gather
    from retrieval.training.options import TrainOptions

    settings, engine, _ = shop
    _log_action(engine, 1, "payment in gold bars", "write", None)
    _log_action(engine, 2, "delivery please now", "accept", "delivery")
    train = tmp_path / "train.jsonl"
    rows = [(f"{t} question {i}", t) for t in TOPICS for i in range(3)]
    train.write_text(
        "".join(f'{{"query": "{q}", "relevant": ["{t}"]}}\n' for q, t in rows)
        + '{"query": "do you sell cars", "relevant": []}\n',
        encoding="utf-8",
    )
    options = TrainOptions(train_path=train, heldout_share=0.3)
    data = gather(settings, engine, options)
    assert "payment in gold bars" in data.out_of_scope
    assert "payment in gold bars" in data.refit_out_of_scope
    assert all(q.text != "payment in gold bars" for q in data.heldout)
    assert "delivery please now" in {a.text for a in data.anchors if a.source == "feedback"}
    without = gather(
        settings, engine, TrainOptions(train_path=train, heldout_share=0.3, feedback=False)
    )
    assert "payment in gold bars" not in without.out_of_scope
