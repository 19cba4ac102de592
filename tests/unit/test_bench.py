"""``retrieval bench``: the maths it rests on (one small real run of the command:
integration/test_bench_run.py)."""

from __future__ import annotations

import json

import hnswlib
import numpy as np
import pytest

from retrieval.bench.data import embedding_like, exact_one, exact_topk
from retrieval.bench.encoders import bench_encoder, demo_images, demo_texts
from retrieval.bench.report import markdown, tables
from retrieval.bench.stats import (
    estimate_index_bytes,
    int_list,
    latency_summary,
    parse_count,
    recall_at_k,
    search_ef,
)
from retrieval.cli import main

from helpers import ROOT


def test_recall_at_k_counts_the_true_neighbours_found() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = [[4, 3, 9, 1], [0, 0, 0, 5]]  # 3 of 4, then 1 of 4 (a repeated id counts once)
    assert recall_at_k(found, truth, 4) == pytest.approx((3 / 4 + 1 / 4) / 2)
    assert recall_at_k([[1, 9], [5, 6]], truth, 2) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="result lists"):
        recall_at_k([[1]], truth, 1)


def test_latency_summary_percentiles_and_qps() -> None:
    times = list(range(1, 101))  # 1..100 ms
    lat = latency_summary(times)
    assert lat.p50_ms == pytest.approx(50.5)
    assert lat.p95_ms == pytest.approx(95.05)
    assert lat.p99_ms == pytest.approx(99.01)
    assert lat.qps == pytest.approx(100 / 5.05)  # the times sum to 5.05 s
    assert latency_summary(times, wall_s=2.0).qps == pytest.approx(50.0)  # concurrent clients
    with pytest.raises(ValueError):
        latency_summary([])


def fake_curve(ef: int) -> float:
    """A saturating recall curve: 0.9 at ef=10, 0.95 from ef=20, 0.99 from ef=100."""
    return 1.0 - 1.0 / ef


@pytest.mark.parametrize("target", [0.5, 0.9, 0.95, 0.97, 0.99, 0.995])
def test_search_ef_finds_the_smallest_ef_reaching_the_target(target: float) -> None:
    calls: list[int] = []

    def recall_at(ef: int) -> float:
        calls.append(ef)
        return fake_curve(ef)

    found = search_ef(recall_at, target, start=10, max_ef=4096)
    smallest = next(ef for ef in range(10, 4097) if fake_curve(ef) >= target)
    assert found.ef == smallest
    assert found.recall == pytest.approx(fake_curve(smallest))
    assert len(calls) <= 2 * 12 + 2  # doubling then bisection, not a scan


def test_search_ef_reports_an_unreached_target() -> None:
    found = search_ef(lambda ef: min(0.9, ef / 100), 0.95, start=10, max_ef=300)
    assert found.ef is None and found.recall is None
    with pytest.raises(ValueError):
        search_ef(fake_curve, 1.5)


def test_parse_count() -> None:
    assert [parse_count(s) for s in ("2k", "10K", "1M", "2500", "1.5k")] == [
        2000,
        10_000,
        1_000_000,
        2500,
        1500,
    ]
    for bad in ("ten", "0", "-5k", "1.5", ""):
        with pytest.raises(ValueError):
            parse_count(bad)


def test_int_list_reads_a_benchmark_option() -> None:
    assert int_list("0,1,2") == [0, 1, 2] and int_list("7") == [7]
    with pytest.raises(ValueError):
        int_list("0,x")


def test_the_chunk_size_does_not_change_the_synthetic_vectors() -> None:
    x, q = embedding_like(1003, 48, n_queries=17, seed=5, chunk=10_000)
    xc, qc = embedding_like(1003, 48, n_queries=17, seed=5, chunk=100)
    np.testing.assert_allclose(xc, x, atol=1e-6)
    np.testing.assert_allclose(qc, q, atol=1e-6)


