"""CNN vectors of image files, cached by file content: the slow part of image adaptation.

Encoding a few thousand photos takes minutes on a small CPU; the vectors depend only on the
file bytes and the encoder, so a rerun of ``fit_image_projection`` (another seed, another
k) reuses them. Files that cannot be decoded are skipped and returned, not raised.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from ..errors import ImageError
from ..images import check_image, load_image

if TYPE_CHECKING:
    from ..encoders.base import Encoder

__all__ = ["FeatureCache", "encode_image_files", "file_key"]

log = logging.getLogger(__name__)


class FeatureCache:
    """CNN vectors of image files keyed by (encoder id, file content), in one .npz per encoder.

    Encoding a few thousand photos takes minutes on a small CPU; the vectors depend only on
    the file bytes and the encoder, so a rerun (another seed, another k) reuses them.
    """

    def __init__(self, folder: Path | None, encoder_id: str):
        self.path = None
        if folder is not None:
            slug = hashlib.sha256(encoder_id.encode()).hexdigest()[:16]
            self.path = Path(folder) / f"{slug}.npz"
        self._vectors: dict[str, np.ndarray] = {}
        if self.path is not None and self.path.is_file():
            try:
                with np.load(self.path) as data:
                    self._vectors = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))
            except (OSError, ValueError, KeyError):
                log.warning("ignoring unreadable image feature cache %s", self.path)

    def get(self, key: str) -> np.ndarray | None:
        return self._vectors.get(key)

    def put(self, key: str, vector: np.ndarray) -> None:
        self._vectors[key] = vector

    def save(self) -> None:
        if self.path is None or not self._vectors:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(self._vectors)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(
                    fh, keys=np.array(keys), vectors=np.stack([self._vectors[k] for k in keys])
                )
            os.replace(tmp, self.path)
        except OSError as exc:  # a cache that cannot be written only costs time
            Path(tmp).unlink(missing_ok=True)
            log.warning("cannot write image feature cache %s: %s", self.path, exc)


def file_key(path: Path) -> str | None:
    """The cache key of an image file (a hash of its bytes); None when it cannot be read."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def encode_image_files(
    files: Sequence[Path],
    encoder: Encoder,
    *,
    max_bytes: int,
    max_pixels: int,
    cache: FeatureCache,
    progress: bool = False,
    batch_size: int = 32,
) -> tuple[np.ndarray, list[Path]]:
    """Vectors of the files that decode, and the list of those that do not (skipped)."""
    out: list[np.ndarray | None] = [None] * len(files)
    bad: list[Path] = []
    todo: list[tuple[int, str]] = []
    for i, f in enumerate(files):
        try:
            key = hashlib.sha256(Path(f).read_bytes()).hexdigest()
        except OSError as exc:  # gone or unreadable since it was listed: skipped like a bad one
            log.warning("skipping %s: %s", f, exc.strerror or exc)
            bad.append(Path(f))
            continue
        hit = cache.get(key)
        if hit is None:
            todo.append((i, key))
            continue
        try:  # the limits may be lower than when it was cached: the same file, the same verdict
            check_image(f, max_bytes=max_bytes, max_pixels=max_pixels)
            out[i] = hit
        except ImageError as exc:
            log.warning("skipping %s", exc)
            bad.append(Path(f))
    bar = tqdm(
        total=len(todo), desc="encoding photos", unit="image", disable=not progress or not todo
    )
    for start in range(0, len(todo), batch_size):
        chunk, images = [], []
        for i, key in todo[start : start + batch_size]:
            try:
                images.append(load_image(files[i], max_bytes=max_bytes, max_pixels=max_pixels))
                chunk.append((i, key))
            except ImageError as exc:
                log.warning("skipping %s", exc)
                bad.append(Path(files[i]))
        if images:
            vectors = encoder.encode(images)
            for (i, key), v in zip(chunk, vectors, strict=True):
                out[i] = v
                cache.put(key, v)
        bar.update(len(todo[start : start + batch_size]))
    bar.close()
    if todo:
        cache.save()
    good = [v for v in out if v is not None]
    dim = encoder.dim
    return (np.stack(good).astype(np.float32) if good else np.zeros((0, dim), np.float32)), bad
