"""Encoders behind one protocol, built once per process from settings."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .base import Encoder, l2_normalize
from .image import CNNImageEncoder
from .multilingual import MultilingualEncoder, has_cjk
from .parallel import (
    LocalWorkers,
    PooledEncoder,
    PooledImageEncoder,
    Workers,
    image_recipe,
    text_recipe,
)
from .text import SentenceTransformerEncoder

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = [
    "CNNImageEncoder",
    "Encoder",
    "MultilingualEncoder",
    "SentenceTransformerEncoder",
    "bulk_image_encoder",
    "bulk_multilingual_encoder",
    "bulk_text_encoder",
    "bulk_workers",
    "has_cjk",
    "image_encoder",
    "l2_normalize",
    "multilingual_encoder",
    "text_encoder",
]

_cache: dict[tuple, Encoder] = {}
_lock = threading.Lock()


def text_encoder(settings: Settings) -> SentenceTransformerEncoder:
    """The process-wide text encoder for these settings (created once, model loaded lazily)."""
    key = (
        "text",
        settings.text_model,
        settings.device,
        settings.encode_batch_size,
        settings.torch_threads,
        settings.encoder_dtype,
        settings.text_runtime,
    )
    with _lock:
        if key not in _cache:
            _cache[key] = SentenceTransformerEncoder(
                settings.text_model,
                device=settings.device,
                batch_size=settings.encode_batch_size,
                threads=settings.torch_threads,
                dtype=settings.encoder_dtype,
                runtime=settings.text_runtime,
            )
        return _cache[key]  # type: ignore[return-value]


def bulk_workers(settings: Settings) -> Workers | None:
    """Where a build's large encoding jobs run: a Dask cluster when ``encode_cluster`` is
    set, ``encode_workers`` local processes when that is above 1, else None (this process)."""
    if settings.encode_cluster:
        from .cluster import DaskWorkers, check_installed

        check_installed()  # before a job starts, not at its first large encode
        return DaskWorkers(settings.encode_cluster, max(2, settings.encode_workers))
    if settings.encode_workers < 2:
        return None
    return LocalWorkers(settings.encode_workers)


def bulk_text_encoder(settings: Settings, text: Encoder | None = None) -> Encoder:
    """The text encoder for a build that may encode many texts: the settings' own encoder
    (or ``text``, used as it is), its large jobs spread over :func:`bulk_workers`."""
    own = text_encoder(settings)
    if text is not None and text is not own:
        return text
    workers = bulk_workers(settings)
    if workers is None:
        return own
    recipe = text_recipe(
        settings.text_model,
        settings.device,
        settings.encode_batch_size,
        settings.encoder_dtype,
        settings.text_runtime,
    )
    return PooledEncoder(own, recipe, workers)


def bulk_image_encoder(settings: Settings, image: Encoder | None = None) -> Encoder:
    """The image encoder for a build: the settings' own CNN (or ``image``, used as it is),
    its image files decoded and encoded on :func:`bulk_workers` when the job is large."""
    own = image_encoder(settings)
    if image is not None and image is not own:
        return image
    workers = bulk_workers(settings)
    if workers is None:
        return own
    recipe = image_recipe(
        settings.image_model,
        settings.image_weights,
        settings.device,
        settings.max_image_bytes,
        settings.max_image_pixels,
    )
    return PooledImageEncoder(own, recipe, workers)


def bulk_multilingual_encoder(settings: Settings) -> Encoder | None:
    """The multilingual encoder for a build (None when ``multilingual_model`` is off), its
    large jobs spread over :func:`bulk_workers`."""
    own = multilingual_encoder(settings)
    workers = bulk_workers(settings)
    if own is None or workers is None:
        return own
    recipe = ("multilingual", settings.multilingual_model, settings.encode_batch_size)
    return PooledEncoder(own, recipe, workers)


def image_encoder(settings: Settings) -> CNNImageEncoder:
    """The process-wide image encoder for these settings (created once, model loaded lazily)."""
    key = ("image", settings.image_model, str(settings.image_weights), settings.device)
    with _lock:
        if key not in _cache:
            _cache[key] = CNNImageEncoder(
                settings.image_model, settings.image_weights, device=settings.device, batch_size=32
            )
        return _cache[key]  # type: ignore[return-value]


def multilingual_encoder(settings: Settings) -> MultilingualEncoder | None:
    """The process-wide multilingual text encoder, or None when ``multilingual_model`` is off."""
    spec = settings.multilingual_model
    if not spec:
        return None
    key = ("multilingual", spec, settings.torch_threads)
    with _lock:
        if key not in _cache:
            _cache[key] = MultilingualEncoder(
                spec, threads=settings.torch_threads or 1, batch_size=settings.encode_batch_size
            )
        return _cache[key]  # type: ignore[return-value]
