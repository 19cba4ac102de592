"""Bulk text encoding on a Dask cluster: a full build of a large catalog spread over the
cores of several machines.

:class:`ClusterTextEncoder` splits the texts into the same fixed chunks as the local worker
processes (:mod:`.parallel`) and sends each chunk as a task to a Dask cluster
(``encode_cluster``): the address of a running scheduler (``tcp://host:8786``; its workers
run ``dask worker tcp://host:8786 --nthreads 1`` on each machine, with this package and the
model installed), or ``local``, a cluster of ``max(2, encode_workers)`` processes started on
this machine for the job and stopped after it. Each worker process loads the model once, on its
first chunk, on one core; results come back in order and are streamed into the version being
built, so the vectors are those of one process encoding the same chunks.

An unreachable scheduler, or one with no worker, is a clear error naming it, and so is a
chunk that does not come back within ``CHUNK_TIMEOUT_S``; each job's tasks have names of
their own, so jobs sharing a scheduler never take each other's results. Small jobs (fewer
than ``MIN_PARALLEL`` texts) stay in the calling process.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import ConfigError
from .base import l2_normalize
from .parallel import ProcessPoolTextEncoder, encode_chunk_with

__all__ = ["ClusterTextEncoder", "check_installed"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 20  # to reach a scheduler, and for it to have a worker
CHUNK_TIMEOUT_S = 600  # for one chunk's vectors (a worker's first chunk loads the model)
IN_FLIGHT = 8  # chunks per worker submitted ahead of the ones being collected


def check_installed() -> None:
    """Dask's ``distributed`` package is there, or a clear error saying how to get it."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ConfigError("encode_cluster needs Dask: pip install 'retrieval[cluster]'") from None


class ClusterTextEncoder(ProcessPoolTextEncoder):
    """A sentence-transformers text encoder whose large jobs run as tasks on a Dask
    cluster (``address``: a scheduler, or ``local`` for ``workers`` local processes)."""

    def __init__(
        self, inner: Any, spec: str, address: str, *, workers: int = 2, **options: Any
    ) -> None:
        """``options``: those of :class:`ProcessPoolTextEncoder` (device, batch size, dtype,
        runtime, chunk, min_parallel)."""
        if not address.strip():
            raise ValueError("the cluster address is empty")
        super().__init__(inner, spec, workers, **options)
        self.address = address.strip()

    @contextmanager
    def _client(self) -> Iterator[Any]:
        check_installed()
        from distributed import Client, LocalCluster

        if self.address == "local":
            with (
                LocalCluster(
                    n_workers=self.workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",
                    # its workers log a heartbeat error when the job's cluster stops under
                    # them; a chunk that fails reaches this process as its exception
                    silence_logs=logging.CRITICAL,
                ) as cluster,
                Client(cluster) as client,
            ):
                yield client
            return
        try:
            client = Client(self.address, timeout=CONNECT_TIMEOUT_S)
        except OSError as exc:  # distributed raises OSError (TimeoutError) when it cannot connect
            raise ConfigError(
                f"cannot reach the encoding cluster at {self.address} "
                f"(setting encode_cluster): {exc}"
            ) from None
        try:
            yield client
        finally:
            client.close()

    def _result(self, future: Any) -> np.ndarray:
        try:
            out: np.ndarray = future.result(timeout=CHUNK_TIMEOUT_S)
        except TimeoutError:
            raise ConfigError(
                f"the encoding cluster at {self.address} returned no vectors for a chunk in "
                f"{CHUNK_TIMEOUT_S} s"
            ) from None
        return out

    def encode(
        self, items: Sequence[str], *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        texts = list(items)
        if len(texts) < self.min_parallel:
            out: np.ndarray = self.inner.encode(texts, batch_size=batch_size, progress=progress)
            return out
        step = self.chunk
        chunks = [texts[i : i + step] for i in range(0, len(texts), step)]
        parts: list[np.ndarray] = []
        job = uuid.uuid4().hex  # task names of this job alone
        with self._client() as client:
            try:
                client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
            except TimeoutError:
                raise ConfigError(
                    f"the encoding cluster at {self.address} has no worker (setting "
                    f"encode_cluster): start 'dask worker {self.address} --nthreads 1'"
                ) from None
            n_workers = max(1, len(client.scheduler_info().get("workers", {})))
            log.info(
                "encoding %d texts on the cluster %s (%d workers)",
                len(texts),
                self.address,
                n_workers,
            )
            ahead = IN_FLIGHT * n_workers  # bounded: the results wait here in order
            pending: list[Any] = []
            with tqdm(
                total=len(texts), desc="encoding texts", unit="item", disable=not progress
            ) as bar:
                for n, part in enumerate(chunks):
                    pending.append(
                        client.submit(
                            encode_chunk_with, part, self._init_args, key=f"encode-{job}-{n}"
                        )
                    )
                    if len(pending) >= ahead:
                        parts.append(self._result(pending.pop(0)))
                        bar.update(len(parts[-1]))
                for future in pending:
                    parts.append(self._result(future))
                    bar.update(len(parts[-1]))
        return l2_normalize(np.concatenate(parts))
