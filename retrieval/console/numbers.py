"""How well the suggestions serve the agents: rates per day and per FAQ entry, and a chart.

Over the agents' decisions on questions that had suggestions (accept, edit, write, reject):

- acceptance rate: accepted as is / decisions;
- edit rate: sent after editing / decisions;
- top-1 hit rate: the reply sent (as is or edited) was the first suggestion / decisions;
- hand-off rate: queries the bot handed to an agent (``handoff``) / all queries that day.

The chart is inline SVG drawn here (no script, no library from the network).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from html import escape

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from ..store.models import AgentActionRow, CandidateRow, QueryRow
from .auth import utc

__all__ = ["DayNumbers", "EntryNumbers", "Numbers", "numbers", "rates_chart"]

DECIDED = ("accept", "edit", "write", "reject")


@dataclass
class DayNumbers:
    day: date
    queries: int = 0
    handoffs: int = 0
    suggests: int = 0
    decided: int = 0  # agent decisions on questions with suggestions
    accepted: int = 0
    edited: int = 0
    top1: int = 0

    def rate(self, part: int, whole: int) -> float | None:
        return part / whole if whole else None

    @property
    def acceptance(self) -> float | None:
        return self.rate(self.accepted, self.decided)

    @property
    def edit_rate(self) -> float | None:
        return self.rate(self.edited, self.decided)

    @property
    def top1_rate(self) -> float | None:
        return self.rate(self.top1, self.decided)

    @property
    def handoff_rate(self) -> float | None:
        return self.rate(self.handoffs, self.queries)


@dataclass
class EntryNumbers:
    faq_id: str
    suggested_first: int = 0  # first suggestion on a question an agent decided
    accepted: int = 0
    edited: int = 0
    flagged: int = 0


@dataclass
class Numbers:
    days: list[DayNumbers]
    total: DayNumbers
    entries: list[EntryNumbers] = field(default_factory=list)


def numbers(engine: Engine, days: int = 14, today: date | None = None) -> Numbers:
    today = today or datetime.now(UTC).date()
    first = today - timedelta(days=days - 1)
    since = datetime(first.year, first.month, first.day, tzinfo=UTC)
    per_day = {
        first + timedelta(days=i): DayNumbers(first + timedelta(days=i)) for i in range(days)
    }
    total = DayNumbers(today)
    entries: dict[str, EntryNumbers] = {}

    def entry(faq_id: str) -> EntryNumbers:
        return entries.setdefault(faq_id, EntryNumbers(faq_id))

    with Session(engine) as s:
        for created, decision in s.execute(
            select(QueryRow.created_at, QueryRow.decision).where(QueryRow.created_at >= since)
        ):
            d = per_day.get(utc(created).date())
            for bucket in (d, total) if d else (total,):
                bucket.queries += 1
                bucket.handoffs += decision == "handoff"
                bucket.suggests += decision == "suggest"
        actions = s.execute(
            select(
                AgentActionRow.created_at,
                AgentActionRow.action,
                AgentActionRow.candidate_rank,
                AgentActionRow.faq_id,
                AgentActionRow.query_id,
            ).where(AgentActionRow.created_at >= since)
        ).all()
        qids = list({a[4] for a in actions})
        firsts: dict[str, str] = {}
        for i in range(0, len(qids), 500):
            for qid, item in s.execute(
                select(CandidateRow.query_id, CandidateRow.item_id).where(
                    CandidateRow.query_id.in_(qids[i : i + 500]),
                    CandidateRow.kind == "faq",
                    CandidateRow.rank == 1,
                )
            ):
                firsts[qid] = item
    for created, action, rank, faq_id, qid in actions:
        if action == "flag":
            if faq_id:
                entry(faq_id).flagged += 1
            continue
        if action not in DECIDED or qid not in firsts:
            continue  # a hand-off without suggestions: nothing to accept or edit
        d = per_day.get(utc(created).date())
        entry(firsts[qid]).suggested_first += 1
        for bucket in (d, total) if d else (total,):
            bucket.decided += 1
            bucket.accepted += action == "accept"
            bucket.edited += action == "edit"
            bucket.top1 += action in ("accept", "edit") and rank == 1
        if action == "accept" and faq_id:
            entry(faq_id).accepted += 1
        elif action == "edit" and faq_id:
            entry(faq_id).edited += 1
    ranked = sorted(entries.values(), key=lambda e: (-e.suggested_first, -e.flagged, e.faq_id))
    return Numbers(list(per_day.values()), total, ranked)


SERIES = (
    ("acceptance", "Acceptance", "#2e7d32"),
    ("edit_rate", "Edit", "#f9a825"),
    ("top1_rate", "Top-1 hit", "#1565c0"),
    ("handoff_rate", "Hand-off", "#c62828"),
)


def rates_chart(days: list[DayNumbers], width: int = 720, height: int = 240) -> str:
    """An SVG line chart of the four rates per day (0-100 %); days without data are gaps."""
    left, right, top, bottom = 44, 120, 16, 36
    w, h = width - left - right, height - top - bottom
    n = max(len(days), 2)

    def x(i: int) -> float:
        return left + w * i / (n - 1)

    def y(v: float) -> float:
        return top + h * (1 - v)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="Rates per day">'
    ]
    for v in (0, 0.25, 0.5, 0.75, 1):
        parts.append(
            f'<line x1="{left}" x2="{left + w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>'
            f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="11">{int(v * 100)}%</text>'
        )
    step = max(1, len(days) // 7)
    for i, d in enumerate(days):
        if i % step == 0 or i == len(days) - 1:
            parts.append(
                f'<text x="{x(i):.1f}" y="{top + h + 18}" text-anchor="middle" font-size="11">'
                f"{escape(d.day.strftime('%m-%d'))}</text>"
            )
    for k, (attr, label, colour) in enumerate(SERIES):
        runs: list[list[str]] = [[]]
        for i, d in enumerate(days):
            v = getattr(d, attr)
            if v is None:
                runs.append([])
                continue
            runs[-1].append(f"{x(i):.1f},{y(v):.1f}")
            parts.append(
                f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}">'
                f"<title>{escape(label)} {escape(str(d.day))}: {v:.0%}</title></circle>"
            )
        for run in runs:
            if len(run) > 1:
                parts.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(run)}"/>'
                )
        ly = top + 14 + 18 * k
        parts.append(
            f'<rect x="{left + w + 14}" y="{ly - 9}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{left + w + 30}" y="{ly}" font-size="12">{escape(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
