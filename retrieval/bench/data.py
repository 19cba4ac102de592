"""Synthetic data for tests and benchmarks, exact answers, and this machine's memory.

Synthetic unit vectors with the structure of real embeddings (:func:`embedding_like`).
Sentence and image embeddings lie near a low-dimensional manifold: nearest neighbours are
meaningfully nearer than the rest. Independent Gaussian vectors in 384 dimensions have no
such structure (every point is about equally far from every other), so no approximate index
finds their "neighbours" well and they measure nothing a shop would see. These vectors are a
random linear image of a ``latent``-dimensional Gaussian plus isotropic noise, drawn in
chunks so that a million 1664-d vectors need no full-size temporaries.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..encoders.base import l2_normalize

__all__ = [
    "DATA_DESCRIPTION",
    "available_memory",
    "embedding_like",
    "exact_one",
    "exact_topk",
    "rss_bytes",
]

DATA_DESCRIPTION = (
    "embedding-like synthetic unit vectors (retrieval/bench/data.py: a random linear image of "
    "a 16-d Gaussian plus isotropic noise 0.1*sqrt(16), so near neighbours are meaningfully "
    "nearer than the rest, as with real embeddings); queries are fresh draws"
)


def embedding_like(
    n: int,
    dim: int,
    *,
    n_queries: int = 0,
    latent: int = 16,
    noise: float = 0.1,
    seed: int = 0,
    chunk: int = 20_000,
    on_chunk: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (vectors (n, dim), queries (n_queries, dim)), unit length, float32; queries are
    fresh draws. Drawn ``chunk`` rows at a time (``on_chunk(rows)`` after each): numpy's
    Generator fills a draw element by element from one stream, so the chunk size does not
    change the numbers (the tests check it)."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((latent, dim)).astype(np.float32)
    scale = noise * np.sqrt(latent)

    def draw(m: int) -> np.ndarray:
        z = rng.standard_normal((m, latent)).astype(np.float32)
        out = np.empty((m, dim), dtype=np.float32)
        for start in range(0, m, chunk):
            end = min(m, start + chunk)
            e = rng.standard_normal((end - start, dim)).astype(np.float32)
            out[start:end] = l2_normalize(z[start:end] @ basis + scale * e)
            if on_chunk is not None:
                on_chunk(end - start)
        return out

    x = draw(n)
    return x, draw(n_queries)


def exact_topk(x: np.ndarray, queries: np.ndarray, k: int, *, chunk: int = 50_000) -> np.ndarray:
    """Ids of the ``k`` largest inner products of each query with the rows of ``x``, best first."""
    k = min(k, len(x))
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(x), chunk):
        s = queries @ x[start : start + chunk].T
        kk = min(k, s.shape[1])
        top = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        s_all = np.concatenate([best_s, np.take_along_axis(s, top, axis=1)], axis=1)
        i_all = np.concatenate([best_i, top + start], axis=1)
        keep = np.argsort(-s_all, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(s_all, keep, axis=1)
        best_i = np.take_along_axis(i_all, keep, axis=1)
    return best_i


def exact_one(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Exact top ``k`` for one query: matrix-vector product, argpartition, sort of the top k."""
    s = x @ q
    top = np.argpartition(-s, k - 1)[:k]
    return top[np.argsort(-s[top])]


def _meminfo() -> dict[str, int]:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[name] = int(parts[0]) * 1024
    return out


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping (MemAvailable); None if unknown."""
    try:
        return _meminfo().get("MemAvailable")
    except OSError:
        return None


def rss_bytes() -> int | None:
    """This process's resident set size in bytes (Linux /proc), None elsewhere."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")
