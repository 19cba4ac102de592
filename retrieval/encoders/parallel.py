"""Bulk encoding across worker processes, for full builds of large banks and catalogs.

A full re-index is dominated by encoding. A :class:`PooledEncoder` splits a large job into
fixed chunks (:data:`CHUNK` texts, :data:`IMAGE_CHUNK` images), sends them to worker
processes, each holding its own copy of the model on one thread, and puts the results back
in order: the vectors are those of one process encoding the same items (equal within float
rounding; the tests check 1e-5). Each worker loads its model once, on its first chunk (a
few seconds), so small jobs stay in the calling process.

Three models run this way, each named by a *recipe* (a tuple the workers can pickle):

- ``("text", spec, device, batch_size, dtype, runtime)``: the sentence-transformers model;
- ``("multilingual", spec, batch_size)``: the packaged multilingual model;
- ``("image", spec, weights, device, max_bytes, max_pixels)``: the CNN. Its chunks carry
  each image file's name and bytes, not decoded pictures: the workers decode them (with
  the same limits as the calling process) as well as encode them, and a worker on another
  machine needs no access to the catalog's files. The calling process reads at most
  :data:`IMAGE_IN_FLIGHT` chunks of bytes per worker (and :data:`MAX_AHEAD` chunks in all)
  ahead of the results, so memory stays bounded however large the catalog.

The workers are local processes (:class:`LocalWorkers`, ``concurrent.futures`` with
``spawn``) or the processes of a Dask cluster of several machines
(:class:`~retrieval.encoders.cluster.DaskWorkers`). Encoders built this way implement the
:class:`~retrieval.encoders.base.Encoder` protocol, so the build code takes them unchanged.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from ..images import load_image, read_image_file
from .base import l2_normalize
from .files import CHUNK as IMAGE_CHUNK
from .files import encode_image_files

__all__ = [
    "CHUNK",
    "IMAGE_CHUNK",
    "MIN_PARALLEL",
    "LocalWorkers",
    "PooledEncoder",
    "PooledImageEncoder",
    "Workers",
    "encode_chunk_with",
    "image_recipe",
    "recipe_id",
    "text_recipe",
]

log = logging.getLogger(__name__)

CHUNK = 256  # texts per task: SentenceTransformerEncoder's own chunk for large inputs
MIN_PARALLEL = 4 * CHUNK  # fewer texts are encoded in the calling process
IN_FLIGHT = 8  # chunks per worker sent ahead of the one being collected
IMAGE_IN_FLIGHT = 2  # image chunks (their files' bytes) per worker sent ahead
MAX_AHEAD = 64  # chunks sent ahead at most, however many workers a cluster has

Recipe = tuple[Any, ...]

_models: dict[Recipe, Any] = {}  # this worker process's encoders, by recipe
_load_lock = threading.Lock()


def text_recipe(spec: str, device: str, batch_size: int, dtype: str, runtime: str) -> Recipe:
    return ("text", spec, device, batch_size, dtype, runtime)


def image_recipe(
    spec: str, weights: Path | None, device: str, max_bytes: int, max_pixels: int
) -> Recipe:
    return ("image", spec, str(weights) if weights else None, device, max_bytes, max_pixels)


def _load(recipe: Recipe) -> Any:
    """The encoder a recipe names, on one thread of this worker process."""
    import torch

    torch.set_num_threads(1)  # one core per worker: the processes are the parallelism
    kind, spec, *rest = recipe
    if kind == "text":
        from .text import SentenceTransformerEncoder

        device, batch_size, dtype, runtime = rest
        return SentenceTransformerEncoder(
            spec, device=device, batch_size=batch_size, threads=1, dtype=dtype, runtime=runtime
        )
    if kind == "multilingual":
        from .multilingual import MultilingualEncoder

        (batch_size,) = rest
        return MultilingualEncoder(spec, threads=1, batch_size=batch_size)
    if kind == "image":
        from .image import CNNImageEncoder

        weights, device = rest[0], rest[1]
        return CNNImageEncoder(spec, Path(weights) if weights else None, device=device)
    raise ValueError(f"unknown encoder recipe {kind!r}")


def recipe_id(recipe: Recipe) -> str:
    """The id of the encoder a recipe names, as this machine resolves it (from its files
    and package versions; the model is not loaded)."""
    return str(_load(tuple(recipe)).id)


def encode_chunk_with(items: list[Any], recipe: Recipe) -> np.ndarray:
    """One chunk in a worker process, which loads each recipe's model on its first chunk (a
    Dask worker has no initializer) and keeps it for the next jobs. Image chunks are (name,
    bytes) pairs, decoded here with the recipe's limits (an error names the file)."""
    recipe = tuple(recipe)
    with _load_lock:  # a worker with several threads loads a model once
        model = _models.get(recipe)
        if model is None:
            model = _models[recipe] = _load(recipe)
    if recipe[0] == "image":
        max_bytes, max_pixels = recipe[4], recipe[5]
        items = [
            load_image(data, max_bytes=max_bytes, max_pixels=max_pixels, name=name)
            for name, data in items
        ]
    out: np.ndarray = model.encode(items)
    return out


class Future(Protocol):
    def result(self, timeout: float | None = None) -> Any: ...


Submit = Callable[[list[Any]], Future]


