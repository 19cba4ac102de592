"""Deterministic stand-in encoders for unit tests of pure logic (no model weights)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from retrieval.encoders.base import l2_normalize


class HashingTextEncoder:
    """Bag-of-words hashed into ``dim`` buckets: texts sharing words have positive cosine."""

    modality = "text"

    def __init__(self, dim: int = 64, id: str = "fake-text"):
        self._dim = dim
        self._id = id
        self.calls = 0
        self.items_encoded = 0

    @property
    def id(self) -> str:
        return self._id

    @property
    def dim(self) -> int:
        return self._dim

    def encode(
        self, items: Sequence[str], *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        self.calls += 1
        self.items_encoded += len(items)
        out = np.zeros((len(items), self._dim), dtype=np.float32)
        for i, text in enumerate(items):
            for word in re.findall(r"\w+", text.lower()):
                h = int(hashlib.md5(word.encode()).hexdigest(), 16)
                out[i, h % self._dim] += 1.0 if (h >> 64) & 1 else -1.0
        return l2_normalize(out)


class ColourImageEncoder:
    """Mean colour histogram of an image: photos of the same colour are similar."""

    modality = "image"

    def __init__(self, id: str = "fake-image"):
        self._id = id

    @property
    def id(self) -> str:
        return self._id

    @property
    def dim(self) -> int:
        return 12

    def encode(self, items, *, batch_size=None, progress=False) -> np.ndarray:  # noqa: ANN001
        out = np.zeros((len(items), 12), dtype=np.float32)
        for i, img in enumerate(items):
            a = np.asarray(img.convert("RGB").resize((16, 16)), dtype=np.float32) / 255.0
            for c in range(3):
                hist, _ = np.histogram(a[..., c], bins=4, range=(0, 1))
                out[i, c * 4 : c * 4 + 4] = hist
        return l2_normalize(out)