def test_exact_topk_matches_a_full_sort_across_chunks() -> None:
    x, q = embedding_like(2345, 32, n_queries=20, seed=3)
    want = np.argsort(-(q @ x.T), axis=1)[:, :10]
    np.testing.assert_array_equal(exact_topk(x, q, 10, chunk=500), want)
    np.testing.assert_array_equal(exact_one(x, q[0], 10), want[0])


def test_memory_estimate_is_near_hnswlibs_own_size() -> None:
    n, dim, m = 5000, 64, 16
    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=n, M=m, ef_construction=40)
    index.add_items(embedding_like(n, dim, seed=1)[0])
    est = estimate_index_bytes(n, dim, m)
    assert 0.8 < est / index.index_file_size() < 1.25


def test_report_names_a_skipped_size() -> None:
    result = {
        "started": "2026-11-28 05:00 UTC",
        "machine": {"cpus": 2, "load_start": [1.0, 1.0, 1.0], "load_end": [2.0, 2.0, 2.0]},
        "config": {"k": 10, "m": 24, "ef_construction": 200, "targets": [0.95], "data": "x"},
        "index": [{"n": 1_000_000, "dim": 1664, "status": "skipped", "reason": "needs ~14 GB"}],
        "skipped": ["skipped 1,000,000 x 1664: needs ~14 GB"],
    }
    (title, header, rows), *_ = tables(result)
    assert rows == [["1M x 1664", "skipped: needs ~14 GB", "", "", "", ""]]
    md = markdown(result, "retrieval bench --sizes 1M")
    assert "| 1M x 1664 | skipped: needs ~14 GB |" in md and "load average 1.0" in md


def test_a_size_that_does_not_fit_is_skipped_with_a_line(capsys: pytest.CaptureFixture) -> None:
    code = main(
        ["bench", "--parts", "index", "--sizes", "3k", "--dims", "8", "--max-memory", "0.001"]
        + ["--json", "--no-progress"]
    )
    out = capsys.readouterr()
    assert code == 0
    result = json.loads(out.out.strip().splitlines()[-1])
    assert result["index"][0]["status"] == "skipped"
    assert "skipped 3,000 x 8: needs ~0.3 GB, 0.0 GB allowed" in out.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sizes", "lots"], "--sizes: 'lots' is not a count"),
        (["--sizes", "5"], "--sizes must be above k=10"),
        (["--targets", "0.9,2"], "--targets must be recalls in (0, 1]"),
        (["--parts", "index,gpu"], "--parts: unknown part(s) ['gpu']"),
        (["--batching", "maybe"], "--batching: 'maybe'; choose on, off or on,off"),
        (["--batching", "on,on"], "--batching: 'on,on'"),
        (["--dims", "0"], "--dims needs positive whole numbers"),
        (["--encoder-dtype", "int8"], "--encoder-dtype: 'int8'; choose from auto, float32"),
        (["--encoder-dtype", "float32,float32"], "--encoder-dtype: 'float32,float32'"),
        (["--vector-store", "milvus"], "--vector-store: 'milvus'; choose from hnswlib, pgvector"),
        (["--text-runtime", "tensorrt"], "--text-runtime: 'tensorrt'; choose from auto, torch"),
        (["--text-runtime", "onnx,onnx"], "--text-runtime: 'onnx,onnx'"),
        (
            ["--text-runtime", "torch,onnx", "--encoder-dtype", "float32,bfloat16"],
            "--text-runtime onnx runs float32 only",
        ),
    ],
)
def test_bad_options_are_one_line_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


class RecordingEncoder:
    """Stands in for a model: records the batches it is given (the timing logic is under test)."""

    id = "recording"

    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []

    def encode(self, items: list, *, batch_size: int | None = None) -> np.ndarray:
        self.calls.append((len(items), batch_size))
        return np.zeros((len(items), 4), dtype=np.float32)


def test_encoder_throughput_encodes_whole_batches_of_each_size() -> None:
    enc = RecordingEncoder()
    result = bench_encoder(enc, ["a", "b", "c"], [1, 4], min_items=6)
    # the first call loads the model; each size then warms once and runs its timed batches
    assert enc.calls == [(1, None), (1, 1)] + [(1, 1)] * 6 + [(4, 4)] + [(4, 4)] * 2
    assert [(r["batch_size"], r["items"]) for r in result["by_batch"]] == [(1, 6), (4, 8)]
    assert all(r["items_per_s"] > 0 for r in result["by_batch"])


