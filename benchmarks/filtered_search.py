"""Filtered product search against brute-force filtered search, and what a filter costs.

    .venv/bin/python benchmarks/filtered_search.py                 # 100k products, 1,000 queries
    .venv/bin/python benchmarks/filtered_search.py --n 20000 --queries 200   # a quick look

Data: ``--n`` embedding-like unit vectors (384-d, ``retrieval/bench/data.py``) in a
``VectorIndex`` with the product's default HNSW settings, one vector per product; product i
costs i cents, so a price range keeps an exact share of the catalog. Each query draws a
fresh vector and a random price range keeping ``share`` of the products, resolves it through
the service's own code (``ProductFilter`` -> ``CatalogColumns.label_mask``) and searches with
``VectorIndex.search_items(..., allowed=mask)``, the call the query path makes.

``search`` says which way the index took: exact over the allowed vectors, or the graph (a
larger plain search post-filtered when the filter keeps a fair share, hnswlib's filtered
search otherwise; see ``VectorIndex._filtered``). Reported per share: recall@10 against brute-force filtered search (numpy over the products
the filter keeps), how often the result equals brute force exactly, whether every returned
product passes the filter and k were returned, and per-query latency (p50 / p95, mask
included) next to the unfiltered search measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from tqdm import tqdm

from retrieval.bench.data import embedding_like
from retrieval.catalog import Catalog, Product
from retrieval.filters import CatalogColumns, ProductFilter
from retrieval.index import EXACT_FILTERED, IndexParams, VectorIndex

SHARES = (0.001, 0.01, 0.05, 0.2, 0.5)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="products (default 100,000)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=1000, help="queries per share")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    n, k = args.n, args.k

    x, queries = embedding_like(n, args.dim, n_queries=args.queries, seed=7)
    index = VectorIndex(args.dim, IndexParams(), capacity=n)
    t0 = time.perf_counter()
    for start in tqdm(range(0, n, 10_000), desc="building the index", unit="10k"):
        index.add(
            [(f"p{i}", "v") for i in range(start, min(n, start + 10_000))],
            x[start : start + 10_000],
        )
    build_s = time.perf_counter() - t0
    cols = CatalogColumns(
        Catalog({f"p{i}": Product(f"p{i}", f"product {i}", price=i / 100) for i in range(n)})
    )

    def timed(fn):  # noqa: ANN001, ANN202
        t = time.perf_counter()
        out = fn()
        return out, (time.perf_counter() - t) * 1e3

    plain = [timed(lambda q=q: index.search_items(q, k))[1] for q in queries]
    rng = np.random.default_rng(11)
    rows = []
    for share in SHARES:
        keep_n = max(1, int(n * share))
        recalls, exact, ok, ms = [], 0, 0, []
        for q in tqdm(queries, desc=f"filter keeping {share:.1%}", leave=False):
            lo = int(rng.integers(0, n - keep_n + 1))
            f = ProductFilter(price_min=lo / 100, price_max=(lo + keep_n - 1) / 100)

            def search(f=f, q=q):  # noqa: ANN001, ANN202
                return index.search_items(q, k, allowed=cols.label_mask(index, f))

            hits, t = timed(search)
            ms.append(t)
            got = [int(h.item_id[1:]) for h in hits]
            sims = x[lo : lo + keep_n] @ q
            want = (lo + np.argsort(-sims, kind="stable")[:k]).tolist()
            recalls.append(len(set(got) & set(want)) / len(want))
            exact += got == want
            ok += all(lo <= g < lo + keep_n for g in got) and len(got) == min(k, keep_n)
        rows.append(
            {
                "share": share,
                "kept": keep_n,
                "search": "exact" if keep_n <= EXACT_FILTERED else "graph",
                "recall_at_k": float(np.mean(recalls)),
                "equal_to_brute_force": exact / len(queries),
                "all_pass_and_k_filled": ok / len(queries),
                "p50_ms": float(np.percentile(ms, 50)),
                "p95_ms": float(np.percentile(ms, 95)),
            }
        )
    result = {
        "n": n,
        "dim": args.dim,
        "queries_per_share": args.queries,
        "k": k,
        "build_s": build_s,
        "unfiltered_p50_ms": float(np.percentile(plain, 50)),
        "unfiltered_p95_ms": float(np.percentile(plain, 95)),
        "rows": rows,
    }
    print(
        f"\n{n:,} products x {args.dim}-d, {args.queries} queries per share, k={k}; "
        f"unfiltered search_items p50 {result['unfiltered_p50_ms']:.2f} ms, "
        f"p95 {result['unfiltered_p95_ms']:.2f} ms\n"
    )
    print(
        "| filter keeps | search | recall@10 | = brute force | pass + k filled | p50 ms | p95 ms |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['share']:.1%} ({r['kept']:,}) | {r['search']} | {r['recall_at_k']:.3f} | "
            f"{r['equal_to_brute_force']:.3f} | {r['all_pass_and_k_filled']:.3f} | "
            f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} |"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
