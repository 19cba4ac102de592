"""`retrieval bench` end to end with the real models and a real served index (kept small)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import run_cli


@pytest.mark.slow
@pytest.mark.models
@pytest.mark.scaleout
def test_quick_run_measures_the_index_and_a_real_service(tmp_path: Path) -> None:
    """The real command end to end, kept small: the index part and a real served index.

    (The encoder part runs the same models the service loads; its logic is tested in
    unit/test_bench.py.)
    """
    out = run_cli(  # in this process: the command's own process is not what is tested here
        *["bench", "--quick", "--sizes", "2k", "--json"],
        *["--parts", "index,http", "--queries", "60", "--clients", "1,4", "--requests", "8"],
        *["--service-products", "300", "--service-faq", "20", "--out", str(tmp_path)],
        *["--vector-store", "hnswlib,pgvector"],  # pgvector: a local server for the run
        "--no-progress",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    (idx,) = result["index"]
    assert (idx["n"], idx["dim"], idx["status"]) == (2000, 384, "ok")
    assert idx["build_rate"] > 0 and idx["bytes_per_vector_hnswlib"] > 384 * 4
    assert idx["exact"]["recall"] >= 0.99  # float rounding may swap near-ties
    assert [t["target"] for t in idx["targets"]] == [0.95, 0.99]
    for t in idx["targets"]:
        assert t["ef"] >= 10 and t["recall"] >= t["target"]
        assert t["p50_ms"] <= t["p95_ms"] <= t["p99_ms"] and t["qps"] > 0
        assert t["speedup_vs_exact"] > 0
    assert {p["ef"] for p in idx["curve"]} >= {t["ef"] for t in idx["targets"]}
    assert "encoders" not in result
    levels = result["http"]["levels"]
    assert [(r["clients"], r["errors"], r["n"]) for r in levels] == [(1, 0, 8), (4, 0, 8)]
    assert all(r["p50_ms"] <= r["p99_ms"] and r["qps"] > 0 for r in levels)
    assert result["http"]["fused_dim"] == 1664
    # the same synthetic indexes served from each vector store
    modes = result["http"]["modes"]
    assert [m["vector_store"] for m in modes] == ["hnswlib", "pgvector"]
    for mode in modes:
        assert [(r["clients"], r["errors"], r["n"]) for r in mode["levels"]] == [
            (1, 0, 8),
            (4, 0, 8),
        ]
    assert "vector_store pgvector" in (tmp_path / "bench.md").read_text()
    assert {p.name for p in tmp_path.iterdir()} == {"bench.json", "bench.md", "recall_vs_qps.png"}
    assert "| 2k x 384 | HNSW >= 0.99 |" in (tmp_path / "bench.md").read_text()
