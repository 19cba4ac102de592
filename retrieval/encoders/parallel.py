"""Bulk text encoding across worker processes, for full builds of large banks and catalogs.

A full re-index is dominated by encoding. :class:`ProcessPoolTextEncoder` splits the texts
into the same fixed chunks the single-process encoder works through
(:data:`CHUNK`), sends them to ``workers`` processes, each holding its own copy of the model
on one torch thread, and puts the results back in order: the vectors are those of one
process encoding the same chunks (equal within float rounding; the tests check 1e-5). Each
worker loads the model once (a few seconds), so small jobs stay in the calling process.

It implements the :class:`~retrieval.encoders.base.Encoder` protocol, so the build code
(``build_faq_index``, ``build_product_index``) takes it unchanged. The workers are local
processes (``concurrent.futures`` with ``spawn``); :mod:`.cluster` runs the same chunks as
tasks on a Dask cluster of several machines.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .base import l2_normalize

__all__ = ["CHUNK", "MIN_PARALLEL", "ProcessPoolTextEncoder", "encode_chunk_with"]

log = logging.getLogger(__name__)

CHUNK = 256  # texts per task: SentenceTransformerEncoder's own chunk for large inputs
MIN_PARALLEL = 4 * CHUNK  # fewer texts are encoded in the calling process

_worker: Any = None  # the worker process's encoder


def _init(spec: str, device: str, batch_size: int, dtype: str, runtime: str) -> None:
    global _worker
    import torch

    from .text import SentenceTransformerEncoder

    torch.set_num_threads(1)  # one core per worker: the processes are the parallelism
    _worker = SentenceTransformerEncoder(
        spec, device=device, batch_size=batch_size, threads=1, dtype=dtype, runtime=runtime
    )


_worker_args: tuple[Any, ...] | None = None  # what _worker was loaded with
_load_lock = threading.Lock()


def _encode_chunk(texts: list[str]) -> np.ndarray:
    out: np.ndarray = _worker.encode(texts)
    return out


def encode_chunk_with(texts: list[str], init_args: tuple[Any, ...]) -> np.ndarray:
    """One chunk in a worker that loads the model on its first chunk (a Dask worker, which
    has no initializer; :mod:`.cluster`), and again only when another model is asked for."""
    global _worker_args
    with _load_lock:  # a worker with several threads loads the model once
        if _worker is None or _worker_args != tuple(init_args):
            _init(*init_args)
            _worker_args = tuple(init_args)
    return _encode_chunk(texts)


class ProcessPoolTextEncoder:
    """A sentence-transformers text encoder whose large jobs run in ``workers`` processes."""

    modality = "text"

    def __init__(
        self,
        inner: Any,
        spec: str,
        workers: int,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        dtype: str = "float32",
        runtime: str = "torch",
        chunk: int = CHUNK,
        min_parallel: int = MIN_PARALLEL,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, not {chunk}")
        self.chunk = int(chunk)  # texts per task
        self.min_parallel = int(min_parallel)  # fewer are encoded in this process
        self.inner = inner  # the same model in this process: id, dim and small jobs
        self.workers = int(workers)
        self._init_args = (spec, device, batch_size, dtype, runtime)

    @property
    def id(self) -> str:
        return str(self.inner.id)

    @property
    def dim(self) -> int:
        return int(self.inner.dim)

    def encode(
        self, items: Sequence[str], *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        texts = list(items)
        if self.workers < 2 or len(texts) < self.min_parallel:
            out: np.ndarray = self.inner.encode(texts, batch_size=batch_size, progress=progress)
            return out
        step = self.chunk
        chunks = [texts[i : i + step] for i in range(0, len(texts), step)]
        log.info("encoding %d texts in %d processes", len(texts), self.workers)
        ctx = multiprocessing.get_context("spawn")  # no forked copy of a loaded torch
        with ProcessPoolExecutor(
            self.workers, mp_context=ctx, initializer=_init, initargs=self._init_args
        ) as pool:
            parts = []
            with tqdm(
                total=len(texts), desc="encoding texts", unit="item", disable=not progress
            ) as bar:
                for part in pool.map(_encode_chunk, chunks):  # results in order
                    parts.append(part)
                    bar.update(len(part))
        return l2_normalize(np.concatenate(parts))
