"""What the query log costs one question: ``Retriever.query`` in-process, one question after
another, without a log, and with the service's log (SQLite in a temporary data folder) at
several writer ``linger`` values (how long the writer gathers records before a
transaction). The writer runs in its own thread; what it costs a question is the
interpreter time it takes while the next question is being encoded.

The data are ``retrieval bench``'s synthetic service data (10,000 FAQ vectors, 20,000
products), the encoders the packaged ones on one torch thread, as ``retrieval serve`` runs
them. Each configuration answers the same questions, after a warm-up. Run on a quiet machine:

    .venv/bin/python benchmarks/query_log_overhead.py [--questions 300] [--linger 0,0.05,0.2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.bench.http import QUESTIONS, make_service_data


class _Quiet:
    def __call__(self, desc: str, total: int) -> _Quiet:
        return self

    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _timed(retriever: Any, n: int) -> tuple[float, float]:
    for q in QUESTIONS * 2:
        retriever.query(q)
    times = []
    for i in range(n):
        t = time.perf_counter()
        retriever.query(f"{QUESTIONS[i % len(QUESTIONS)]} {i}")
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--questions", type=int, default=300, help="timed questions per row")
    ap.add_argument("--linger", default="0,0.05", help="writer linger values, seconds")
    args = ap.parse_args()

    from retrieval.encoders.base import set_model_threads
    from retrieval.runtime import build_retriever, open_store
    from retrieval.settings import load_settings

    data = Path(tempfile.mkdtemp(prefix="retrieval-qlog-bench-"))
    make_service_data(data, 10_000, 1, 20_000, _Quiet())
    settings = load_settings(None, data_dir=data)
    set_model_threads(1)
    _, qlog = open_store(settings)
    rows = [("no query log", *_timed(build_retriever(settings), args.questions))]
    for linger in (float(x) for x in args.linger.split(",")):
        qlog.flush(10)
        qlog.linger = linger
        rows.append(
            (f"log, linger {linger:g} s", *_timed(build_retriever(settings, qlog), args.questions))
        )
    qlog.close()
    print(f"Retriever.query, {args.questions} questions one after another, one torch thread")
    print(f"{'':<22} {'p50 ms':>7} {'p95 ms':>7}")
    for name, p50, p95 in rows:
        print(f"{name:<22} {p50:>7.1f} {p95:>7.1f}")


if __name__ == "__main__":
    main()
