"""The pure parts of the fault and load suite (benchmarks/soak.py): the fault schedule, which
requests fall inside a fault's window, percentiles, recovery times, RSS growth, the query-log
row comparison, the report and its pass/fail lines against the reliability targets.

Nothing here starts a process or reads a clock; tests/unit/test_soak.py checks it all.
Times are seconds since the traffic started.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "FAULTS",
    "Fault",
    "Outcome",
    "PlannedFault",
    "RssSample",
    "Target",
    "build_report",
    "error_table",
    "errors_by_fault",
    "format_report",
    "latency_summary",
    "log_rows",
    "percentile",
    "plan_faults",
    "recovery",
    "rss_segments",
    "targets",
    "window_of",
]

# The faults, in the order they are injected.
FAULTS = ("postgres_stop", "spool_full", "rasa_kill", "service_kill")
RECOVERY_TARGET_S = 10.0
RSS_GROWTH_TARGET = 0.10


@dataclass(frozen=True)
class Outcome:
    """One request the load generator made, and how it ended.

    ``error`` is None when the request was served as the client wanted (a 2xx, or a console
    409: another agent acted first); otherwise ``"HTTP 503"``, an exception's class name
    (``"ConnectError"``) or ``"exit 1"`` for a re-index run."""

    kind: str  # chat, photo, api, updates, console, reindex
    op: str
    start: float
    end: float
    status: int | None = None
    error: str | None = None
    query_ids: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def server_failure(self) -> bool:
        """A 5xx, or no HTTP answer at all: what the target allows only inside fault windows."""
        if self.ok or self.kind == "reindex":
            return False
        return self.status is None or self.status >= 500


@dataclass(frozen=True)
class PlannedFault:
    name: str
    at: float  # when to inject it
    hold: float  # how long the component stays broken before it is restored


@dataclass
class Fault:
    """A fault as it happened: ``end`` is when the component was back (PostgreSQL started,
    the fill file removed, the restarted server ready); None if it never came back."""

    name: str
    start: float
    end: float | None
    note: str = ""


@dataclass(frozen=True)
class RssSample:
    t: float
    pid: int
    rss_kb: int


@dataclass(frozen=True)
class Target:
    name: str
    passed: bool | None  # None: could not be judged
    detail: str


def plan_faults(
    duration: float, names: Sequence[str] = FAULTS, *, min_hold: float = 3.0, max_hold: float = 20.0
) -> list[PlannedFault]:
    """Spread the faults evenly over ``duration`` (at 1/(n+1), 2/(n+1), ... of it), each held
    4% of the duration within [min_hold, max_hold] s, so a short run still shows every one
    and leaves clean traffic before the first and after the last."""
    if duration <= 0:
        raise ValueError("the duration must be positive")
    hold = min(max(duration * 0.04, min_hold), max_hold)
    n = len(names)
    return [PlannedFault(name, duration * (i + 1) / (n + 1), hold) for i, name in enumerate(names)]


def window_of(outcome: Outcome, faults: Iterable[Fault], grace: float) -> str | None:
    """The fault whose window (start to end + grace) the request's own interval overlaps, or
    None: the request ran in clean conditions. A fault that never ended has no window end."""
    for f in faults:
        stop = math.inf if f.end is None else f.end + grace
        if outcome.start <= stop and outcome.end >= f.start:
            return f.name
    return None


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0-100) by linear interpolation between ranks; None when empty."""
    if not values:
        return None
    xs = sorted(values)
    rank = (len(xs) - 1) * p / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (rank - lo)


