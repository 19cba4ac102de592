"""Bulk encoding across processes: items/s of a full build's encoding with 1 and N worker
processes (``encode_workers``), measured in one run with the shipped encoders, and the
largest difference between the vectors of the two paths.

    .venv/bin/python benchmarks/parallel_encoding.py                 # 20,000 texts, 1 and 2 workers
    .venv/bin/python benchmarks/parallel_encoding.py --texts 50000 --workers 1,2,4 --json out.json
    .venv/bin/python benchmarks/parallel_encoding.py --workers 1,2 --cluster local   # and on Dask
    .venv/bin/python benchmarks/parallel_encoding.py --kind image --texts 600         # image files
    .venv/bin/python benchmarks/parallel_encoding.py --kind multilingual              # the zh view

``--kind text`` (the default) and ``multilingual`` encode generated catalog-like titles and
descriptions (3 to 30 words); ``image`` encodes the demo catalog's image files (cycled to
the count given), read, decoded and encoded as a build does it
(``retrieval.encoders.files.encode_image_files``). Each worker loads its own model copy,
which the timing includes (it is part of what a full re-index pays); the single-process run
uses one thread per process as the workers do, and a second line with the model's own
thread count shows what one process gets from both cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

from retrieval.encoders import (
    bulk_image_encoder,
    bulk_multilingual_encoder,
    bulk_text_encoder,
    image_encoder,
    multilingual_encoder,
    text_encoder,
)
from retrieval.encoders.base import set_model_threads
from retrieval.encoders.files import encode_image_files
from retrieval.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]

WORDS = (
    "fresh organic milk apple banana delivery refund order parcel voucher kettle blender "
    "towel cotton linen phone charger cable lamp chair table mattress pillow yoghurt oat "
    "coffee tea pasta rice sauce jam bread cheese butter juice water soap shampoo brush"
).split()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--texts", type=int, default=20_000, help="texts (or images) to encode (default 20,000)"
    )
    ap.add_argument(
        "--kind",
        choices=("text", "multilingual", "image"),
        default="text",
        help="which model: the text encoder (default), the multilingual one, or the CNN on "
        "the demo catalog's image files",
    )
    ap.add_argument("--workers", default="1,2", help="worker counts to time (default 1,2)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument(
        "--cluster",
        help="also time encode_cluster with this value after the process rows: 'local' (a "
        "Dask cluster of the largest worker count, started inside the timing) or a "
        "scheduler's address",
    )
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    rng = random.Random(3)
    if args.kind == "image":
        pictures = sorted((ROOT / "data" / "catalog" / "images").glob("*.jpg"))
        texts: list = [pictures[i % len(pictures)] for i in range(args.texts)]
    else:
        texts = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))) + f" {i}"
            for i in range(args.texts)
        ]
    rows = []
    reference = None
    runs = [(w, t, None) for w in counts for t in ([1, None] if w == 1 else [1])]
    if args.cluster:
        runs.append((max(counts), 1, args.cluster))
    for workers, n_threads, cluster in runs:
        # the encoder is made per thread count: ONNX Runtime fixes its threads when it opens
        settings = load_settings(
            None,
            encode_workers=workers,
            encode_cluster=cluster,
            torch_threads=n_threads or os.cpu_count() or 1,
        )
        if n_threads is not None:
            set_model_threads(n_threads)
        else:
            set_model_threads(os.cpu_count() or 1)
        encode, warm = _encoders(args.kind, settings)
        if workers == 1:
            warm()  # load the model first: not timed
        t0 = time.perf_counter()
        vectors = encode(texts)
        wall = time.perf_counter() - t0
        if reference is None:
            reference = vectors
        row = {
            "kind": args.kind,
            "workers": workers if cluster is None else f"{workers} (Dask, {cluster})",
            "torch_threads_per_process": n_threads or "all cores",
            "texts": len(texts),
            "wall_s": wall,
            "texts_per_s": len(texts) / wall,
            "max_abs_diff_vs_first": float(np.max(np.abs(vectors - reference))),
        }
        rows.append(row)
        sys.stdout.write(json.dumps(row) + "\n")
        sys.stdout.flush()
    base = rows[0]["texts_per_s"]
    for row in rows:
        row["speedup_vs_first"] = row["texts_per_s"] / base
    sys.stdout.write(
        f"\n| workers | threads each | {args.kind} items/s | speed-up | max abs diff |\n"
    )
    sys.stdout.write("| ---: | --- | ---: | ---: | ---: |\n")
    for r in rows:
        sys.stdout.write(
            f"| {r['workers']} | {r['torch_threads_per_process']} | {r['texts_per_s']:,.1f} | "
            f"{r['speedup_vs_first']:.2f}x | {r['max_abs_diff_vs_first']:.1e} |\n"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def _encoders(kind: str, settings):  # noqa: ANN001, ANN202
    """(encode the items as a build does, load the in-process model) for ``kind``."""
    if kind == "image":
        image = bulk_image_encoder(settings)
        limits = {"max_bytes": settings.max_image_bytes, "max_pixels": settings.max_image_pixels}
        pictures = sorted((ROOT / "data" / "catalog" / "images").glob("*.jpg"))[:1]
        return (
            lambda items: encode_image_files(image, items, **limits),
            lambda: encode_image_files(image_encoder(settings), pictures, **limits),
        )
    if kind == "multilingual":
        ml = bulk_multilingual_encoder(settings)
        assert ml is not None, "multilingual_model is off"
        return ml.encode, lambda: multilingual_encoder(settings).encode(["load the model"])
    return bulk_text_encoder(settings).encode, lambda: text_encoder(settings).encode(["load"])


if __name__ == "__main__":
    sys.exit(main())
