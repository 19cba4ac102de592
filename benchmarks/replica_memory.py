"""What a service replica holds of a large catalog on the pgvector backend: a products version
of N synthetic products published into a private PostgreSQL + pgvector, opened by a fresh
process as the service opens it (``open_index`` then ``Snapshot.from_indexes``), with the
records in the store's ``vs_records`` rows (read by id, as published now) and, in the same
run, the same version rewritten as versions were published before (records inside the
version's metadata, which every replica parsed whole).

    .venv/bin/python benchmarks/replica_memory.py                  # 100,000 products
    .venv/bin/python benchmarks/replica_memory.py --products 20000 --json out.json

Per layout: the replica's resident memory after the imports, after opening the version,
after reading 1,000 products by id (a busy hour's result lists), after building the filter
columns and then the title index (which a replica does before serving a version); the
seconds each took and the mean milliseconds of a result list's read when not cached.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROBE = r"""
import json, random, sys, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
from retrieval.decision import DecisionPolicy
from retrieval.index import IndexParams, VectorIndex
from retrieval.snapshot import Snapshot
from retrieval.vectorstore.pgindex import open_index
from retrieval.vectorstore.pgvector import PgvectorStore
url, n = sys.argv[1], int(sys.argv[2])
store = PgvectorStore(url)
out = {"rss_imports_mb": rss()}
t0 = time.perf_counter()
products = open_index(store, "products")
snap = Snapshot.from_indexes(VectorIndex(8, IndexParams(), meta={"records": []}), products, DecisionPolicy())
out["open_s"] = time.perf_counter() - t0
out["rss_open_mb"] = rss()
ids = [f"p{i}" for i in random.Random(1).sample(range(n), 1000)]
t0 = time.perf_counter()
for start in range(0, len(ids), 10):  # result lists of 10
    found = snap.catalog.get_many(ids[start:start + 10])
    assert len(found) == 10
out["read_ms_per_list"] = (time.perf_counter() - t0) * 1000 / (len(ids) / 10)
out["rss_after_reads_mb"] = rss()
t0 = time.perf_counter()
columns = snap.catalog_columns  # what a replica builds before serving (Snapshot.warm)
out["filter_columns_s"] = time.perf_counter() - t0
out["rss_after_columns_mb"] = rss()
t0 = time.perf_counter()
titles = snap.title_index  # the other whole-catalog structure Snapshot.warm builds
out["title_index_s"] = time.perf_counter() - t0
out["rss_after_titles_mb"] = rss()
out["store_catalog"] = type(snap.catalog).__name__
print(json.dumps(out))
"""


def _records(n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    words = "fresh organic milk apple delivery kettle cotton lamp chair pillow coffee".split()
    return [
        {
            "id": f"p{i}",
            "title": f"Product {i} " + " ".join(rng.choice(words, 4)),
            "description": " ".join(rng.choice(words, 60)),  # about 400 characters
            "price": float(i % 500) / 10,
            "currency": "EUR",
            "category": f"category {i % 40}",
            "stock": int(i % 7),
            "images": [f"images/p{i}.jpg"],
            "names": {"zh": f"产品{i}"},
        }
        for i in range(n)
    ]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--products", type=int, default=100_000, help="catalog size (100,000)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)

    from psycopg.types.json import Jsonb

    from retrieval.index import IndexParams, VectorIndex
    from retrieval.localpg import LocalPostgres, embedded_bin_dir
    from retrieval.vectorstore.pgpublish import publish_index
    from retrieval.vectorstore.pgvector import PgvectorStore

    n = args.products
    records = _records(n)
    root = Path(tempfile.mkdtemp(prefix="replica-memory-"))
    root.chmod(0o755)  # the server runs as the postgres user when this runs as root
    server = LocalPostgres(root / "pg", bin_dir=embedded_bin_dir(), settings={"fsync": "off"})
    server.start()
    report: dict = {"products": n}
    try:
        server.create_database("vectors")
        url = server.conninfo("vectors")
        store = PgvectorStore(url)
        rng = np.random.default_rng(1)
        vectors = rng.normal(size=(n, 16)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        index = VectorIndex(16, IndexParams(m=8, ef_construction=40), capacity=n)
        index.add([(r["id"], "text") for r in records], vectors)
        index.meta["records"] = records
        t0 = time.perf_counter()
        publish_index(store, "products", "products-20261204T000000000000-000001", index)
        report["publish_s"] = round(time.perf_counter() - t0, 1)
        for layout in ("records in vs_records", "records in the metadata"):
            if layout == "records in the metadata":
                with store._pool.connection() as conn, conn.transaction():
                    conn.execute(
                        "UPDATE vs_versions SET meta = (meta - 'records_table' - "
                        "'record_count') || jsonb_build_object('records', %s::jsonb)",
                        (Jsonb(records),),
                    )
            line = (
                subprocess.run(
                    [sys.executable, "-c", PROBE, url, str(n)],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            figures = json.loads(line)
            report[layout] = figures
            print(
                f"{layout}: open {figures['open_s']:.2f} s, RSS after imports "
                f"{figures['rss_imports_mb']:.0f} MB, after open {figures['rss_open_mb']:.0f} MB, "
                f"after 1,000 reads {figures['rss_after_reads_mb']:.0f} MB, "
                f"{figures['read_ms_per_list']:.2f} ms per list of 10 ({figures['store_catalog']}); "
                f"filter columns built in {figures['filter_columns_s']:.2f} s, RSS then "
                f"{figures['rss_after_columns_mb']:.0f} MB; title index in "
                f"{figures['title_index_s']:.2f} s, RSS then {figures['rss_after_titles_mb']:.0f} MB"
            )
        store.close()
    finally:
        server.destroy()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