class Workers(Protocol):
    """Where the chunks run: ``count`` processes, opened for one job; ``spreads``: whether
    a large job gains from them (not with a single local process)."""

    count: int

    @property
    def spreads(self) -> bool: ...

    def describe(self) -> str:
        """Where the chunks run, for the log."""

    def open(self, recipe: Recipe, expect: str | None = None) -> Any:
        """A context manager giving (submit a chunk, number of workers, its result);
        ``expect``: the encoder id the workers must resolve the recipe to."""


class LocalWorkers:
    """``count`` worker processes on this machine, started for one job (``spawn``: no forked
    copy of a loaded torch)."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"workers must be at least 1, not {count}")
        self.count = int(count)

    @property
    def spreads(self) -> bool:
        return self.count >= 2

    @contextmanager
    def open(
        self, recipe: Recipe, expect: str | None = None
    ) -> Iterator[tuple[Submit, int, Callable[[Future], np.ndarray]]]:
        """(``expect`` is not checked: the processes run this machine's installation.)"""
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(self.count, mp_context=ctx) as pool:

            def submit(chunk: list[Any]) -> Future:
                return pool.submit(encode_chunk_with, chunk, recipe)

            try:
                yield submit, self.count, lambda future: future.result()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # the queued chunks are moot
                raise

    def describe(self) -> str:
        return f"{self.count} processes"


class PooledEncoder:
    """An encoder whose large jobs (``min_parallel`` items or more) run as chunks of
    ``chunk`` items on ``workers``; smaller ones run on ``inner``, the same model in this
    process, which also gives the id and dimension."""

    def __init__(
        self,
        inner: Any,
        recipe: Recipe,
        workers: Workers,
        *,
        chunk: int = CHUNK,
        min_parallel: int = MIN_PARALLEL,
        in_flight: int = IN_FLIGHT,
    ) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, not {chunk}")
        self.in_flight = max(1, int(in_flight))  # chunks per worker sent ahead
        self.inner = inner
        self.recipe = tuple(recipe)
        self.pool = workers
        self.chunk = int(chunk)
        self.min_parallel = int(min_parallel)

    @property
    def workers(self) -> int:
        return int(self.pool.count)

    @property
    def id(self) -> str:
        return str(self.inner.id)

    @property
    def dim(self) -> int:
        return int(self.inner.dim)

    @property
    def modality(self) -> str:
        return str(getattr(self.inner, "modality", "text"))

    def encode(
        self, items: Sequence[Any], *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        items = list(items)
        if not self.pool.spreads or len(items) < self.min_parallel:
            out: np.ndarray = self.inner.encode(items, batch_size=batch_size, progress=progress)
            return out
        step = self.chunk
        chunks = (items[i : i + step] for i in range(0, len(items), step))
        return self._run(chunks, len(items), progress, f"encoding {self.modality}s")

    def _run(
        self, chunks: Iterable[list[Any]], total: int, progress: bool, desc: str
    ) -> np.ndarray:
        """The chunks' vectors in order, at most ``in_flight`` chunks per worker (and
        :data:`MAX_AHEAD` in all) ahead of the one being collected (``chunks`` is read
        lazily: it may read files)."""
        parts: list[np.ndarray] = []
        with self.pool.open(self.recipe, expect=self.id) as (submit, n_workers, result):
            log.info("encoding %d %ss on %s", total, self.modality, self.pool.describe())
            ahead = min(MAX_AHEAD, self.in_flight * max(1, n_workers))
            pending: list[Future] = []
            with tqdm(total=total, desc=desc, unit="item", disable=not progress) as bar:
                for part in chunks:
                    pending.append(submit(part))
                    if len(pending) >= ahead:
                        parts.append(result(pending.pop(0)))
                        bar.update(len(parts[-1]))
                for future in pending:
                    parts.append(result(future))
                    bar.update(len(parts[-1]))
        if not parts:
            return np.zeros((0, self.dim), np.float32)
        return l2_normalize(np.concatenate(parts))


class PooledImageEncoder(PooledEncoder):
    """The CNN on workers for a build's image files (:meth:`encode_files`); decoded pictures
    (:meth:`encode`) stay in this process."""

    def __init__(
        self,
        inner: Any,
        recipe: Recipe,
        workers: Workers,
        *,
        chunk: int = IMAGE_CHUNK,
        min_parallel: int = 4 * IMAGE_CHUNK,
    ) -> None:
        if recipe[0] != "image":
            raise ValueError("PooledImageEncoder needs an image recipe")
        super().__init__(
            inner,
            recipe,
            workers,
            chunk=chunk,
            min_parallel=min_parallel,
            in_flight=IMAGE_IN_FLIGHT,
        )

    def encode(
        self, items: Sequence[Any], *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        out: np.ndarray = self.inner.encode(items, batch_size=batch_size, progress=progress)
        return out

    def encode_files(self, paths: Sequence[Path | str], *, progress: bool = False) -> np.ndarray:
        """The vectors of these image files, in order. Large jobs are decoded and encoded
        on the workers, the files read here a few chunks ahead of the results; smaller ones
        in this process, a chunk at a time."""
        paths = list(paths)
        if not self.pool.spreads or len(paths) < self.min_parallel:
            return encode_image_files(
                self.inner,
                paths,
                max_bytes=self.recipe[4],
                max_pixels=self.recipe[5],
                progress=progress,
            )
        step = self.chunk
        max_bytes = self.recipe[4]
        chunks = (
            [(str(p), read_image_file(p, max_bytes)) for p in paths[i : i + step]]
            for i in range(0, len(paths), step)
        )
        return self._run(chunks, len(paths), progress, "encoding images")
