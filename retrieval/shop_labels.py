"""The labelled questions an FAQ index version learns from: the operators' calibration file
plus, when ``learn_from_agents`` is on, what the agents' console actions say
(:mod:`retrieval.store.agentlabels`).

The file is the operators' word: an agent label whose question is already in the file (same
text, compared as phrasings are) is dropped. Of two agent labels on the same text, the later
wins. The agents' out-of-scope labels are marked ``noisy`` (a written reply can also mean the
right entry was ranked too low), so the hand-off fit can weigh them with
``agent_label_weight``. ``digest`` changes whenever the agents' labels do, so that a
re-index with new labels refits even when the bank did not change.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field

from sqlalchemy import Engine

from .faq import normalize_text
from .labelled import read_pairs
from .settings import Settings
from .store.agentlabels import agent_labels

__all__ = ["ShopLabels", "merge_labels", "shop_labels"]

log = logging.getLogger(__name__)

Pair = tuple[str, set[str]]


@dataclass
class ShopLabels:
    """Labelled questions in the calibration file's form, the file's first."""

    labelled: list[Pair] = field(default_factory=list)
    noisy: list[bool] = field(default_factory=list)  # per question: an agent's out-of-scope label
    from_file: int = 0
    from_agents: Counter[str] = field(default_factory=Counter)  # per action
    digest: str = ""  # of the agents' labels ("" when none)
    # unlabelled questions from traffic (their score distribution re-estimates the
    # out-of-scope share in the hand-off fit; the evaluation's --unlabelled FILE)
    unlabelled: list[str] = field(default_factory=list)

    def describe(self) -> str:
        agents = sum(self.from_agents.values())
        out = f"{self.from_file} from the calibration file"
        if agents:
            how = ", ".join(f"{n} {a}" for a, n in sorted(self.from_agents.items()))
            out += f", {agents} from agents ({how})"
        if self.unlabelled:
            out += f"; {len(self.unlabelled)} unlabelled questions from traffic"
        return out


def merge_labels(file_labels: list[Pair], agent: list[tuple[str, str | None, str]]) -> ShopLabels:
    """The file's labels, then the agents' ``(text, entry id or None, action)`` labels
    (oldest first) whose text the file does not hold; the later of two agent labels on one
    text wins. Pure: no I/O."""
    seen = {normalize_text(q) for q, _ in file_labels}
    latest: dict[str, tuple[str, str | None, str]] = {}
    for text, entry_id, action in agent:
        key = normalize_text(text)
        if key and key not in seen:
            latest.pop(key, None)  # re-insert: the order follows the latest action
            latest[key] = (text, entry_id, action)
    out = ShopLabels(
        labelled=[(q, set(rel)) for q, rel in file_labels],
        noisy=[False] * len(file_labels),
        from_file=len(file_labels),
    )
    for text, entry_id, action in latest.values():
        out.labelled.append((text, set() if entry_id is None else {entry_id}))
        out.noisy.append(entry_id is None)
        out.from_agents[action] += 1
    if latest:
        body = json.dumps(sorted((k, v[1] or "") for k, v in latest.items()))
        out.digest = hashlib.sha256(body.encode()).hexdigest()[:16]
    return out


def shop_labels(
    settings: Settings,
    engine: Engine | None,
    bank_ids: Collection[str],
    *,
    strict: bool = False,
) -> ShopLabels:
    """The calibration file's labels plus the agents' labels read from ``engine`` when
    ``learn_from_agents``. ``strict`` (ingest): an answer id not in the bank is an error
    naming the file and line; otherwise (re-index, which keeps going) it is dropped from its
    question, and a question left without answers counts as out of scope."""
    path = settings.faq_calibration_path
    file_labels: list[Pair] = []
    if path is not None and path.exists():
        known = set(bank_ids)
        pairs = read_pairs(path, known if strict else None)
        file_labels = [(q, {r for r in rel if r in known}) for q, rel in pairs]
    agent: list[tuple[str, str | None, str]] = []
    if engine is not None and settings.learn_from_agents:
        agent = [(lab.text, lab.entry_id, lab.action) for lab in agent_labels(engine, bank_ids)]
    labels = merge_labels(file_labels, agent)
    if agent:
        log.info("faq: labelled questions: %s", labels.describe())
    return labels
