"""HNSW recall of the shipped settings against exact search, on 20k embedding-like vectors."""

import numpy as np
import pytest

from retrieval.bench.data import embedding_like
from retrieval.index import IndexParams, VectorIndex


@pytest.mark.slow
def test_recall_at_10_of_the_shipped_settings_against_exact_search() -> None:
    """The defaults the product ships (M=24, ef_construction=200, ef=48) on 20k embedding-like
    vectors against a brute-force oracle: recall@10 >= 0.995.

    The 100k figure (0.994, target >= 0.99) is measured by `retrieval bench` and
    benchmarks/bench_core.py (docs/benchmarks.md); a 100k build takes minutes on 2 cores.
    Recall falls as the index grows, so the floor here is higher. Measured on these vectors
    (2026-12-03): the defaults reach 1.000 at 20k (two builds) and 0.9945 at 100k; ef=32,
    0.982 at 100k and under the target there, reaches 0.9935 at 20k and fails here too.
    """
    x, queries = embedding_like(20_000, 384, n_queries=200, seed=7)
    params = IndexParams()  # the defaults the product ships with
    idx = VectorIndex(384, params, capacity=len(x))
    idx.add([(str(i), "v") for i in range(len(x))], x)
    exact = np.argsort(-(queries @ x.T), axis=1)[:, :10]
    recall = np.mean(
        [
            len({int(h.item_id) for h in idx.search(q, 10)} & set(e.tolist())) / 10
            for q, e in zip(queries, exact, strict=True)
        ]
    )
    assert recall >= 0.995, recall
