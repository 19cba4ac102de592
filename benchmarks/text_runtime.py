"""What each text runtime costs and gives, one process per runtime: model load time, memory
(resident set size after the load and one question), and one question's encode time on one
thread, the web service's setting.

Each runtime is measured in a fresh Python process (``--child``), so neither inherits the
other's loaded libraries or heap. The encoder is built from settings as the service builds
it (``retrieval.encoders.text_encoder`` with ``text_runtime``), after one torch thread is
set on the model thread (``set_model_threads(1)``, as ``retrieval serve`` does).

    .venv/bin/python benchmarks/text_runtime.py [--runtimes torch,onnx] [--questions 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

import numpy as np

from retrieval.bench.http import QUESTIONS


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(runtime: str, questions: int) -> dict[str, Any]:
    """In this process: load the encoder for ``runtime`` and time single questions."""
    from retrieval.encoders import text_encoder
    from retrieval.encoders.base import set_model_threads
    from retrieval.settings import load_settings

    set_model_threads(1)
    start_rss = _rss_mb()
    t0 = time.perf_counter()
    encoder = text_encoder(load_settings(None, promoted=False, text_runtime=runtime))
    encoder.encode(["warm up"])
    load_s = time.perf_counter() - t0
    rss = _rss_mb()
    texts = [QUESTIONS[i % len(QUESTIONS)] for i in range(questions)]
    for text in texts[:20]:
        encoder.encode([text])
    times = []
    for text in texts:
        t = time.perf_counter()
        encoder.encode([text])
        times.append((time.perf_counter() - t) * 1e3)
    return {
        "runtime_setting": runtime,
        "runtime": encoder.runtime,
        "load_s": round(load_s, 2),
        "rss_mb_before_load": round(start_rss, 1),
        "rss_mb": round(rss, 1),
        "p50_ms": round(float(np.percentile(times, 50)), 2),
        "p95_ms": round(float(np.percentile(times, 95)), 2),
        "questions": len(times),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runtimes", default="torch,onnx", help="comma-separated text_runtime values")
    p.add_argument("--questions", type=int, default=200, help="single questions timed per runtime")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.questions)))
        return
    rows = []
    for runtime in [r.strip() for r in args.runtimes.split(",") if r.strip()]:
        out = subprocess.run(
            [sys.executable, __file__, "--child", runtime, "--questions", str(args.questions)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| runtime | load s | RSS MB (before load) | one question p50 / p95 ms |")
    print("| --- | ---: | ---: | --- |")
    for r in rows:
        print(
            f"| {r['runtime']} | {r['load_s']:.1f} | {r['rss_mb']:,.0f} ({r['rss_mb_before_load']:,.0f})"
            f" | {r['p50_ms']:.1f} / {r['p95_ms']:.1f} |"
        )


if __name__ == "__main__":
    main()
