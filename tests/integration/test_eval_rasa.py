"""The Rasa DIET baseline, trained and run through the real Rasa 3.6 environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.errors import ConfigError
from retrieval.evaluation.rasa import (
    OUT_OF_SCOPE,
    rasa_baseline,
    rasa_config,
    rasa_executable,
    training_examples,
)
from retrieval.faq import FAQBank, FAQEntry, load_faq
from retrieval.labelled import LabelledQuery, read_labelled

from fakes import BANK, TRAIN
from helpers import write_jsonl


def test_training_examples_and_config() -> None:
    bank = FAQBank({"a": FAQEntry("a", "answer", "question a", ("ex a",))})
    train = [
        LabelledQuery(1, frozenset({"a"}), "ex a"),  # already a bank example: once
        LabelledQuery(2, frozenset({"a"}), "more a"),
        LabelledQuery(3, frozenset(), "weather"),
    ]
    assert training_examples(bank, train) == [
        {"text": "question a", "intent": "a", "entities": []},
        {"text": "ex a", "intent": "a", "entities": []},
        {"text": "more a", "intent": "a", "entities": []},
        {"text": "weather", "intent": OUT_OF_SCOPE, "entities": []},
    ]
    config = rasa_config(epochs=5)
    assert "epochs: 5" in config and "FallbackClassifier" in config and "Jieba" not in config
    assert "run_eagerly: false" in config  # graphs: the reported runs' build times
    assert "run_eagerly: true" in rasa_config(epochs=5, eager=True)


def test_a_missing_rasa_environment_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="scripts/setup-bot.sh"):
        rasa_executable(tmp_path)


@pytest.mark.slow
def test_rasa_baseline_trains_and_answers(tmp_path: Path) -> None:
    bank = load_faq(write_jsonl(tmp_path / "bank.jsonl", BANK))
    ids = [e.id for e in bank]
    train = read_labelled(write_jsonl(tmp_path / "train.jsonl", TRAIN), known_ids=ids, images=False)
    # phrasings Rasa was trained on, and an out-of-scope question it was trained on
    queries = [LabelledQuery(i, frozenset({e["id"]}), e["examples"][0]) for i, e in enumerate(BANK)]
    queries.append(LabelledQuery(9, frozenset(), "what is the capital of peru"))
    # eager (run_eagerly): no TensorFlow graph tracing, a minute less on 2 cores; the
    # reported runs use graphs, whose config the test above checks
    result = rasa_baseline(bank, queries, train, progress=False, epochs=20, eager=True)
    m = result.metrics
    assert result.name == "rasa" and m["n_queries"] == 5 and m["hit_at_1"] == 1.0
    assert m["abstain_recall"] == 1.0  # the out-of-scope intent learnt from TRAIN
    assert m["overall_accuracy"] >= 0.8 and m["build_s"] > 1
    assert all(set(o.ranked) <= set(ids) for o in result.outcomes)