def latency_summary(outcomes: Iterable[Outcome]) -> dict[str, dict[str, Any]]:
    """Requests, served and p50 / p95 latency (ms, served requests only) per kind and 'all'."""
    groups: dict[str, list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault(o.kind, []).append(o)
        if o.kind != "reindex":
            groups.setdefault("all", []).append(o)
    out: dict[str, dict[str, Any]] = {}
    for kind, rows in sorted(groups.items()):
        ms = [(o.end - o.start) * 1e3 for o in rows if o.ok]
        out[kind] = {
            "requests": len(rows),
            "served": len(ms),
            "p50_ms": percentile(ms, 50),
            "p95_ms": percentile(ms, 95),
        }
    return out


def error_table(
    outcomes: Iterable[Outcome], faults: Sequence[Fault], grace: float
) -> dict[str, dict[str, int]]:
    """Errors by label ('HTTP 503', 'ConnectError', ...) and kind, split into inside and
    outside the fault windows: ``{"HTTP 503 chat": {"inside": 3, "outside": 0}}``."""
    table: dict[str, dict[str, int]] = {}
    for o in outcomes:
        if o.ok:
            continue
        row = table.setdefault(f"{o.error} {o.kind}", {"inside": 0, "outside": 0})
        row["inside" if window_of(o, faults, grace) else "outside"] += 1
    return dict(sorted(table.items()))


def recovery(
    outcomes: Iterable[Outcome], fault: Fault, kinds: Iterable[str], grace: float
) -> dict[str, Any]:
    """How long after the fault's end each kind of traffic it broke (a failed request inside
    its window) took to work again: the completion of the first served request that started
    after the end. The fault's recovery is the slowest such kind; 0 when it broke none; None
    when a broken kind never worked again (or the fault never ended)."""
    outs = sorted(outcomes, key=lambda o: o.end)
    broken = {
        o.kind
        for o in outs
        if not o.ok and o.kind in set(kinds) and window_of(o, [fault], grace) is not None
    }
    if fault.end is None:
        return {"per_kind": {k: None for k in sorted(broken)}, "seconds": None}
    first: dict[str, float | None] = {k: None for k in sorted(broken)}
    for o in outs:
        if o.kind in broken and o.ok and o.start >= fault.end and first[o.kind] is None:
            first[o.kind] = o.end - fault.end
    values = list(first.values())
    if any(v is None for v in values):
        return {"per_kind": first, "seconds": None}
    return {"per_kind": first, "seconds": max((v for v in values if v is not None), default=0.0)}


def errors_by_fault(
    outcomes: Iterable[Outcome], faults: Sequence[Fault], grace: float
) -> dict[str, dict[str, int]]:
    """The errors inside each fault's window, by label and kind."""
    out: dict[str, dict[str, int]] = {f.name: {} for f in faults}
    for o in outcomes:
        name = None if o.ok else window_of(o, faults, grace)
        if name is not None:
            label = f"{o.error} {o.kind}"
            out[name][label] = out[name].get(label, 0) + 1
    return {name: dict(sorted(row.items())) for name, row in out.items()}


def rss_segments(samples: Sequence[RssSample], warmup_s: float = 15.0) -> list[dict[str, Any]]:
    """RSS per service process (a restart starts a new segment; samples start when it is
    ready): the median of its first three samples after ``warmup_s`` from its first sample,
    against the median of its last three; growth = final / baseline - 1 (None with fewer than
    six samples to compare)."""
    by_pid: dict[int, list[RssSample]] = {}
    for s in sorted(samples, key=lambda s: s.t):
        by_pid.setdefault(s.pid, []).append(s)
    out = []
    for pid, rows in sorted(by_pid.items(), key=lambda kv: kv[1][0].t):
        settled = [s for s in rows if s.t >= rows[0].t + warmup_s]
        seg: dict[str, Any] = {
            "pid": pid,
            "from_s": rows[0].t,
            "to_s": rows[-1].t,
            "samples": len(rows),
            "peak_mb": max(s.rss_kb for s in rows) / 1024,
            "baseline_mb": None,
            "final_mb": None,
            "growth": None,
        }
        if len(settled) >= 6:
            base = _median([s.rss_kb for s in settled[:3]]) / 1024
            final = _median([s.rss_kb for s in settled[-3:]]) / 1024
            seg.update(baseline_mb=base, final_mb=final, growth=final / base - 1)
        out.append(seg)
    return out


def _median(xs: Sequence[float]) -> float:
    value = percentile(xs, 50)
    assert value is not None
    return value


def log_rows(
    expected: dict[str, float],
    found: set[str],
    *,
    kills: Sequence[float] = (),
    kill_margin: float = 2.0,
    duplicate_candidates: int = 0,
    duplicate_decisions: int = 0,
) -> dict[str, Any]:
    """Query-log rows named by served responses (``expected``: query id -> when its response
    arrived) against the ids found in SQL. Lost ids answered within ``kill_margin`` s before a
    SIGKILL of the service are counted apart (records still in the writer's queue);
    ``extra`` are rows no response named (hand-offs, start-up warm-ups, replies the client
    never got). Duplicates come from SQL: candidate or system-decision rows stored twice."""
    lost = sorted(q for q in expected if q not in found)
    near_kill = [q for q in lost if any(0 <= k - expected[q] <= kill_margin for k in kills)]
    return {
        "expected": len(expected),
        "found": len(expected) - len(lost),
        "lost": len(lost),
        "lost_near_kill": len(near_kill),
        "lost_ids": lost[:20],
        "extra": len(found - set(expected)),
        "duplicate_candidates": duplicate_candidates,
        "duplicate_decisions": duplicate_decisions,
    }


def targets(report: dict[str, Any]) -> list[Target]:
    """The issue's soak targets, judged on a report from :func:`build_report`."""
    out = []
    rows = report.get("log_rows")
    if rows is None:
        out.append(Target("zero lost log rows", None, "the query log was not checked"))
    else:
        dup = rows["duplicate_candidates"] + rows["duplicate_decisions"]
        out.append(
            Target(
                "zero lost log rows",
                rows["lost"] == 0 and dup == 0,
                f"{rows['lost']} lost of {rows['expected']} ({rows['lost_near_kill']} answered "
                f"just before the service's SIGKILL), {dup} duplicated",
            )
        )
    outside = report["server_failures_outside"]
    out.append(
        Target("zero 5xx outside the fault windows", outside == 0, f"{outside} 5xx or no answer")
    )
    slow = []
    for f in report["faults"]:
        r = f["recovery_s"]
        if r is None or r > RECOVERY_TARGET_S:
            slow.append(f"{f['name']} {'never' if r is None else f'{r:.1f} s'}")
    shown = ", ".join(f"{f['name']} {_s(f['recovery_s'])}" for f in report["faults"])
    out.append(
        Target(
            f"recovery within {RECOVERY_TARGET_S:.0f} s of each fault ending",
            not slow if report["faults"] else None,
            shown or "no fault was injected",
        )
    )
    judged = [s for s in report["rss"] if s["growth"] is not None]
    growth = ", ".join(f"pid {s['pid']} {s['growth'] * 100:+.1f}%" for s in judged)
    out.append(
        Target(
            f"RSS growth < {RSS_GROWTH_TARGET * 100:.0f}% over the run",
            all(s["growth"] < RSS_GROWTH_TARGET for s in judged) if judged else None,
            growth or "too few samples",
        )
    )
    return out


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def build_report(
    outcomes: Sequence[Outcome],
    faults: Sequence[Fault],
    rss: Sequence[RssSample],
    *,
    grace: float,
    recovery_kinds: Iterable[str],
    log_check: dict[str, Any] | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the run measured, as plain data (the JSON output)."""
    kinds = sorted(set(recovery_kinds))
    by_fault = errors_by_fault(outcomes, faults, grace)
    fault_rows = []
    for f in faults:
        rec = recovery(outcomes, f, kinds, grace)
        fault_rows.append(
            {
                **asdict(f),
                "down_s": None if f.end is None else f.end - f.start,
                "recovery_s": rec["seconds"],
                "recovery_per_kind": rec["per_kind"],
                "errors": by_fault.get(f.name, {}),
            }
        )
    failures = [o for o in outcomes if o.server_failure]
    report: dict[str, Any] = {
        "grace_s": grace,
        "latency": latency_summary(outcomes),
        "errors": error_table(outcomes, faults, grace),
        "server_failures_inside": sum(1 for o in failures if window_of(o, faults, grace)),
        "server_failures_outside": sum(1 for o in failures if not window_of(o, faults, grace)),
        "faults": fault_rows,
        "rss": rss_segments(rss),
        "rss_series": _series(rss),
        "log_rows": log_check,
        **(extra or {}),
    }
    report["targets"] = [asdict(t) for t in targets(report)]
    return report


def _series(samples: Sequence[RssSample], points: int = 12) -> list[dict[str, Any]]:
    """About ``points`` samples spread over the run, for the printed RSS-over-time line."""
    if not samples:
        return []
    step = max(1, len(samples) // points)
    picked = list(samples[::step])
    if picked[-1] != samples[-1]:
        picked.append(samples[-1])
    return [{"t": s.t, "pid": s.pid, "rss_mb": s.rss_kb / 1024} for s in picked]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def format_report(report: dict[str, Any]) -> str:
    """The printed form of :func:`build_report`'s report."""
    lines = ["", "requests (p50 / p95 of served requests, ms)"]
    lines.append(f"  {'kind':<9} {'requests':>8} {'served':>8} {'p50':>7} {'p95':>7}")
    for kind, s in report["latency"].items():
        lines.append(
            f"  {kind:<9} {s['requests']:>8} {s['served']:>8} {_ms(s['p50_ms']):>7} {_ms(s['p95_ms']):>7}"
        )
    lines += ["", f"errors by kind (inside = during a fault or {report['grace_s']:.0f} s after it)"]
    if not report["errors"]:
        lines.append("  none")
    for label, row in report["errors"].items():
        lines.append(f"  {label:<32} inside {row['inside']:>5}   outside {row['outside']:>5}")
    lines += ["", "faults (s since the traffic started)"]
    for f in report["faults"]:
        per = ", ".join(f"{k} {_s(v)}" for k, v in f["recovery_per_kind"].items())
        end = "never" if f["end"] is None else f"{f['end']:.1f}"
        lines.append(
            f"  {f['name']:<14} {f['start']:6.1f} -> {end:>6}  down {_s(f['down_s'])}, "
            f"recovered in {_s(f['recovery_s'])} ({per or 'nothing failed'})"
        )
        if f["note"]:
            lines.append(f"  {'':<14} {f['note']}")
        errors = ", ".join(f"{label} {n}" for label, n in f["errors"].items())
        lines.append(f"  {'':<14} errors in its window: {errors or 'none'}")
    lines += ["", "service RSS"]
    for s in report["rss"]:
        growth = "-" if s["growth"] is None else f"{s['growth'] * 100:+.1f}%"
        lines.append(
            f"  pid {s['pid']}: {s['from_s']:.0f}-{s['to_s']:.0f} s, {s['samples']} samples, "
            f"settled {_mb(s['baseline_mb'])} -> end {_mb(s['final_mb'])} ({growth}), "
            f"peak {_mb(s['peak_mb'])}"
        )
    series = " ".join(f"{p['t']:.0f}s:{p['rss_mb']:.0f}" for p in report["rss_series"])
    lines.append(f"  over time (s:MB): {series or '-'}")
    rows = report["log_rows"]
    lines += ["", "query log rows"]
    if rows is None:
        lines.append("  not checked")
    else:
        lines.append(
            f"  expected {rows['expected']} (query ids in served responses), found {rows['found']}, "
            f"lost {rows['lost']} ({rows['lost_near_kill']} just before the service's SIGKILL), "
            f"rows no response named {rows['extra']}, duplicated candidates "
            f"{rows['duplicate_candidates']}, duplicated decisions {rows['duplicate_decisions']}"
        )
        for key in ("left_in_spool", "writer_at_end"):
            if key in rows:
                lines.append(f"  {key.replace('_', ' ')}: {rows[key]}")
    lines += ["", "targets"]
    for t in report["targets"]:
        mark = {True: "PASS", False: "FAIL", None: "N/A "}[t["passed"]]
        lines.append(f"  {mark}  {t['name']}: {t['detail']}")
    return "\n".join(lines) + "\n"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} MB"
