"""Bulk encoding on a Dask cluster: a full build of a large catalog spread over the cores of
several machines.

:class:`DaskWorkers` runs the same fixed chunks as the local worker processes
(:mod:`.parallel`: texts, multilingual texts, image files sent as bytes) as tasks on a Dask
cluster (``encode_cluster``): the address of a running scheduler (``tcp://host:8786``; its
workers run ``dask worker tcp://host:8786 --nthreads 1`` on each machine, with this package
and the models installed), or ``local``, a cluster of ``max(2, encode_workers)`` processes
started on this machine for the job and stopped after it. Each worker process loads a model
once, on its first chunk, on one core; results come back in order and are streamed into the
version being built, so the vectors are those of one process encoding the same chunks.

An unreachable scheduler, or one with no worker, is a clear error naming it, and so is a
chunk that does not come back within ``CHUNK_TIMEOUT_S``; each job's tasks have names of
their own, so jobs sharing a scheduler never take each other's results. Small jobs (fewer
than 1,024 texts or 128 images) stay in the calling process. A worker loads the models
from its own installation: a model given as a file (``image_weights``, a fine-tuned text
model) must be at the same path on every worker's machine.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..errors import ConfigError
from .parallel import Recipe, encode_chunk_with, recipe_id

__all__ = ["DaskWorkers", "check_installed"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 20  # to reach a scheduler, and for it to have a worker
CHUNK_TIMEOUT_S = 600  # for one chunk's vectors (a worker's first chunk loads the model)


def check_installed() -> None:
    """Dask's ``distributed`` package is there, or a clear error saying how to get it."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ConfigError("encode_cluster needs Dask: pip install 'retrieval[cluster]'") from None


class DaskWorkers:
    """The worker processes of a Dask cluster (``address``: a scheduler, or ``local`` for
    ``count`` processes started on this machine for each job)."""

    def __init__(self, address: str, count: int = 2) -> None:
        if not address.strip():
            raise ValueError("the cluster address is empty")
        self.address = address.strip()
        self.count = max(1, int(count))

    @property
    def spreads(self) -> bool:
        return True  # however many machines the scheduler has

    def describe(self) -> str:
        return f"the cluster {self.address}"

    @contextmanager
    def _client(self) -> Iterator[Any]:
        check_installed()
        from distributed import Client, LocalCluster

        if self.address == "local":
            with (
                LocalCluster(
                    n_workers=self.count,
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

    def _check(self, client: Any, recipe: Recipe, expect: str | None) -> None:
        """Every worker resolves the recipe to the encoder ``expect`` names (the same model
        files and package versions as this process), or a clear error naming the worker:
        other vectors would be mixed into the version silently."""
        if expect is None:
            return
        try:
            found = client.run(recipe_id, recipe)
        except Exception as exc:  # noqa: BLE001 - a worker without the model, or a broken one
            raise ConfigError(
                f"a worker of the encoding cluster at {self.address} cannot use the model "
                f"{recipe[1]}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
            ) from None
        for worker, model in sorted(found.items()):
            if model != expect:
                raise ConfigError(
                    f"the encoding cluster's worker {worker} has the model {model}, not "
                    f"{expect}: install the same model (and files at the same paths) there"
                )

    @contextmanager
    def open(
        self, recipe: Recipe, expect: str | None = None
    ) -> Iterator[tuple[Callable[[list[Any]], Any], int, Callable[[Any], np.ndarray]]]:
        """``expect``: the encoder id every worker must resolve the recipe to (checked on
        the workers there are when the job starts)."""
        job = uuid.uuid4().hex  # task names of this job alone
        with self._client() as client:
            try:
                client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
            except TimeoutError:
                raise ConfigError(
                    f"the encoding cluster at {self.address} has no worker (setting "
                    f"encode_cluster): start 'dask worker {self.address} --nthreads 1'"
                ) from None
            self._check(client, recipe, expect)
            n_workers = max(1, len(client.scheduler_info().get("workers", {})))
            sent = iter(range(1 << 62))

            def submit(chunk: list[Any]) -> Any:
                return client.submit(
                    encode_chunk_with, chunk, recipe, key=f"encode-{job}-{next(sent)}"
                )

            yield submit, n_workers, self._result
