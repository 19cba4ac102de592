"""Pure maths of the benchmark: recall, latency summaries, the ef search, memory estimates.

No I/O and no clocks here: the measuring code passes numbers (or a measuring function) in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "EfSearch",
    "Latency",
    "estimate_index_bytes",
    "int_list",
    "latency_summary",
    "parse_count",
    "recall_at_k",
    "search_ef",
]


def recall_at_k(found: np.ndarray | Sequence[Sequence[int]], truth: np.ndarray, k: int) -> float:
    """Mean over queries of |found[:k] ∩ truth[:k]| / k (truth: the exact top k per query)."""
    truth = np.asarray(truth)
    if len(found) != len(truth):
        raise ValueError(f"{len(found)} result lists for {len(truth)} queries")
    if len(truth) == 0:
        raise ValueError("no queries")
    hits = [
        len(set(np.asarray(f)[:k].tolist()) & set(t[:k].tolist()))
        for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits) / k)


@dataclass(frozen=True)
class Latency:
    """Per-query latency percentiles (ms) and throughput (queries per second of wall time)."""

    n: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    qps: float

    def as_dict(self) -> dict:
        return {
            "n": self.n,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "mean_ms": self.mean_ms,
            "qps": self.qps,
        }


def latency_summary(
    times_ms: Sequence[float], wall_s: float | None = None, count: int | None = None
) -> Latency:
    """Percentiles of ``times_ms``; QPS is ``count`` (default: all) queries over ``wall_s``
    seconds (default: the sum of the times)."""
    t = np.asarray(times_ms, dtype=np.float64)
    if t.size == 0:
        raise ValueError("no latencies to summarise")
    wall = float(t.sum() / 1e3) if wall_s is None else wall_s
    done = int(t.size) if count is None else count
    p50, p95, p99 = np.percentile(t, [50, 95, 99])
    return Latency(
        n=int(t.size),
        p50_ms=float(p50),
        p95_ms=float(p95),
        p99_ms=float(p99),
        mean_ms=float(t.mean()),
        qps=float(done / wall) if wall > 0 else float("inf"),
    )


@dataclass(frozen=True)
class EfSearch:
    """The smallest ef reaching ``target`` recall (None: not reached by ``max_ef``)."""

    target: float
    ef: int | None
    recall: float | None


def search_ef(
    recall_at: Callable[[int], float], target: float, *, start: int = 10, max_ef: int = 4096
) -> EfSearch:
    """Smallest ef in [start, max_ef] with ``recall_at(ef) >= target``.

    Doubles ef from ``start`` until the target is reached, then bisects between the last ef
    that missed it and the first that reached it. Assumes recall grows with ef (true of HNSW
    up to noise; with a dip the answer is still an ef that reaches the target). Pass a memoised
    ``recall_at`` to share measurements between several targets.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"recall target must be in (0, 1], got {target}")
    if start < 1 or max_ef < start:
        raise ValueError(f"need 1 <= start <= max_ef, got start={start}, max_ef={max_ef}")
    lo, ef = start - 1, start  # lo: largest ef known to miss (start - 1: none known)
    while True:
        r = recall_at(ef)
        if r >= target:
            break
        if ef >= max_ef:
            return EfSearch(target, None, None)
        lo, ef = ef, min(2 * ef, max_ef)
    hi, best = ef, r
    while hi - lo > 1:
        mid = (lo + hi) // 2
        r = recall_at(mid)
        if r >= target:
            hi, best = mid, r
        else:
            lo = mid
    return EfSearch(target, hi, best)


def estimate_index_bytes(n: int, dim: int, m: int) -> int:
    """Memory of an hnswlib index of ``n`` float32 vectors: data, level-0 links (2M), upper levels.

    Per element: the vector, 2M level-0 links + a count, the label, a link-list pointer and
    lock; about 1/M of the elements also hold upper-level lists of M links.
    """
    per = dim * 4 + (2 * m + 1) * 4 + 8 + 8 + 8 + (m + 1) * 4 / max(m - 1, 1) * 1.0
    return int(n * per)


_SUFFIX = {"k": 1_000, "m": 1_000_000}


def parse_count(text: str) -> int:
    """'10k' -> 10000, '1M' -> 1000000, '2500' -> 2500; ValueError on anything else."""
    s = text.strip().lower().replace("_", "")
    mult = _SUFFIX.get(s[-1:], 1)
    digits = s[:-1] if s[-1:] in _SUFFIX else s
    try:
        value = float(digits) * mult
    except ValueError:
        raise ValueError(f"'{text}' is not a count (e.g. 2000, 10k, 1M)") from None
    if value < 1 or value != int(value):
        raise ValueError(f"'{text}' is not a positive whole count")
    return int(value)


def int_list(text: str) -> list[int]:
    """A comma-separated list of integers, for a benchmark option: ``0,1,2`` -> [0, 1, 2]."""
    return [int(x) for x in text.split(",")]
