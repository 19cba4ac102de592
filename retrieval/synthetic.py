"""Synthetic unit vectors with the structure of real embeddings, for tests and benchmarks.

Sentence and image embeddings lie near a low-dimensional manifold: nearest neighbours are
meaningfully nearer than the rest. Independent Gaussian vectors in 384 dimensions have no
such structure (every point is about equally far from every other), so no approximate index
finds their "neighbours" well and they measure nothing a shop would see. These vectors are
a random linear image of a ``latent``-dimensional Gaussian plus isotropic noise.
"""

from __future__ import annotations

import numpy as np

from .encoders.base import l2_normalize

__all__ = ["embedding_like"]


def embedding_like(
    n: int, dim: int, *, n_queries: int = 0, latent: int = 16, noise: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Return (vectors (n, dim), queries (n_queries, dim)), unit length, float32; queries are fresh draws."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((latent, dim)).astype(np.float32)
    scale = noise * np.sqrt(latent)

    def draw(m: int) -> np.ndarray:
        z = rng.standard_normal((m, latent)).astype(np.float32)
        return l2_normalize(z @ basis + scale * rng.standard_normal((m, dim)).astype(np.float32))

    return draw(n), draw(n_queries)
