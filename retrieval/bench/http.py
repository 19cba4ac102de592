"""End-to-end HTTP latency of a real ``retrieval serve`` under concurrent clients.

The command builds synthetic FAQ and product indexes in a temporary data dir (the real
encoders' ids and fusion, published as ``ingest`` would), starts ``retrieval serve`` on a
free port, and sends text questions from 1, 8, 32 ... concurrent clients.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import RetrievalError
from .stats import latency_summary

__all__ = [
    "QUESTIONS",
    "free_port",
    "load_levels",
    "make_service_data",
    "run_http",
    "start_service",
]

QUESTIONS = [
    "how long does delivery take?",
    "do you have organic bananas?",
    "can I pay with paypal",
    "where is my order",
    "I want to return an item",
    "is the oat milk in stock",
    "what are your opening hours",
    "my card was declined",
    "do you deliver on sundays",
    "gluten free bread",
    "cheap apple juice",
    "how do I reset my password",
]


def make_service_data(
    data_dir: Path,
    n_faq_entries: int,
    phrasings: int,
    n_products: int,
    progress: Any,
    *,
    config: Path | None = None,
    store: dict[str, Any] | None = None,
) -> None:
    """Synthetic FAQ (entries x phrasings vectors) and product (fused + text view) indexes,
    for the encoders and fusion of the settings in ``config`` (None: the defaults),
    published into the vector store ``store`` names (settings: ``vector_store`` and its URL;
    None: the settings')."""
    from ..encoders import image_encoder, text_encoder
    from ..fusion import fuse
    from ..index import IndexParams, VectorIndex
    from ..indexfolders import new_version_id
    from ..indexformat import faq_expectations, product_expectations
    from ..indexstore import publish_version
    from ..runtime import make_fusion
    from ..settings import load_settings
    from .data import embedding_like

    settings = load_settings(config, data_dir=data_dir, **(store or {}))
    text, image = text_encoder(settings), image_encoder(settings)
    fusion = make_fusion(settings, text, image)
    params = IndexParams(settings.hnsw_m, settings.hnsw_ef_construction, settings.hnsw_ef_search)

    faq_vecs, _ = embedding_like(n_faq_entries * phrasings, text.dim, seed=1)
    faq = VectorIndex(text.dim, params, capacity=len(faq_vecs), meta=faq_expectations(text))
    faq.add(
        [(f"faq{i}", f"example{j}") for i in range(n_faq_entries) for j in range(phrasings)],
        faq_vecs,
    )
    faq.meta["records"] = [
        {"id": f"faq{i}", "answer": f"Answer {i}.", "question": f"Question {i}?"}
        for i in range(n_faq_entries)
    ]
    faq.meta["calibration"] = {"answer_threshold": 0.5}
    publish_version(settings, "faq", new_version_id("faq"), faq)

    img, _ = embedding_like(n_products, image.dim, seed=2)
    txt, _ = embedding_like(n_products, text.dim, seed=3)
    prod = VectorIndex(
        fusion.dim, params, capacity=n_products, meta=product_expectations(text, image, fusion)
    )
    text_view = VectorIndex(text.dim, params, capacity=n_products, meta={"kind": "products-text"})
    bar = progress(f"service data: {n_products:,} products", 2 * n_products)
    step = 10_000
    for start in range(0, n_products, step):
        end = min(n_products, start + step)
        keys = [f"p{i}" for i in range(start, end)]
        prod.add([(k, "image0") for k in keys], fuse(img[start:end], txt[start:end], fusion))
        bar.update(end - start)
        text_view.add([(k, "text") for k in keys], txt[start:end])
        bar.update(end - start)
    bar.close()
    prod.companions["text"] = text_view
    prod.meta["records"] = [
        {"id": f"p{i}", "title": f"Product {i}", "price": 1.0, "currency": "EUR", "images": []}
        for i in range(n_products)
    ]
    publish_version(settings, "products", new_version_id("products"), prod)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(
    data_dir: Path,
    log_path: Path,
    timeout_s: float = 600,
    *,
    env: Mapping[str, str] | None = None,
) -> tuple[Any, str, float]:
    """Start ``retrieval serve`` over ``data_dir`` with ``env`` added to its environment
    (settings as ``RETRIEVAL_*`` variables); wait for /health. Returns (process, url, seconds)."""
    import httpx

    port = free_port()
    env = {
        **os.environ,
        **(env or {}),
        "RETRIEVAL_DATA_DIR": str(data_dir),
        "PYTHONUNBUFFERED": "1",
    }
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "retrieval.cli", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    # one client for all the polls: each new client loads the CA bundle (tens of ms of CPU),
    # which a loop of httpx.get() would take from the server loading its models
    with httpx.Client(base_url=url, timeout=2) as client:
        while True:
            try:
                if client.get("/health").status_code == 200:
                    return proc, url, time.perf_counter() - t0
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.perf_counter() - t0 > timeout_s:
                proc.terminate()
                tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                raise RetrievalError(
                    f"retrieval serve did not become ready ({' / '.join(tail) or 'no output'})"
                )
            time.sleep(0.2)


async def _level(url: str, clients: int, n_requests: int) -> dict:
    import httpx

    times: list[float] = []
    errors = 0
    counter = iter(range(n_requests))

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        for i in counter:
            q = QUESTIONS[i % len(QUESTIONS)] + f" {i}"
            t = time.perf_counter()
            try:
                r = await client.post("/v1/query", json={"text": q, "k_products": 5, "k_faq": 3})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                times.append((time.perf_counter() - t) * 1e3)
            else:
                errors += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        wall = time.perf_counter() - t0
    row: dict = {"clients": clients, "requests": n_requests, "errors": errors, "wall_s": wall}
    if times:
        row.update(latency_summary(times, wall).as_dict())
    return row


def load_levels(url: str, levels: Sequence[int], n_requests: int, warmup: int = 20) -> list[dict]:
    """Latency and QPS at each number of concurrent clients (text questions, after a warm-up)."""
    asyncio.run(_level(url, 1, warmup))
    rows = []
    for clients in levels:
        rows.append(asyncio.run(_level(url, clients, max(n_requests, clients))))
    return rows


def run_http(opts: dict, config: Path | None, progress: Any, err: Any) -> dict:
    from .http import make_service_data

    env = {} if config is None else {"RETRIEVAL_CONFIG": str(config)}
    modes = []
    prepare: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="retrieval-bench-") as tmp:
        for store in opts["vector_stores"]:
            data_dir = Path(tmp) / store
            data_dir.mkdir()
            with _vector_store(store, err) as store_env:
                t0 = time.perf_counter()
                make_service_data(
                    data_dir,
                    opts["service_faq"],
                    5,
                    opts["service_products"],
                    progress,
                    config=config,
                    store={k.removeprefix("RETRIEVAL_").lower(): v for k, v in store_env.items()},
                )
                prepare[store] = time.perf_counter() - t0
                modes += _serve_modes(opts, data_dir, {**env, **store_env}, store, err)
    from ..encoders import image_encoder, text_encoder
    from ..settings import load_settings

    s = load_settings(config)
    first = modes[0]
    return {
        "n_faq_vectors": opts["service_faq"] * 5,
        "n_products": opts["service_products"],
        "fused_dim": image_encoder(s).dim + text_encoder(s).dim,
        "prepare_s": prepare[opts["vector_stores"][0]],
        "prepare_s_by_store": prepare,
        "startup_s": first["startup_s"],
        "levels": first["levels"],  # the first setting's (the shipped one by default)
        "modes": modes,
    }


