"""What the lexical signal costs per product question: hybrid (dense + BM25) against dense-only
ranking on the service's own query path, measured in one run.

    .venv/bin/python benchmarks/hybrid_latency.py                    # 20,000 products, 500 questions
    .venv/bin/python benchmarks/hybrid_latency.py --products 5000 --queries 200 --json out.json

Data: ``--products`` synthetic text-only products with model codes, titled like real offers
("Kestrel UE55NU7100 55 inch smart tv black"; brands, codes and words drawn from fixed
lists with a seed), written as a catalog file and indexed by ``retrieval ingest`` (the real
packaged MiniLM, the product index with its text view and lexical index). Questions: the
brand, code and one or two words of a random product ("ue55nu7100 tv?"), the code as
shoppers type it.

Each question is asked through ``Retriever.query`` twice, hybrid (``lexical_weight`` as
configured) and dense-only (0), in alternating order, so machine noise falls on both alike.
Reported: per-question latency p50 / p95 of the whole query (``total``) and of its ranking
part (``search``, encoding excluded), the hybrid/dense ratio of each, and hit@1 of both
rankings (the product the question was made from). Target (issue): hybrid p95 <= 1.3x
dense-only p95.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

BRANDS = (
    "kestrel nordwind altair brixton samsung lumina vexo orion zephyr tamura halden quanta "
    "sorella marlo ventra kobalt"
).split()
KINDS = {
    "tv": "smart tv 4k hdr led screen inch black",
    "phone": "smartphone dual sim 128gb unlocked black blue",
    "fridge": "fridge freezer frost free litre white stainless",
    "washer": "washing machine kg 1400 rpm white front loader",
    "laptop": "laptop notebook 15.6 inch ssd 16gb ram grey",
    "camera": "digital camera mirrorless lens kit megapixel black",
}


def code(rng: random.Random) -> str:
    letters = "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXZ") for _ in range(2))
    return f"{letters}{rng.randint(10, 99)}{rng.choice('ABCDEFGHJK')}{rng.randint(1000, 9999)}"


def catalog(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        c = code(rng)
        if c in seen:
            continue
        seen.add(c)
        kind = rng.choice(sorted(KINDS))
        words = rng.sample(KINDS[kind].split(), 4)
        title = f"{rng.choice(BRANDS).title()} {c} {' '.join(words)}"
        rows.append({"id": f"p{len(rows)}", "title": title, "category": kind, "price": 100.0})
    return rows


def question(product: dict, rng: random.Random) -> str:
    words = product["title"].split()
    extra = rng.sample(words[2:], rng.randint(1, 2))
    return f"{words[1].lower()} {' '.join(extra)}?"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)

    from retrieval.ingest import ingest
    from retrieval.runtime import build_retriever
    from retrieval.settings import load_settings

    rows = catalog(args.products, args.seed)
    with tempfile.TemporaryDirectory(prefix="hybrid-latency-") as tmp:
        path = Path(tmp) / "catalog.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        settings = load_settings(None, data_dir=Path(tmp) / "var", catalog_path=path)
        t0 = time.perf_counter()
        ingest(settings, kinds=("products",), progress=True)
        build_s = time.perf_counter() - t0
        hybrid = build_retriever(settings, kinds=("products",))
        if hybrid.limits.lexical_weight <= 0:
            sys.exit("lexical_weight is 0 in the settings: nothing to compare")
        dense = build_retriever(settings, kinds=("products",))
        dense.limits = dataclasses.replace(dense.limits, lexical_weight=0.0)
        rng = random.Random(args.seed + 1)
        picks = [rng.randrange(len(rows)) for _ in range(args.queries)]
        hybrid.query(question(rows[0], rng), k_products=10)  # warm both paths once
        dense.query(question(rows[0], rng), k_products=10)
        times: dict[str, dict[str, list[float]]] = {
            name: {"total": [], "search": []} for name in ("hybrid", "dense")
        }
        hits = {"hybrid": 0, "dense": 0}
        for i, p in enumerate(tqdm(picks, desc="questions")):
            q = question(rows[p], rng)
            order = [("hybrid", hybrid), ("dense", dense)]
            for name, r in order if i % 2 == 0 else order[::-1]:
                res = r.query(q, k_products=10)
                times[name]["total"].append(res.timings_ms["total"])
                times[name]["search"].append(res.timings_ms["search"])
                hits[name] += bool(res.products) and res.products[0].product.id == rows[p]["id"]
    out: dict = {
        "products": args.products,
        "queries": args.queries,
        "build_s": round(build_s, 1),
        "lexical_weight": hybrid.limits.lexical_weight,
    }
    for name in ("hybrid", "dense"):
        out[name] = {
            "hit_at_1": hits[name] / len(picks),
            **{
                f"{part}_ms_p{q}": round(percentile(times[name][part], q), 3)
                for part in ("total", "search")
                for q in (50, 95)
            },
        }
    out["ratio_p95_total"] = round(out["hybrid"]["total_ms_p95"] / out["dense"]["total_ms_p95"], 3)
    out["ratio_p95_search"] = round(
        out["hybrid"]["search_ms_p95"] / out["dense"]["search_ms_p95"], 3
    )
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    main()
