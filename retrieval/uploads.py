"""Shopper photos sent from the chat window, kept on disk so the bot and agents can see them.

A photo is checked (size, decodable image, pixel count) before it is stored; it is written
to a temporary file and renamed into place, so a crash never leaves half a photo under a
valid id. Ids are random (128 bits) and are the only way to name a photo: a message that
refers to an id which is malformed or unknown gets :class:`NotFound`, never a path lookup.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from PIL import Image

from .errors import NotFound
from .images import load_image

__all__ = ["UploadStore"]

_ID = re.compile(r"^[0-9a-f]{32}$")


class UploadStore:
    """Photos in ``folder``, one file per photo, named by its random id."""

    def __init__(self, folder: Path, *, max_bytes: int, max_pixels: int):
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels

    def save(self, data: bytes) -> str:
        """Validate and store a photo; returns its id. Raises ImageError for anything else."""
        load_image(data, max_bytes=self.max_bytes, max_pixels=self.max_pixels)
        self.folder.mkdir(parents=True, exist_ok=True)
        photo_id = secrets.token_hex(16)
        tmp = self.folder / f".{photo_id}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.folder / photo_id)
        return photo_id

    def path(self, photo_id: object) -> Path:
        if not isinstance(photo_id, str) or not _ID.match(photo_id):
            raise NotFound("no such photo: photo ids are 32 hexadecimal characters")
        path = self.folder / photo_id
        if not path.is_file():
            raise NotFound(f"no photo with id '{photo_id}'")
        return path

    def load(self, photo_id: object) -> Image.Image:
        return load_image(self.path(photo_id), max_bytes=self.max_bytes, max_pixels=self.max_pixels)