@contextmanager
def _vector_store(store: str, err: Any) -> Iterator[dict[str, str]]:
    """The service's settings for ``store`` (environment form). pgvector: always a private
    local server for the run, never the configured store: the bench publishes synthetic
    versions and would make them current for every replica of a real shop."""
    if store == "hnswlib":
        yield {"RETRIEVAL_VECTOR_STORE": "hnswlib"}
        return
    from ..localpg import LocalPostgres, embedded_bin_dir

    err.print("http: starting a local PostgreSQL + pgvector for the run ...")
    server = LocalPostgres(bin_dir=embedded_bin_dir(), settings={"fsync": "off"}).start()
    url = server.conninfo("bench")
    try:
        server.create_database("bench")
        yield {"RETRIEVAL_VECTOR_STORE": "pgvector", "RETRIEVAL_VECTOR_STORE_URL": url}
    finally:
        from ..indexstore import close_store

        close_store(url)  # the pool this process filled the store with
        server.destroy()


def _serve_modes(
    opts: dict, data_dir: Path, env: dict[str, str], store: str, err: Any
) -> list[dict]:
    """Start the service over ``data_dir`` once per encoder format and batching setting and
    measure every client count."""
    from .encoders import text_variants

    modes = []
    for dtype, runtime in text_variants(opts):
        for batching in opts["batching"]:
            err.print(
                f"http: starting retrieval serve (vector_store {store}, encode_batching "
                f"{batching}, encoder_dtype {dtype}, text_runtime {runtime}) ..."
            )
            on = "on" if batching else "off"
            proc, url, startup_s = start_service(
                data_dir,
                data_dir / f"serve-{store}-batching-{on}-{dtype}-{runtime}.log",
                env={
                    **env,
                    "RETRIEVAL_ENCODE_BATCHING": str(batching).lower(),
                    "RETRIEVAL_ENCODER_DTYPE": dtype,
                    "RETRIEVAL_TEXT_RUNTIME": runtime,
                },
            )
            try:
                levels = load_levels(url, opts["clients"], opts["requests"])
            finally:
                proc.terminate()
                proc.wait(30)
            modes.append(
                {
                    "vector_store": store,
                    "batching": batching,
                    "encoder_dtype": dtype,
                    "text_runtime": runtime,
                    "startup_s": startup_s,
                    "levels": levels,
                }
            )
    return modes
