"""Encoding a build's image files a chunk at a time: decoded pictures are held for one
chunk only, so a catalog of any size encodes in bounded memory. An
:class:`~retrieval.errors.ImageError` raised here (or in a worker, :mod:`.parallel`) names
the file in its message and carries it as ``path``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..errors import ImageError
from ..images import load_image
from .base import l2_normalize

__all__ = ["decode", "encode_image_files", "read_file"]

CHUNK = 32  # images decoded at once: the image encoder's own batch


def read_file(path: Path | str, max_bytes: int) -> bytes:
    """An image file's bytes, or an :class:`ImageError` naming it (missing, unreadable, or
    over ``max_bytes``)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        error = ImageError(f"cannot read image {path}: {exc.strerror}")
        error.path = str(path)  # type: ignore[attr-defined]
        raise error from None
    if len(data) > max_bytes:
        error = ImageError(f"{path} is over the limit of {max_bytes / 1e6:.1f} MB")
        error.path = str(path)  # type: ignore[attr-defined]
        raise error
    return data


def decode(source: bytes | Path | str, name: str, max_bytes: int, max_pixels: int) -> Image.Image:
    """:func:`~retrieval.images.load_image` whose error carries the file's ``name`` as
    ``path`` (it survives the trip back from a worker process)."""
    try:
        return load_image(source, max_bytes=max_bytes, max_pixels=max_pixels, name=name)
    except ImageError as exc:
        exc.path = name  # type: ignore[attr-defined]
        raise


def encode_image_files(
    encoder: Any,
    paths: Sequence[Path | str],
    *,
    max_bytes: int,
    max_pixels: int,
    progress: bool = False,
    chunk: int = CHUNK,
) -> np.ndarray:
    """The vectors of these image files, in order: each chunk of ``chunk`` files decoded
    (with the reading limits of :func:`~retrieval.images.load_image`, whose
    :class:`~retrieval.errors.ImageError` names the file), encoded and let go. An encoder
    with its own ``encode_files`` (workers: :mod:`.parallel`) is handed the whole list."""
    encode_files = getattr(encoder, "encode_files", None)
    if encode_files is not None:
        out: np.ndarray = encode_files(list(paths), progress=progress)
        return out
    parts = []
    with tqdm(total=len(paths), desc="encoding images", unit="item", disable=not progress) as bar:
        for start in range(0, len(paths), chunk):
            pictures = [
                decode(p, str(p), max_bytes, max_pixels) for p in paths[start : start + chunk]
            ]
            parts.append(encoder.encode(pictures))
            bar.update(len(pictures))
    if not parts:
        return np.zeros((0, encoder.dim), np.float32)
    return l2_normalize(np.concatenate(parts))
