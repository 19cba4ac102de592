"""Encoding a build's image files a chunk at a time: decoded pictures are held for one
chunk only, so a catalog of any size encodes in bounded memory. An
:class:`~retrieval.errors.ImageError` raised here (or in a worker, :mod:`.parallel`) names
the file in its message and carries it as ``path``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..images import load_image
from .base import l2_normalize

__all__ = ["encode_image_files"]

CHUNK = 32  # images decoded at once: the image encoder's own batch


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
                load_image(p, max_bytes=max_bytes, max_pixels=max_pixels)
                for p in paths[start : start + chunk]
            ]
            parts.append(encoder.encode(pictures))
            bar.update(len(pictures))
    if not parts:
        return np.zeros((0, encoder.dim), np.float32)
    return l2_normalize(np.concatenate(parts))
