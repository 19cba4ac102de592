"""Peak memory of a full product build against the number of catalog images: a build should
hold the decoded pictures of one chunk at a time, not the whole catalog's.

    .venv/bin/python benchmarks/build_memory.py                       # 500, 1,000 and 2,000 images
    .venv/bin/python benchmarks/build_memory.py --images 1000,4000 --json out.json

Each row runs in a fresh process: it writes N generated 640 x 640 JPEG product photos to a
temporary directory, builds the product index (``retrieval.build.build_product_index``,
the function ingest and a full re-index run) with stand-in encoders (``bench_reindex.py``:
no model, so the figure is the build's own memory), and reports the peak resident memory
(``ru_maxrss``) above what the process held before the build, with the wall time. A build
that keeps every decoded picture grows by about 0.75 MB per image (each is reduced to at
most 512 x 512 RGB); one that decodes a chunk at a time stays flat.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent


def photo(i: int, path: Path) -> None:
    """A smooth 640 x 640 picture with some noise: a few tens of KB as a JPEG."""
    rng = np.random.default_rng(i)
    y, x = np.mgrid[0:640, 0:640].astype(np.float32) / 640
    base = rng.random(3) * 255
    arr = np.stack(
        [base[c] * (0.5 + 0.5 * np.sin((x + y + c) * (i % 7 + 1))) for c in range(3)], -1
    )
    arr += rng.normal(0, 6, arr.shape)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, quality=80)


def one(n: int) -> dict:
    """Build a catalog of ``n`` products with one photo each; this process's figures."""
    sys.path.insert(0, str(HERE))
    from bench_reindex import StandInImage, StandInText

    from retrieval.build import build_product_index
    from retrieval.catalog import load_catalog
    from retrieval.fusion import Fusion
    from retrieval.index import IndexParams

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = []
        for i in range(n):
            photo(i, root / f"p{i}.jpg")
            rows.append({"id": f"p{i}", "title": f"product {i}", "images": [f"p{i}.jpg"]})
        (root / "catalog.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        catalog = load_catalog(root / "catalog.jsonl")
        text, image = StandInText(), StandInImage()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        index = build_product_index(
            catalog,
            text,
            image,
            Fusion(image.dim, text.dim),
            IndexParams(),
            max_image_bytes=20_000_000,
            max_image_pixels=100_000_000,
        )
        wall = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "images": n,
        "vectors": len(index),
        "build_s": round(wall, 2),
        "rss_before_mb": round(before, 1),
        "peak_growth_mb": round(peak - before, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", default="500,1000,2000", help="catalog sizes (comma-separated)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a row, in its own process
    args = ap.parse_args()
    if args.one is not None:
        sys.stdout.write(json.dumps(one(args.one)) + "\n")
        return 0
    rows = []
    for n in [int(v) for v in args.images.split(",")]:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, check=True
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        sys.stdout.write(json.dumps(rows[-1]) + "\n")
        sys.stdout.flush()
    sys.stdout.write("\n| images | build s | peak memory growth MB | MB per 1,000 images |\n")
    sys.stdout.write("| ---: | ---: | ---: | ---: |\n")
    for r in rows:
        per = 1000 * r["peak_growth_mb"] / r["images"]
        sys.stdout.write(
            f"| {r['images']:,} | {r['build_s']:.1f} | {r['peak_growth_mb']:.0f} | {per:.0f} |\n"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
