import json
import threading

import numpy as np
import pytest

from retrieval.errors import IndexError_, IndexMismatch
from retrieval.index import VectorIndex


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make(n: int = 50, dim: int = 16) -> tuple[VectorIndex, np.ndarray]:
    x = unit_rows(n, dim)
    idx = VectorIndex(dim, capacity=8)  # small capacity: adds must grow it
    idx.add([(f"item{i}", "v") for i in range(n)], x)
    return idx, x


def test_scores_are_cosine_similarities_best_first() -> None:
    idx, x = make()
    hits = idx.search(x[3], 5)
    assert hits[0].item_id == "item3"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    exact = x @ x[3]
    for h in hits:
        assert h.score == pytest.approx(exact[int(h.item_id[4:])], abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(-1.0 <= h.score <= 1.0 for h in hits)


def test_k_is_clamped_to_the_live_count() -> None:
    idx, x = make(n=5)
    assert len(idx.search(x[0], 100)) == 5
    assert idx.search(x[0], 0) == []
    idx.delete_items([f"item{i}" for i in range(4)])
    hits = idx.search(x[0], 10)
    assert [h.item_id for h in hits] == ["item4"]
    idx.delete_items(["item4"])
    assert idx.search(x[0], 3) == []


def test_many_deletions_never_break_search() -> None:
    idx, x = make(n=200)
    idx.delete_items([f"item{i}" for i in range(0, 200) if i % 10])  # 90% deleted
    for q in x[:20]:
        hits = idx.search_items(q, 15)
        assert len(hits) == 15
        assert all(int(h.item_id[4:]) % 10 == 0 for h in hits)


def test_items_group_their_variants_best_wins() -> None:
    dim = 8
    e = np.eye(dim, dtype=np.float32)
    idx = VectorIndex(dim)
    idx.add(
        [("a", "q"), ("a", "ex0"), ("b", "q")], np.stack([e[0], e[1], (e[0] + e[1]) / np.sqrt(2)])
    )
    hits = idx.search_items(e[1], 5)
    assert [h.item_id for h in hits] == ["a", "b"]
    assert hits[0].variant == "ex0" and hits[0].score == pytest.approx(1.0)
    assert idx.search_items(e[1], 5, exclude=["a"])[0].item_id == "b"


def test_best_variants_are_each_items_exact_best_vector() -> None:
    x = unit_rows(30, 8, seed=3)
    idx = VectorIndex(8)
    keys = [(f"item{i % 10}", f"v{i // 10}") for i in range(30)]  # 3 variants per item
    idx.add(keys, x)
    q = unit_rows(1, 8, seed=4)[0]
    got = idx.best_variants(["item7", "item2", "unknown", "item7"], q)
    assert list(got) == ["item7", "item2"]  # asked order, once each, unknown left out
    for item, (score, variant) in got.items():
        rows = [i for i, (it, _) in enumerate(keys) if it == item]
        best = max(rows, key=lambda i: float(x[i] @ q))
        assert variant == keys[best][1]
        assert score == pytest.approx(float(x[best] @ q), abs=1e-5)
    assert idx.best_variants([], q) == {}


def test_update_by_key_replaces_the_vector() -> None:
    idx, x = make(n=10)
    target = -x[0]
    idx.add([("item5", "v")], target[None])
    assert len(idx) == 10
    assert idx.search(target, 1)[0].item_id == "item5"


def test_deleted_slots_are_reused() -> None:
    idx, x = make(n=20)
    cap = idx.capacity
    idx.delete_items(["item1", "item2"])
    assert idx.deleted_count == 2
    idx.add([("new1", "v"), ("new2", "v")], unit_rows(2, 16, seed=9))
    assert idx.deleted_count == 0 and idx.capacity == cap and len(idx) == 20


def test_rejects_bad_vectors() -> None:
    idx = VectorIndex(4)
    with pytest.raises(ValueError):
        idx.add([("a", "v")], np.array([[np.nan, 0, 0, 0]]))
    with pytest.raises(ValueError):
        idx.add([("a", "v"), ("a", "v")], np.eye(4)[:2])


def test_save_and_load_keep_ids_metadata_and_ef(tmp_path) -> None:  # noqa: ANN001
    idx, x = make()
    idx.meta.update({"text_encoder": "enc-1", "version": "v1"})
    idx.delete_items(["item7"])
    idx.save(tmp_path / "ix")
    loaded = VectorIndex.load(tmp_path / "ix", expect={"text_encoder": "enc-1"}, ef=40)
    assert loaded.params.ef == 40
    assert loaded.meta["version"] == "v1"
    assert "item7" not in loaded and len(loaded) == len(idx)
    assert [h.item_id for h in loaded.search(x[3], 5)] == [h.item_id for h in idx.search(x[3], 5)]
    loaded.add([("item7", "v")], x[7][None])  # the freed slot is reused after loading
    assert loaded.deleted_count == 0


def test_load_refuses_another_encoder(tmp_path) -> None:  # noqa: ANN001
    idx, _ = make()
    idx.meta["text_encoder"] = "st:model-a"
    idx.save(tmp_path / "ix")
    with pytest.raises(IndexMismatch, match="text_encoder='st:model-a'.*'st:model-b'"):
        VectorIndex.load(tmp_path / "ix", expect={"text_encoder": "st:model-b"})


def test_load_reports_missing_and_corrupt_indexes(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(IndexError_, match="retrieval ingest"):
        VectorIndex.load(tmp_path / "nothing")
    idx, _ = make()
    idx.save(tmp_path / "ix")
    (tmp_path / "ix" / "index.hnsw").write_bytes(b"garbage")
    with pytest.raises(IndexError_):
        VectorIndex.load(tmp_path / "ix")
    (tmp_path / "ix" / "meta.json").write_text("{not json")
    with pytest.raises(IndexError_, match="unreadable"):
        VectorIndex.load(tmp_path / "ix")
    (tmp_path / "ix" / "meta.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(IndexError_, match="format"):
        VectorIndex.load(tmp_path / "ix")


def test_concurrent_readers_with_one_writer() -> None:
    dim = 32
    base = unit_rows(500, dim)
    idx = VectorIndex(dim, capacity=16)
    idx.add([(f"b{i}", "v") for i in range(500)], base)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                for q in base[:50]:
                    hits = idx.search_items(q, 10)
                    assert len(hits) == 10
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    extra = unit_rows(3000, dim, seed=3)
    deleted = 0
    for start in range(0, 3000, 100):  # grows the index (resize) while readers run
        idx.add([(f"x{i}", "v") for i in range(start, start + 100)], extra[start : start + 100])
        deleted += idx.delete_items([f"x{i}" for i in range(start, start + 100, 7)])
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert deleted == 30 * 15
    assert idx.item_count == 500 + 3000 - deleted
