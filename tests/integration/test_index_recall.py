"""HNSW recall of the shipped settings against exact search, on 8k embedding-like vectors."""

from pathlib import Path

import numpy as np
import pytest

from retrieval.bench.data import embedding_like
from retrieval.index import IndexParams, VectorIndex

FLOOR = 0.998


@pytest.mark.slow
def test_recall_at_10_of_the_shipped_settings_against_exact_search(tmp_path: Path) -> None:
    """The defaults the product ships (M=24, ef_construction=200, ef=48) on 8k embedding-like
    vectors against a brute-force oracle, over 1000 queries: recall@10 >= 0.998; ef=32 on the
    same graph stays under that floor, so the floor tells the shipped ef from a weaker one.

    The 100k figure (0.994, target >= 0.99) is measured by `retrieval bench` and
    benchmarks/bench_core.py (docs/benchmarks.md); a 100k build takes minutes on 2 cores.
    Recall falls as the index grows, so the floor here is higher, and 1000 queries (10,000
    neighbours) resolve it to 0.0001. Measured on these vectors with seeds 1, 2, 3, 7 and 11
    (2026-12-03): the defaults reach 0.9985-0.9991 at 8k (0.9976 at 20k); the weaker settings
    fall under the floor at every seed: ef=40 0.9965-0.9976, ef=32 0.9927-0.9948, M=16
    0.9961-0.9972. (The former 20k x 200-query form cost four times the build and caught
    ef=32 only.)
    """
    x, queries = embedding_like(8_000, 384, n_queries=1_000, seed=7)
    params = IndexParams()  # the defaults the product ships with
    idx = VectorIndex(384, params, capacity=len(x))
    idx.add([(str(i), "v") for i in range(len(x))], x)
    exact = np.argpartition(-(queries @ x.T), 10, axis=1)[:, :10]  # the true 10, any order

    def recall(idx: VectorIndex) -> float:
        return float(
            np.mean(
                [
                    len({int(h.item_id) for h in idx.search(q, 10)} & set(e.tolist())) / 10
                    for q, e in zip(queries, exact, strict=True)
                ]
            )
        )

    shipped = recall(idx)
    assert shipped >= FLOOR, shipped
    idx.save(tmp_path / "index")  # the same graph, searched with a weaker ef
    weaker = recall(VectorIndex.load(tmp_path / "index", ef=32))
    assert weaker < FLOOR, (weaker, shipped)
