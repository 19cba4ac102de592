"""Encoder throughput: texts/s and images/s by batch size, on the demo shop's own data."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import RetrievalError

__all__ = ["bench_encoder", "demo_images", "demo_texts"]


def demo_texts(faq_path: Path, catalog_path: Path) -> list[str]:
    """Every FAQ phrasing (question, examples, answer) and every product text of the demo data."""
    from ..catalog import load_catalog
    from ..faq import load_faq

    texts = [text for entry in load_faq(faq_path) for _, text in entry.phrasings()]
    texts += [p.text for p in load_catalog(catalog_path)]
    return texts


def demo_images(catalog_path: Path) -> list[Any]:
    """The catalog's product photos, decoded into memory (decoding is not part of the timing)."""
    from PIL import Image

    from ..catalog import load_catalog

    images = []
    for product in load_catalog(catalog_path):
        for path in product.images:
            with Image.open(path) as im:
                images.append(im.convert("RGB"))
    if not images:
        raise RetrievalError(f"the catalog {catalog_path} has no product images")
    return images


def bench_encoder(
    encoder: Any, items: Sequence[Any], batch_sizes: Sequence[int], min_items: int
) -> dict:
    """Items/s of ``encoder.encode(batch, batch_size=b)`` for each batch size b.

    Each batch size encodes at least ``min_items`` items (and at least two batches), cycling
    through ``items``; the first call (model load) is timed apart and not counted.
    """
    t0 = time.perf_counter()
    encoder.encode(list(items[:1]))
    load_s = time.perf_counter() - t0
    rows = []
    for b in batch_sizes:
        n_batches = max(2, -(-min_items // b))
        cycle = itertools.cycle(items)
        batches = [[next(cycle) for _ in range(b)] for _ in range(n_batches)]
        encoder.encode(batches[0], batch_size=b)  # warm this batch shape
        times = []
        for batch in batches:
            t = time.perf_counter()
            encoder.encode(batch, batch_size=b)
            times.append(time.perf_counter() - t)
        total = sum(times)
        rows.append(
            {
                "batch_size": b,
                "items": b * n_batches,
                "items_per_s": b * n_batches / total,
                "ms_per_batch": 1e3 * total / n_batches,
            }
        )
    return {"model": encoder.id, "load_s": load_s, "by_batch": rows}


def text_variants(opts: dict) -> list[tuple[str, str]]:
    """Every (encoder dtype, text runtime) pair asked for, dtype first, in the order given."""
    return [(d, r) for d in opts["encoder_dtypes"] for r in opts.get("text_runtimes", ["auto"])]