def test_text_variants_pair_every_dtype_with_every_runtime() -> None:
    from retrieval.bench.encoders import text_variants

    opts = {"encoder_dtypes": ["float32", "bfloat16"], "text_runtimes": ["torch", "auto"]}
    assert text_variants(opts) == [
        ("float32", "torch"), ("float32", "auto"), ("bfloat16", "torch"), ("bfloat16", "auto")
    ]  # fmt: skip
    assert text_variants({"encoder_dtypes": ["float32"]}) == [("float32", "auto")]


def test_demo_data_for_the_encoders() -> None:
    texts = demo_texts(ROOT / "data/faq/faq.yaml", ROOT / "data/catalog/products.jsonl")
    images = demo_images(ROOT / "data/catalog/products.jsonl")
    assert len(texts) > 300 and all(isinstance(t, str) and t for t in texts)
    assert len(images) == 81 and all(im.mode == "RGB" for im in images)


def test_the_http_report_shows_each_batching_setting_and_the_gain_over_one_client() -> None:
    def level(clients: int, qps: float) -> dict:
        return {"clients": clients, "requests": 40, "errors": 0, "p50_ms": 10.0,
                "p95_ms": 20.0, "p99_ms": 30.0, "qps": qps}  # fmt: skip

    http = {
        "n_faq_vectors": 500, "n_products": 300, "fused_dim": 1664,
        "modes": [
            {"batching": True, "levels": [level(1, 50.0), level(32, 150.0)]},
            {"batching": False, "levels": [level(1, 52.0), level(32, 52.0)]},
        ],
    }  # fmt: skip
    http["levels"] = http["modes"][0]["levels"]
    found = [t for t in tables({"http": http}) if t[0].startswith("POST /v1/query")]
    assert [t[0].rsplit(", ", 1)[-1] for t in found] == [
        "encode_batching on",
        "encode_batching off",
    ]
    assert [[row[-1] for row in t[2]] for t in found] == [["1.00x", "3.00x"], ["1.00x", "1.00x"]]
    # an older result without modes still reads
    (old,) = [t for t in tables({"http": {**http, "modes": None}}) if t[0].startswith("POST")]
    assert "encode_batching" not in old[0] and old[2][1][-1] == "3.00x"


def test_the_reports_name_each_encoder_number_format() -> None:
    def level(clients: int, qps: float) -> dict:
        return {"clients": clients, "requests": 40, "errors": 0, "p50_ms": 10.0,
                "p95_ms": 20.0, "p99_ms": 30.0, "qps": qps}  # fmt: skip

    by_batch = [{"batch_size": 1, "items_per_s": 50.0, "ms_per_batch": 20.0, "items": 16}]
    text = [
        {"model": "st:m", "by_batch": by_batch, "dtype_setting": d, "dtype": d}
        for d in ("float32", "bfloat16")
    ]
    encoders = {"torch_threads": 1, "text": text[0], "text_by_dtype": text, "image": None}
    modes = [
        {
            "batching": True,
            "encoder_dtype": d,
            "vector_store": "pgvector",
            "levels": [level(1, 50.0)],
        }
        for d in ("float32", "bfloat16")
    ]
    http = {"n_faq_vectors": 5, "n_products": 3, "fused_dim": 8, "modes": modes}
    found = tables({"encoders": encoders, "http": {**http, "levels": modes[0]["levels"]}})
    titles = [t[0] for t in found]
    assert [t for t in titles if t.startswith("text encoder")] == [
        "text encoder st:m (torch threads: 1, float32)",
        "text encoder st:m (torch threads: 1, bfloat16)",
    ]
    assert [t.split(", ", 2)[-1] for t in titles if t.startswith("POST")] == [
        "encode_batching on, encoder_dtype float32, vector_store pgvector",
        "encode_batching on, encoder_dtype bfloat16, vector_store pgvector",
    ]
