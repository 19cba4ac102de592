"""Re-indexing with stand-in encoders: only changed entries are encoded, unchanged runs do
nothing, deletions compact, encoder changes rebuild, versions prune and roll back, one job
at a time, and the running service's reloader swaps versions in."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from retrieval.errors import Busy, NotFound
from retrieval.index import VectorIndex
from retrieval.indexfolders import (
    current_version,
    exclusive,
    list_versions,
    load_current,
    version_dir,
)
from retrieval.reindex import reindex
from retrieval.reindex.changes import diff_items
from retrieval.reindex.versions import rollback
from retrieval.settings import load_settings

from fakes import ColourImageEncoder, HashingTextEncoder, colour_png


def write_faq(path: Path, entries: list[dict]) -> None:
    path.write_text(yaml.safe_dump(entries, allow_unicode=True), encoding="utf-8")


def bank(n: int) -> list[dict]:
    return [
        {"id": f"e{i}", "question": f"question number {i} about topic{i}", "answer": f"answer {i}"}
        for i in range(n)
    ]


def write_catalog(path: Path, products: list[dict]) -> None:
    path.write_text("\n".join(json.dumps(p) for p in products) + "\n", encoding="utf-8")


@pytest.fixture()
def env(tmp_path: Path):  # noqa: ANN201
    faq, catalog = tmp_path / "faq.yaml", tmp_path / "products.jsonl"
    write_faq(faq, bank(100))
    img = colour_png("red", tmp_path / "red.png")
    write_catalog(
        catalog,
        [{"id": f"p{i}", "title": f"product {i} widget{i}", "price": 1.0 + i} for i in range(50)]
        + [{"id": "apple", "title": "red apple", "images": [img.name]}],
    )
    settings = load_settings(
        None,
        data_dir=tmp_path / "var",
        faq_path=faq,
        catalog_path=catalog,
        faq_calibration_path=tmp_path / "none.jsonl",
        keep_versions=3,
    )
    return settings, HashingTextEncoder(), ColourImageEncoder()


def run(settings, text, image, **kwargs):  # noqa: ANN001, ANN201
    return {r.kind: r for r in reindex(settings, text=text, image=image, **kwargs).reports}


def test_diff_of_content_hashes() -> None:
    c = diff_items({"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "9", "d": "4"})
    assert (c.added, c.updated, c.deleted, c.unchanged) == (["d"], ["b"], ["c"], 1)
    assert not diff_items({"a": "1"}, {"a": "1"}).any


def test_first_run_builds_then_one_change_encodes_exactly_one_entry(env) -> None:  # noqa: ANN001
    settings, text, image = env
    first = run(settings, text, image)
    assert first["faq"].mode == "full" and first["faq"].encoded == 100
    assert first["products"].mode == "full" and first["products"].version

    entries = bank(100)
    entries[23]["answer"] = "a brand new answer about refunds"
    entries[23]["question"] = "how do refunds for widgets work"
    write_faq(settings.faq_path, entries)
    text.calls = text.items_encoded = 0
    second = run(settings, text, image, kinds=("faq",))
    faq = second["faq"]
    assert (faq.mode, faq.added, faq.updated, faq.deleted, faq.unchanged, faq.encoded) == (
        "incremental",
        0,
        1,
        0,
        99,
        1,
    )
    assert text.calls == 1 and text.items_encoded == 2  # the changed entry's question and answer
    index = load_current(settings.index_dir, "faq", expect={})
    assert index.meta["version"] == faq.version == current_version(settings.index_dir, "faq")
    [hit] = index.search_items(text.encode(["how do refunds for widgets work"])[0], 1)
    assert hit.item_id == "e23" and hit.score > 0.99
    records = {r["id"]: r for r in index.meta["records"]}
    assert records["e23"]["answer"] == "a brand new answer about refunds"
    assert len(index) == 200 and index.item_count == 100


def test_encoding_many_entries_logs_its_progress(env, caplog: pytest.LogCaptureFixture) -> None:  # noqa: ANN001
    settings, text, image = env
    run(settings, text, image, kinds=("faq",))
    write_faq(settings.faq_path, bank(124))
    text.calls = 0
    with caplog.at_level(logging.INFO, logger="retrieval.reindex"):
        faq = run(settings, text, image, kinds=("faq",))["faq"]
    assert (faq.mode, faq.added, faq.encoded) == ("incremental", 24, 24)
    # without a progress bar, in steps of a tenth of the entries, at least 8 (reindex/faq.py)
    assert [m for m in caplog.messages if "encoded" in m] == [
        f"faq: encoded {n} of 24 entries" for n in (8, 16, 24)
    ]
    assert text.calls == 3
    [hit] = load_current(settings.index_dir, "faq", expect={}).search_items(
        text.encode(["question number 117 about topic117"])[0], 1
    )
    assert hit.item_id == "e117" and hit.score > 0.99


def test_no_change_encodes_and_publishes_nothing(env) -> None:  # noqa: ANN001
    settings, text, image = env
    run(settings, text, image)
    before = {k: list_versions(settings.index_dir, k) for k in ("faq", "products")}
    text.calls = 0
    again = run(settings, text, image)
    assert {r.mode for r in again.values()} == {"unchanged"}
    assert all(r.version is None and r.encoded == 0 for r in again.values())
    assert text.calls == 0
    assert {k: list_versions(settings.index_dir, k) for k in ("faq", "products")} == before


def test_price_change_publishes_new_records_without_encoding(env) -> None:  # noqa: ANN001
    settings, text, image = env
    run(settings, text, image)
    lines = settings.catalog_path.read_text().splitlines()
    p0 = json.loads(lines[0])
    p0["price"] = 99.5
    lines[0] = json.dumps(p0)
    settings.catalog_path.write_text("\n".join(lines) + "\n")
    text.calls = 0
    products = run(settings, text, image, kinds=("products",))["products"]
    assert products.mode == "incremental" and products.version and products.encoded == 0
    assert text.calls == 0
    index = load_current(settings.index_dir, "products", expect={})
    assert {r["id"]: r for r in index.meta["records"]}["p0"]["price"] == 99.5


def test_product_changes_reach_the_fused_index_and_the_text_view(env) -> None:  # noqa: ANN001
    settings, text, image = env
    run(settings, text, image)
    products = [json.loads(line) for line in settings.catalog_path.read_text().splitlines()]
    products = [p for p in products if p["id"] != "p1"]  # deleted
    products[0]["title"] = "steel kettle"  # p0 changed
    products.append({"id": "new", "title": "green teapot"})
    products.append({"id": "pear", "title": "red pear", "images": ["red.png"]})
    write_catalog(settings.catalog_path, products)
    report = run(settings, text, image, kinds=("products",))["products"]
    assert (report.added, report.updated, report.deleted, report.encoded) == (2, 1, 1, 3)
    index = load_current(settings.index_dir, "products", expect={})
    view = index.companions["text"]
    # every product is in the text view; only products with a picture have fused vectors
    assert "p1" not in view and "new" in view and view.item_count == 52
    assert set(index.item_ids()) == {"apple", "pear"}
    [hit] = view.search_items(text.encode(["steel kettle"])[0], 1)
    assert hit.item_id == "p0"
    assert index.item_vectors("apple")[0] == ["image0"]  # untouched
    assert index.item_vectors("pear")[0] == ["image0"]


def test_many_deletions_compact_the_graph(env) -> None:  # noqa: ANN001
    settings, text, image = env
    run(settings, text, image)
    write_faq(settings.faq_path, bank(60))  # 40% of the entries deleted
    faq = run(settings, text, image, kinds=("faq",))["faq"]
    assert faq.mode == "compacted" and faq.deleted == 40
    index = load_current(settings.index_dir, "faq", expect={})
    assert index.deleted_count == 0 and index.item_count == 60 and len(index) == 120
    write_faq(settings.faq_path, bank(58))  # ~3% more: no compaction needed
    faq = run(settings, text, image, kinds=("faq",))["faq"]
    assert faq.mode == "incremental"
    assert load_current(settings.index_dir, "faq", expect={}).deleted_count == 4


def test_deleting_pictureless_products_compacts_their_text_view(env) -> None:  # noqa: ANN001
    settings, text, image = env
    run(settings, text, image)
    products = [json.loads(line) for line in settings.catalog_path.read_text().splitlines()]
    # 30 of the 50 products without a picture go: the fused index (apple only) loses nothing
    write_catalog(settings.catalog_path, products[30:])
    report = run(settings, text, image, kinds=("products",))["products"]
    assert report.mode == "compacted" and report.deleted == 30
    index = load_current(settings.index_dir, "products", expect={})
    view = index.companions["text"]
    assert view.deleted_count == 0 and view.item_count == 21 and index.item_ids() == ["apple"]


def test_another_encoder_means_a_full_rebuild_never_a_mixed_index(env) -> None:  # noqa: ANN001
    settings, text, image = env
    run(settings, text, image)
    other = HashingTextEncoder(id="fake-text-v2")
    faq = run(settings, other, image, kinds=("faq",))["faq"]
    assert faq.mode == "full" and faq.reason == "text_encoder changed" and faq.encoded == 100
    index = load_current(settings.index_dir, "faq", expect={"text_encoder": "fake-text-v2"})
    assert index.item_count == 100


def test_versions_are_pruned_and_can_be_rolled_back(env) -> None:  # noqa: ANN001
    settings, text, image = env
    published = []
    for n in (100, 99, 98, 97):
        write_faq(settings.faq_path, bank(n))
        published.append(run(settings, text, image, kinds=("faq",))["faq"].version)
    assert list_versions(settings.index_dir, "faq") == published[-3:]  # keep_versions=3
    assert rollback(settings, published[-2], text=text) == "faq"
    assert current_version(settings.index_dir, "faq") == published[-2]
    assert load_current(settings.index_dir, "faq", expect={}).item_count == 98
    with pytest.raises(NotFound, match="no index version 'faq-nope'"):
        rollback(settings, "faq-nope")
    with pytest.raises(NotFound):
        rollback(settings, published[0])  # pruned


def test_one_index_job_at_a_time(env) -> None:  # noqa: ANN001
    settings, text, image = env
    with (
        exclusive(settings.index_dir),
        pytest.raises(Busy, match="another index job is running \\(pid"),
    ):
        run(settings, text, image)


def test_approved_drafts_join_the_bank(env) -> None:  # noqa: ANN001
    settings, text, image = env
    run(settings, text, image)
    drafts = settings.resolved_faq_drafts_path
    drafts.write_text(
        json.dumps({"id": "gift-wrap", "question": "do you gift wrap", "answer": "Yes, for 2 EUR."})
        + "\n"
        + json.dumps({"id": "e1", "question": "duplicate id", "answer": "skipped"})
        + "\n"
    )
    faq = run(settings, text, image, kinds=("faq",))["faq"]
    assert (faq.added, faq.updated, faq.encoded) == (1, 0, 1)
    records = {
        r["id"]: r for r in load_current(settings.index_dir, "faq", expect={}).meta["records"]
    }
    assert (
        records["gift-wrap"]["answer"] == "Yes, for 2 EUR."
        and records["e1"]["answer"] == "answer 1"
    )


def test_the_service_reloader_swaps_in_new_versions(env) -> None:  # noqa: ANN001
    from retrieval.fusion import Fusion
    from retrieval.reloader import SnapshotReloader
    from retrieval.retriever import Retriever
    from retrieval.runtime import load_snapshot

    settings, text, image = env
    run(settings, text, image)
    fusion = Fusion(image.dim, text.dim, settings.image_weight, settings.text_weight)
    r = Retriever(
        text_encoder=text,
        image_encoder=image,
        fusion=fusion,
        snapshot=load_snapshot(settings, text, image, fusion),
    )
    reloader = SnapshotReloader(
        settings, r, lambda: load_snapshot(settings, text, image, fusion), interval_s=0
    )
    assert reloader.check_once() is False
    old = r.snapshot
    write_faq(
        settings.faq_path,
        [*bank(100), {"id": "new", "question": "is there a new entry", "answer": "yes"}],
    )
    new_version = run(settings, text, image, kinds=("faq",))["faq"].version
    assert reloader.check_once() is True
    assert r.snapshot.faq_version == new_version and old.faq_version != new_version
    assert "new" in r.snapshot.faq_index and r.snapshot.faq.get("new").answer == "yes"
    assert old.faq.get("new") is None  # a query that began before still sees the old version

    # a version that does not fit (another encoder) is refused; the live one stays
    run(settings, HashingTextEncoder(id="other"), image, kinds=("faq",))
    assert reloader.check_once() is False and r.snapshot.faq_version == new_version
    assert isinstance(r.snapshot.faq_index, VectorIndex)
    assert version_dir(settings.index_dir, "faq", new_version).is_dir()
