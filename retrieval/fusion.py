"""Multimodal fusion of product vectors: V = [A·v_img ; B·v_text], and the scores it implies.

Pure functions over numpy arrays; ``docs/fusion.md`` derives the math. In short, with
unit vectors per modality and weights normalised so that a² + b² = 1:

* a product with both modalities has a unit fused vector;
* the inner product of two such vectors is ``a²·cos_img + b²·cos_text``;
* when a modality is missing on either side, its part is zero, and the reported fused score
  is the weighted mean over the modalities both sides have:
  ``Σ_m w_m·cos_m / Σ_m w_m`` with ``w_img = a²``, ``w_text = b²``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from .encoders.base import l2_normalize

__all__ = ["Fusion", "fuse", "fused_scores", "modality_scores", "normalized_weights"]


def normalized_weights(image_weight: float, text_weight: float) -> tuple[float, float]:
    """Scale (A, B) so that A² + B² = 1, keeping their ratio."""
    norm = float(np.hypot(image_weight, text_weight))
    if norm == 0.0:
        raise ValueError("image and text weights cannot both be 0")
    return image_weight / norm, text_weight / norm


@dataclass(frozen=True)
class Fusion:
    """Fusion parameters: weights, per-modality dims, and an optional image projection (k x image_dim)."""

    image_dim: int
    text_dim: int
    image_weight: float = 0.5
    text_weight: float = 0.5
    image_projection: np.ndarray | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        a, b = normalized_weights(self.image_weight, self.text_weight)
        object.__setattr__(self, "image_weight", a)
        object.__setattr__(self, "text_weight", b)
        if self.image_projection is not None:
            p = np.asarray(self.image_projection, dtype=np.float32)
            if p.ndim != 2 or p.shape[1] != self.image_dim:
                raise ValueError(
                    f"image projection must have shape (k, {self.image_dim}), got {p.shape}"
                )
            object.__setattr__(self, "image_projection", p)

    @property
    def image_part_dim(self) -> int:
        return (
            self.image_dim if self.image_projection is None else int(self.image_projection.shape[0])
        )

    @property
    def dim(self) -> int:
        return self.image_part_dim + self.text_dim

    @property
    def weights(self) -> tuple[float, float]:
        """Per-modality score weights (a², b²), summing to 1."""
        return self.image_weight**2, self.text_weight**2

    def fingerprint(self) -> str:
        """Identifies the fusion in index metadata: a change means the index must be rebuilt."""
        h = hashlib.sha256(
            f"{self.image_dim}:{self.text_dim}:{self.image_weight:.6f}:{self.text_weight:.6f}".encode()
        )
        if self.image_projection is not None:
            h.update(self.image_projection.tobytes())
        return h.hexdigest()[:12]


def fuse(
    image: np.ndarray | None, text: np.ndarray | None, fusion: Fusion, n: int | None = None
) -> np.ndarray:
    """Fuse per-modality vectors (rows; an all-zero row or ``None`` = modality missing).

    Returns float32 of shape (n, fusion.dim): ``[a·P(v_img)/|P(v_img)| ; b·v_text/|v_text|]``.
    """
    if n is None:
        n = len(image) if image is not None else len(text) if text is not None else 0
    out = np.zeros((n, fusion.dim), dtype=np.float32)
    k = fusion.image_part_dim
    if image is not None:
        img = np.asarray(image, dtype=np.float32).reshape(n, fusion.image_dim)
        if fusion.image_projection is not None:
            img = img @ fusion.image_projection.T
        out[:, :k] = fusion.image_weight * l2_normalize(img)
    if text is not None:
        txt = np.asarray(text, dtype=np.float32).reshape(n, fusion.text_dim)
        out[:, k:] = fusion.text_weight * l2_normalize(txt)
    return out


def modality_scores(
    query: np.ndarray, items: np.ndarray, fusion: Fusion
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity per modality between one fused query and fused item rows.

    Returns (image_cos, text_cos), each of shape (len(items),), NaN where the query or the
    item lacks that modality (or its weight is 0).
    """
    k = fusion.image_part_dim
    items = np.asarray(items, dtype=np.float32).reshape(-1, fusion.dim)
    result = []
    for sl, w in ((slice(0, k), fusion.image_weight), (slice(k, None), fusion.text_weight)):
        q, x = query[sl], items[:, sl]
        if w == 0.0 or not np.any(q):
            result.append(np.full(len(items), np.nan, dtype=np.float32))
            continue
        qn = float(np.linalg.norm(q))
        xn = np.linalg.norm(x, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = (x @ q) / (xn * qn)
        cos[xn == 0.0] = np.nan
        result.append(np.clip(cos, -1.0, 1.0).astype(np.float32))
    return result[0], result[1]


def fused_scores(image_cos: np.ndarray, text_cos: np.ndarray, fusion: Fusion) -> np.ndarray:
    """Weighted mean of the available per-modality cosines (NaN where none is available)."""
    wi, wt = fusion.weights
    has_i, has_t = ~np.isnan(image_cos), ~np.isnan(text_cos)
    num = np.where(has_i, wi * np.nan_to_num(image_cos), 0.0) + np.where(
        has_t, wt * np.nan_to_num(text_cos), 0.0
    )
    den = np.where(has_i, wi, 0.0) + np.where(has_t, wt, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan).astype(np.float32)
