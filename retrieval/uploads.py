"""Shopper photos sent from the chat window, kept on disk so the bot and agents can see them.

A photo is checked and decoded once (size, format, pixel count, decoding memory) before it
is stored; the small decoded picture is kept in memory for a few minutes, so the bot's
photo action that follows does not decode the file again. The file is written to a
temporary name and renamed into place, so a crash never leaves half a photo under a valid
id. Ids are random (128 bits) and are the only way to name a photo: a message that refers
to an id which is malformed or unknown gets :class:`NotFound`, never a path lookup.

Storage is bounded two ways: photos older than the retention period are deleted by
:meth:`UploadStore.purge` (the service runs it at start and then periodically), and the
photos together may not take more than the quota; a photo that does not fit even after
a purge is refused with :class:`Unavailable` (HTTP 503), saying so.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from .errors import NotFound, Unavailable
from .images import load_image

__all__ = ["UploadStore"]

log = logging.getLogger(__name__)

_ID = re.compile(r"[0-9a-f]{32}")
_TMP_GRACE_S = 3600.0  # a temporary file this old belongs to a write that never finished


class UploadStore:
    """Photos in ``folder``, one file per photo, named by its random id.

    ``quota_bytes`` bounds the photos' total size (None: unbounded); ``retention_s`` is how
    long a photo is kept (None or 0: forever)."""

    def __init__(
        self,
        folder: Path,
        *,
        max_bytes: int,
        max_pixels: int,
        quota_bytes: int | None = None,
        retention_s: float | None = None,
        cache_size: int = 8,
        cache_ttl_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ):
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.quota_bytes = quota_bytes
        self.retention_s = retention_s or None
        self._cache_size = cache_size
        self._cache_ttl_s = cache_ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._used: int | None = None  # bytes on disk, counted on first use
        self._cache: OrderedDict[str, tuple[float, Image.Image]] = OrderedDict()

    # ---- storing -----------------------------------------------------------------------
    def save(self, data: bytes) -> str:
        """Validate and store a photo; returns its id. Raises ImageError for anything that
        is not a usable photo, Unavailable when the storage quota is reached."""
        image = load_image(data, max_bytes=self.max_bytes, max_pixels=self.max_pixels)
        self._reserve(len(data))
        photo_id = secrets.token_hex(16)
        tmp = self.folder / f".{photo_id}.tmp"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.folder / photo_id)
        except BaseException:
            tmp.unlink(missing_ok=True)
            with self._lock:
                self._used = (self._used or 0) - len(data)
            raise
        self._remember(photo_id, image)
        return photo_id

    def _reserve(self, size: int) -> None:
        if self.quota_bytes is None:
            return
        with self._lock:
            used = self._usage_locked()
            if used + size > self.quota_bytes:
                self._purge_locked(self._clock())
                used = self._usage_locked()
            if used + size > self.quota_bytes:
                log.error(
                    "photo storage %s is full (%d of %d bytes): a photo was refused",
                    self.folder,
                    used,
                    self.quota_bytes,
                )
                raise Unavailable(
                    "photo storage is full right now, so the photo was not kept; please try "
                    "again later or describe the product in words"
                )
            self._used = used + size

    def usage(self) -> int:
        """Bytes the stored photos take."""
        with self._lock:
            return self._usage_locked()

    def _usage_locked(self) -> int:
        if self._used is None:
            total = 0
            for p in self._files():
                try:
                    total += p.stat().st_size
                except OSError:
                    pass
            self._used = total
        return self._used

    def _files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return [p for p in self.folder.iterdir() if _ID.fullmatch(p.name) or p.suffix == ".tmp"]

    # ---- retention ---------------------------------------------------------------------
    def purge(self) -> tuple[int, int]:
        """Delete photos older than the retention period (and abandoned temporary files);
        returns (files deleted, bytes freed)."""
        with self._lock:
            return self._purge_locked(self._clock())

    def _purge_locked(self, now: float) -> tuple[int, int]:
        removed = freed = 0
        for p in self._files():
            try:
                st = p.stat()
            except OSError:
                continue
            age = now - st.st_mtime
            expired = (
                age > _TMP_GRACE_S
                if p.suffix == ".tmp"
                else self.retention_s is not None and age > self.retention_s
            )
            if not expired:
                continue
            try:
                p.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot delete the expired photo %s: %s", p, exc)
                continue
            removed += 1
            freed += st.st_size
            self._cache.pop(p.name, None)
        if self._used is not None:
            self._used = max(0, self._used - freed)
        if removed:
            log.info(
                "deleted %d expired photos (%.1f MB) from %s", removed, freed / 1e6, self.folder
            )
        return removed, freed

    # ---- reading -----------------------------------------------------------------------
    def path(self, photo_id: object) -> Path:
        if not isinstance(photo_id, str) or not _ID.fullmatch(photo_id):
            raise NotFound("no such photo: photo ids are 32 hexadecimal characters")
        path = self.folder / photo_id
        if not path.is_file():
            raise NotFound(f"no photo with id '{photo_id}'")
        return path

    def load(self, photo_id: object) -> Image.Image:
        """The photo, decoded (from memory when it was stored moments ago)."""
        path = self.path(photo_id)
        with self._lock:
            cached = self._cache.get(str(photo_id))
            if cached is not None and self._clock() - cached[0] <= self._cache_ttl_s:
                return cached[1].copy()
        return load_image(path, max_bytes=self.max_bytes, max_pixels=self.max_pixels)

    def _remember(self, photo_id: str, image: Image.Image) -> None:
        if self._cache_size <= 0:
            return
        with self._lock:
            self._cache[photo_id] = (self._clock(), image)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
