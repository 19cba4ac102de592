"""The data one training run trains and judges on: the FAQ bank, the labelled training
questions, the held-out questions (given with ``--heldout``, a seeded share of the training
ones, or ``--folds`` stratified folds of them) and the agents' feedback, turned into
:class:`TrainingData` by :func:`gather` (one split) and :func:`gather_folds` (one per fold).
Too little data is refused in one line, with the floors (``MIN_*``) named.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine

from ..errors import InputError
from ..evaluation.baselines import normalize_text
from ..faq import FAQBank, load_faq
from ..labelled import LabelledQuery, read_labelled
from ..settings import Settings
from .options import TrainOptions
from .pairs import Anchor, anchors_from_bank

__all__ = [
    "MIN_ANCHORS",
    "MIN_ENTRIES",
    "MIN_HELDOUT",
    "TrainingData",
    "gather",
    "gather_folds",
]

MIN_ANCHORS = 8  # training texts with a known answer (phrasings, questions, feedback)
MIN_ENTRIES = 2  # answers among them: a contrastive loss needs something to tell apart
MIN_HELDOUT = 4  # in-scope held-out questions to fit thresholds and judge on


def _shuffled_groups(queries: list[LabelledQuery], seed: int) -> list[list[LabelledQuery]]:
    """The questions per answer (out-of-scope ones as one group), answers in sorted order,
    each group shuffled with one seeded generator."""
    by_label: dict[str, list[LabelledQuery]] = {}
    for q in queries:
        by_label.setdefault(min(q.relevant) if q.relevant else "", []).append(q)
    rng = random.Random(seed)
    groups = []
    for label in sorted(by_label):
        group = by_label[label][:]
        rng.shuffle(group)
        groups.append(group)
    return groups


def _split(
    queries: list[LabelledQuery], share: float, seed: int
) -> tuple[list[LabelledQuery], list[LabelledQuery]]:
    """(train, held-out): a seeded ``share`` of the questions, at least one per answer that
    has three or more (so held-out covers the answers), out-of-scope ones split alike."""
    train, heldout = [], []
    for group in _shuffled_groups(queries, seed):
        n = round(len(group) * share)
        if n == 0 and len(group) >= 3:
            n = 1
        heldout += group[:n]
        train += group[n:]
    return train, heldout


def _folds(queries: list[LabelledQuery], k: int, seed: int) -> list[list[LabelledQuery]]:
    """``k`` seeded folds of the questions, stratified per answer (out of scope alike): each
    answer's questions are shuffled and dealt round the folds, continuing where the last
    answer stopped, so the folds differ in size by at most one question."""
    dealt = [q for group in _shuffled_groups(queries, seed) for q in group]
    return [dealt[i::k] for i in range(k)]


def _without(bank: FAQBank, texts: set[str]) -> FAQBank:
    """The bank without the example phrasings in ``texts`` (held-out questions)."""
    entries = {}
    for e in bank:
        kept = tuple(x for x in e.examples if normalize_text(x) not in texts)
        entries[e.id] = dataclasses.replace(e, examples=kept)
    return FAQBank(entries, bank.source)


@dataclass(frozen=True)
class TrainingData:
    """What one run trains and judges on (:func:`gather`)."""

    bank: FAQBank  # the whole bank
    training_bank: FAQBank  # without the held-out questions among its phrasings
    anchors: list[Anchor]  # training texts, held-out questions left out
    heldout: list[LabelledQuery]
    counts: dict[str, int]
    out_of_scope: list[str]  # labelled out-of-scope training questions (file, then agents)
    refit_anchors: list[Anchor]  # every text, held-out included (``--refit``)
    refit_out_of_scope: list[str]


def _anchors(
    bank: FAQBank, questions: Sequence[LabelledQuery], feedback: Sequence[Anchor], held: set[str]
) -> list[Anchor]:
    """The bank's phrasings, then each in-scope question and feedback text not already
    among them, leaving out texts in ``held`` (normalised)."""
    anchors = anchors_from_bank(bank)
    seen = {normalize_text(a.text) for a in anchors}
    for q in questions:
        key = normalize_text(q.text or "")
        if q.relevant and q.text and key not in seen and key not in held:
            anchors.append(Anchor(q.text, min(q.relevant), "train"))
            seen.add(key)
    anchors.extend(a for a in feedback if normalize_text(a.text) not in held)
    return anchors


def _counts(
    bank: FAQBank,
    anchors: Sequence[Anchor],
    out_of_scope: Sequence[str],
    heldout: Sequence[LabelledQuery],
) -> dict[str, int]:
    return {
        "entries": len(bank),
        "anchors": len(anchors),
        "from_bank": sum(a.source == "bank" for a in anchors),
        "from_train": sum(a.source == "train" for a in anchors),
        "from_feedback": sum(a.source == "feedback" for a in anchors),
        "out_of_scope": len(out_of_scope),
        "heldout": len(heldout),
        "heldout_out_of_scope": sum(1 for q in heldout if not q.relevant),
    }


def _out_of_scope(questions: Sequence[LabelledQuery]) -> list[str]:
    return list(dict.fromkeys(q.text for q in questions if not q.relevant and q.text))


def _read(
    settings: Settings, engine: Engine | None, options: TrainOptions
) -> tuple[FAQBank, list[LabelledQuery], list[LabelledQuery] | None, list[Anchor], list[str]]:
    """(bank, labelled training questions, --heldout questions or None, feedback anchors,
    questions agents labelled out of scope). The agents' labels only ever train: they are
    never held out to judge a model."""
    from ..reindex.faq import load_bank

    bank = load_faq(options.bank_path) if options.bank_path else load_bank(settings)
    ids = [e.id for e in bank]
    labelled = (
        read_labelled(options.train_path, known_ids=ids, images=False) if options.train_path else []
    )
    heldout = (
        read_labelled(options.heldout_path, known_ids=ids, images=False)
        if options.heldout_path
        else None
    )
    feedback: list[Anchor] = []
    agent_oos: list[str] = []
    if options.feedback and engine is not None:
        from ..store.agentlabels import agent_labels
        from .feedback import feedback_anchors

        feedback = list(feedback_anchors(engine, ids))
        agent_oos = [lab.text for lab in agent_labels(engine, ids) if lab.entry_id is None]
    return bank, labelled, heldout, feedback, agent_oos


def _training_data(
    bank: FAQBank,
    train: list[LabelledQuery],
    heldout: list[LabelledQuery],
    feedback: Sequence[Anchor],
    everything: list[LabelledQuery],
    *,
    more_heldout: str,
    agent_oos: Sequence[str] = (),
) -> TrainingData:
    """One split's :class:`TrainingData`, or a one-line refusal (``more_heldout`` says how
    to get more held-out questions). ``everything``: all labelled questions in file order,
    for the model trained on all data, which thus does not depend on the split."""
    held_texts = {normalize_text(q.text or "") for q in heldout}
    training_bank = _without(bank, held_texts)
    anchors = _anchors(training_bank, train, feedback, held_texts)
    entries = {a.entry_id for a in anchors}
    in_scope_heldout = sum(1 for q in heldout if q.relevant)
    if len(anchors) < MIN_ANCHORS or len(entries) < MIN_ENTRIES:
        raise InputError(
            f"too little data to train: {len(anchors)} training texts for {len(entries)} "
            f"answers (need at least {MIN_ANCHORS} for at least {MIN_ENTRIES} answers: add "
            "example phrasings to the bank or labelled questions with --train)"
        )
    if in_scope_heldout < MIN_HELDOUT:
        raise InputError(
            f"too little held-out data: {in_scope_heldout} in-scope held-out questions (need at "
            f"least {MIN_HELDOUT}: {more_heldout})"
        )
    out_of_scope = [
        t
        for t in dict.fromkeys([*_out_of_scope(train), *agent_oos])
        if normalize_text(t) not in held_texts
    ]
    return TrainingData(
        bank,
        training_bank,
        anchors,
        heldout,
        _counts(bank, anchors, out_of_scope, heldout),
        out_of_scope,
        _anchors(bank, everything, feedback, set()),
        list(dict.fromkeys([*_out_of_scope(everything), *agent_oos])),
    )


def gather(settings: Settings, engine: Engine | None, options: TrainOptions) -> TrainingData:
    """The run's data (:class:`TrainingData`), or a one-line refusal."""
    bank, labelled, heldout, feedback, agent_oos = _read(settings, engine, options)
    if heldout is not None:
        train, everything = labelled, [*labelled, *heldout]
    else:
        train, heldout = _split(labelled, options.heldout_share, options.text.seed)
        everything = labelled
    return _training_data(
        bank,
        train,
        heldout,
        feedback,
        everything,
        more_heldout="give --heldout FILE, or more questions with --train",
        agent_oos=agent_oos,
    )


def gather_folds(
    settings: Settings, engine: Engine | None, options: TrainOptions
) -> list[TrainingData]:
    """The ``options.folds`` cross-validation splits of ``--train``: fold i holds out the
    i-th seeded share of the questions, so each question is held out exactly once."""
    if options.heldout_path is not None:
        raise InputError("--folds cross-validates on --train: it cannot be combined with --heldout")
    bank, labelled, _, feedback, agent_oos = _read(settings, engine, options)
    parts = _folds(labelled, options.folds, options.text.seed)
    return [
        _training_data(
            bank,
            [q for j, part in enumerate(parts) if j != i for q in part],
            held,
            feedback,
            labelled,
            more_heldout=f"use fewer --folds, or more questions with --train (fold {i + 1})",
            agent_oos=agent_oos,
        )
        for i, held in enumerate(parts)
    ]
