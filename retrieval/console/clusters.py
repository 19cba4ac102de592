"""Unanswered questions grouped by meaning, and draft FAQ entries made from a group.

Questions that ended in a hand-off or whose suggestions an agent rejected are embedded with
the retriever's text encoder (unit vectors) and grouped greedily: each question joins the
first group whose leader it matches with cosine >= threshold, else it leads a new group.
Groups are shown largest first. A draft made from a group goes to SQL (``faq_drafts``) and
to ``data_dir/faq-drafts.jsonl`` in the FAQ bank's record format, for the re-indexing job.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, or_, select
from sqlalchemy.orm import Session

from ..errors import Conflict, InputError
from ..store.models import AgentActionRow, AgentTaskRow, FAQDraftRow, QueryRow
from .auth import AgentSession
from .tasks import REPLY_ACTIONS

__all__ = ["Cluster", "draft_entry", "greedy_clusters", "guess_lang", "unanswered_clusters"]

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_FAQ_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,79}$")


@dataclass(frozen=True)
class Cluster:
    size: int
    examples: tuple[str, ...]  # distinct texts, the leader first
    query_ids: tuple[str, ...]
    lang: str
    suggested_id: str
    answer: str  # the latest agent reply to one of its questions, or ""


def greedy_clusters(vectors: np.ndarray, threshold: float) -> list[list[int]]:
    """Group rows of unit ``vectors``: a row joins the first group whose leader has cosine
    >= ``threshold`` with it, else starts a group. Groups are returned largest first."""
    leaders: list[int] = []
    groups: list[list[int]] = []
    for i in range(len(vectors)):
        if leaders:
            sims = vectors[leaders] @ vectors[i]
            j = int(np.argmax(sims))
            if sims[j] >= threshold:
                groups[j].append(i)
                continue
        leaders.append(i)
        groups.append([i])
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def guess_lang(text: str) -> str:
    return "zh" if _CJK.search(text) else "en"


def _slug(text: str, lang: str) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())
    slug = "-".join(words[:6])[:60].strip("-")
    return f"draft-{slug}" if slug and lang == "en" else "draft-" + lang


def unanswered_clusters(
    engine: Engine,
    encode: Any,
    threshold: float,
    *,
    days: int = 30,
    limit: int = 2000,
) -> list[Cluster]:
    """Hand-offs and rejected questions of the last ``days`` days, grouped by meaning."""
    since = datetime.now(UTC) - timedelta(days=days)
    with Session(engine) as s:
        rows = s.execute(
            select(QueryRow.id, QueryRow.text)
            .outerjoin(AgentTaskRow, AgentTaskRow.query_id == QueryRow.id)
            .where(
                QueryRow.created_at >= since,
                QueryRow.text.is_not(None),
                QueryRow.text != "",
                or_(QueryRow.decision == "handoff", AgentTaskRow.status == "rejected"),
            )
            .order_by(QueryRow.created_at.desc())
            .limit(limit)
        ).all()
        replies: dict[str, str] = {}
        for qid, text in s.execute(
            select(AgentActionRow.query_id, AgentActionRow.final_text)
            .where(
                AgentActionRow.query_id.in_([r[0] for r in rows]),
                AgentActionRow.action.in_(REPLY_ACTIONS),
            )
            .order_by(AgentActionRow.id)
        ):
            replies[qid] = text or ""
    if not rows:
        return []
    texts = [t.strip() for _, t in rows]
    vectors = np.asarray(encode(texts), dtype=np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    out = []
    for group in greedy_clusters(vectors, threshold):
        seen: dict[str, None] = {}
        for i in group:
            seen.setdefault(texts[i], None)
        examples = tuple(list(seen)[:8])
        ids = tuple(rows[i][0] for i in group)
        lang = guess_lang(examples[0])
        answer = next((replies[q] for q in ids if replies.get(q)), "")
        out.append(Cluster(len(group), examples, ids, lang, _slug(examples[0], lang), answer))
    return out


def draft_entry(
    engine: Engine,
    drafts_path: Path,
    agent: AgentSession,
    *,
    faq_id: str,
    question: str,
    answer: str,
    examples: Sequence[str],
    lang: str,
    query_ids: Sequence[str],
    existing_ids: Any = (),
) -> dict[str, Any]:
    """Store a draft FAQ entry in SQL and append it to ``drafts_path`` (JSONL); returns the record."""
    faq_id = (faq_id or "").strip()
    question, answer = (question or "").strip(), (answer or "").strip()
    if not _FAQ_ID.match(faq_id):
        raise InputError(
            f"the entry id {faq_id[:80]!r} is not valid: use lower-case letters, digits and '-'"
        )
    if faq_id in existing_ids:
        raise Conflict(f"FAQ entry '{faq_id}' already exists in the answer bank: choose another id")
    if not question:
        raise InputError("the draft needs a question")
    if not answer:
        raise InputError("the draft needs an answer: write the reply shoppers should get")
    if len(question) > 2000 or len(answer) > 4000:
        raise InputError(
            "the draft is too long: question up to 2,000, answer up to 4,000 characters"
        )
    if lang not in ("en", "zh"):
        raise InputError(f"lang must be en or zh, not {lang[:20]!r}")
    examples = [e.strip()[:2000] for e in examples if e.strip() and e.strip() != question][:20]
    record = {
        "id": faq_id,
        "question": question,
        "answer": answer,
        "examples": examples,
        "lang": lang,
        "tags": ["draft"],
        "group": faq_id,
    }
    with Session(engine) as s, s.begin():
        if s.scalar(select(FAQDraftRow.id).where(FAQDraftRow.faq_id == faq_id)):
            raise Conflict(f"a draft with id '{faq_id}' exists already: choose another id")
        s.add(
            FAQDraftRow(
                faq_id=faq_id,
                agent_id=agent.agent_id,
                question=question,
                answer=answer,
                examples=examples,
                lang=lang,
                query_ids=list(query_ids)[:500],
                status="draft",
            )
        )
        drafts_path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with open(drafts_path, "a", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    return record
