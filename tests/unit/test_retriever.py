"""The query path with stand-in encoders: ranking, grouping, decisions, bad input, swaps."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from retrieval.build import build_product_index
from retrieval.catalog import Catalog, Product
from retrieval.decision import Decision, DecisionPolicy
from retrieval.errors import ImageError, InputError, NotFound
from retrieval.fusion import Fusion
from retrieval.index import IndexParams
from retrieval.product_search import rank_products
from retrieval.retriever import Retriever
from retrieval.snapshot import Snapshot

from fakes import ColourImageEncoder, HashingTextEncoder, colour_png


def test_faq_answer_with_language_versions_not_counted_as_rivals(retriever: Retriever) -> None:
    r = retriever.query("how long does delivery take", k_faq=3)
    assert r.replies[0].entry.id == "delivery" and r.replies[0].score == pytest.approx(
        1.0, abs=1e-5
    )
    assert r.decision is Decision.ANSWER
    assert [c.score for c in r.replies] == sorted((c.score for c in r.replies), reverse=True)


def test_unrelated_question_is_handed_off(retriever: Retriever) -> None:
    r = retriever.query("zebra quantum violin")
    assert r.decision is Decision.HANDOFF


def test_text_query_ranks_products_by_text_and_keeps_imageless_ones(retriever: Retriever) -> None:
    r = retriever.query("gift card")
    top = r.products[0]
    assert top.product.id == "gift-card"
    assert top.image_score is None and top.lexical_score == 1.0  # shares both words
    w = retriever.limits.lexical_weight  # the default hybrid blend (settings.lexical_weight)
    assert w > 0
    for m in r.products:
        assert m.score == pytest.approx((1 - w) * m.text_score + w * (m.lexical_score or 0.0))
    enc = retriever.text_encoder
    for m in r.products:  # the reported text score is the true cosine of query and product text
        q, p = enc.encode(["gift card", m.product.text])
        assert m.text_score == pytest.approx(float(q @ p), abs=1e-5)
    assert all(m.image_score is None for m in r.products)  # the query has no image


def test_image_query_scores_by_image(retriever: Retriever) -> None:
    r = retriever.query(image=colour_png("yellow"))
    assert r.products[0].product.id == "banana"
    assert r.products[0].image_score == pytest.approx(1.0, abs=1e-5)
    assert r.products[0].text_score is None
    red = retriever.image_encoder.encode([Image.open(io.BytesIO(colour_png("red")))])[0]
    yellow = retriever.image_encoder.encode([Image.open(io.BytesIO(colour_png("yellow")))])[0]
    apple = next(m for m in r.products if m.product.id == "red-apple")
    assert apple.image_score == pytest.approx(float(red @ yellow), abs=1e-5)
    assert "gift-card" not in [m.product.id for m in r.products]  # nothing to compare with
    assert r.replies == [] and r.decision is Decision.HANDOFF


def test_text_and_image_query_reports_both_modalities(retriever: Retriever) -> None:
    r = retriever.query("red apple", image=colour_png("red"))
    m = r.products[0]
    assert m.product.id == "red-apple"
    assert m.image_score is not None and m.text_score is not None
    assert m.score == pytest.approx((m.image_score + m.text_score) / 2, abs=1e-5)


def test_empty_caption_with_photo_is_an_image_query(retriever: Retriever) -> None:
    r = retriever.query("   ", image=colour_png("red"))
    assert r.text is None and r.products[0].product.id == "red-apple"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"text": ""}, InputError, "empty"),
        ({"text": "  \t "}, InputError, "empty"),
        ({"text": "\x00\x07"}, InputError, "control"),
        ({"text": "a" * 100_000}, InputError, "limit is 200"),
        ({}, InputError, "empty"),
        ({"text": "hi", "k_products": 0}, InputError, "between 1 and 100"),
        ({"text": "hi", "k_faq": -3}, InputError, "between 1 and 100"),
        ({"text": "hi", "k_products": 10**9}, InputError, "between 1 and 100"),
        ({"text": "hi", "k_products": "5"}, InputError, "whole number"),
        ({"image": b"not an image"}, ImageError, "not an image"),
    ],
)
def test_bad_input_gets_a_clear_error_and_nothing_is_logged(
    retriever: Retriever, kwargs, error, message
) -> None:  # noqa: ANN001
    with pytest.raises(error, match=message):
        retriever.query(**kwargs)
    assert retriever.query_log.records == []


def test_every_candidate_is_logged_with_scores_and_versions(retriever: Retriever) -> None:
    r = retriever.query(
        "how do I return a product", conversation_id="conv-9", k_faq=2, k_products=2
    )
    [rec] = retriever.query_log.records
    q = rec["query"]
    assert (
        q["id"] == r.query_id
        and q["conversation_id"] == "conv-9"
        and q["decision"] == r.decision.value
    )
    assert q["faq_index_version"] == "faq-test" and q["product_index_version"] == "products-test"
    assert q["text_encoder"] == "fake-text" and q["image_encoder"] is None
    faq = [c for c in rec["candidates"] if c["kind"] == "faq"]
    prods = [c for c in rec["candidates"] if c["kind"] == "product"]
    assert [c["item_id"] for c in faq] == [c.entry.id for c in r.replies]
    assert [c["score"] for c in prods] == [m.score for m in r.products]
    assert [c["rank"] for c in prods] == [1, 2]
    assert rec["decisions"][0]["actor"] == "system"


def test_similar_products(retriever: Retriever) -> None:
    similar = retriever.similar_products("red-apple", k=5)
    assert "red-apple" not in [m.product.id for m in similar]
    assert len(similar) == 2
    with pytest.raises(NotFound, match="no product with id 'nope'"):
        retriever.similar_products("nope")


def test_swap_changes_what_new_queries_use(retriever: Retriever) -> None:
    old = retriever.snapshot
    strict = Snapshot(
        old.faq_index, old.product_index, old.faq, old.catalog, DecisionPolicy(1.01, 1.0, 0.0)
    )
    assert retriever.query("how long does delivery take").decision is Decision.ANSWER
    assert retriever.swap(strict) is old
    r = retriever.query("how long does delivery take")
    assert r.decision is Decision.SUGGEST or r.decision is Decision.HANDOFF
    assert r.policy.answer_threshold == 1.01


def test_a_corrupt_catalog_image_names_the_product(tmp_path) -> None:  # noqa: ANN001
    from retrieval.errors import SourceError

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    catalog = Catalog({"pear": Product("pear", "pear", images=(bad,))}, tmp_path / "catalog.jsonl")
    text, image = HashingTextEncoder(), ColourImageEncoder()
    with pytest.raises(SourceError, match="product 'pear': .*bad.jpg"):
        build_product_index(
            catalog,
            text,
            image,
            Fusion(image.dim, text.dim),
            IndexParams(),
            max_image_bytes=10**7,
            max_image_pixels=10**8,
        )


def _count_encodes(encoder: ColourImageEncoder) -> list[int]:
    """Make ``encoder`` record the size of each call to ``encode`` in the returned list."""
    sizes: list[int] = []
    real_encode = encoder.encode

    def counting(items, **kwargs):  # noqa: ANN001, ANN003, ANN202
        sizes.append(len(items))
        return real_encode(items, **kwargs)

    encoder.encode = counting  # type: ignore[method-assign]
    return sizes


def test_known_image_vectors_are_used_and_not_encoded_again(tmp_path) -> None:  # noqa: ANN001
    red, yellow = colour_png("red", tmp_path / "r.png"), colour_png("yellow", tmp_path / "y.png")
    catalog = Catalog(
        {
            "apple": Product("apple", "red apple", images=(red,)),
            "banana": Product("banana", "banana", images=(yellow,)),
        },
        tmp_path / "catalog.jsonl",
    )
    text, image = HashingTextEncoder(), ColourImageEncoder()
    fusion = Fusion(image.dim, text.dim)
    args = (text, image, fusion, IndexParams())
    limits = {"max_image_bytes": 10**7, "max_image_pixels": 10**8}
    plain = build_product_index(catalog, *args, **limits)
    vectors = {Path(red): image.encode([Image.open(red).convert("RGB")])[0]}
    asked: list[Path] = []

    def known(path: Path):  # noqa: ANN202
        asked.append(path)
        return vectors.get(path)

    encoded = _count_encodes(image)
    reused = build_product_index(catalog, *args, **limits, known_images=known)
    assert sorted(asked) == sorted([Path(red), Path(yellow)])
    assert encoded == [1]  # only the picture without a known vector
    for pid in ("apple", "banana"):  # the same vectors as encoding every picture
        assert reused.item_vectors(pid)[1] == pytest.approx(plain.item_vectors(pid)[1], abs=1e-6)
    # a known vector is still held to the image limits (checked from the header)
    from retrieval.errors import SourceError

    with pytest.raises(SourceError, match="product 'apple'"):
        build_product_index(
            catalog, *args, max_image_bytes=10, max_image_pixels=10**8, known_images=known
        )


def test_catalog_images_are_decoded_a_chunk_at_a_time_after_every_file_is_checked(
    tmp_path,  # noqa: ANN001
) -> None:
    """A build holds the decoded pictures of one chunk at a time, whatever the catalog's
    size, and a file that fails its checks stops the build before anything is encoded."""
    from retrieval.encoders.files import encode_image_files
    from retrieval.errors import SourceError

    colours = ["red", "yellow", "green", "blue", "white", "black", "orange"]
    products = {
        f"p{i}": Product(f"p{i}", f"item {i}", images=(colour_png(c, tmp_path / f"{i}.png"),))
        for i, c in enumerate(colours * 3)
    }
    text, image = HashingTextEncoder(), ColourImageEncoder()
    real_encode = image.encode
    sizes = _count_encodes(image)
    files = [p.images[0] for p in products.values()]
    limits = {"max_bytes": 10**7, "max_pixels": 10**8}
    chunked = encode_image_files(image, files, **limits, chunk=4)
    assert sizes == [4, 4, 4, 4, 4, 1]
    whole = real_encode([Image.open(f).convert("RGB") for f in files])
    assert chunked == pytest.approx(whole, abs=1e-6)
    # the build: every file checked first, so a bad last file costs no encoding
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    products["zz"] = Product("zz", "broken", images=(bad,))
    sizes.clear()
    with pytest.raises(SourceError, match="product 'zz'"):
        build_product_index(
            Catalog(products, tmp_path / "catalog.jsonl"),
            text,
            image,
            Fusion(image.dim, text.dim),
            IndexParams(),
            max_image_bytes=10**7,
            max_image_pixels=10**8,
        )
    assert sizes == []


def test_text_queries_rank_every_product_by_text_cosine(retriever: Retriever) -> None:
    snap = retriever.snapshot
    assert "text" in snap.product_index.companions
    # a product without an image lives in the text view only (no 1664-d vector of zeros)
    assert "gift-card" not in snap.product_index and "banana" in snap.product_index
    text = retriever.text_encoder
    q = text.encode(["organic banana yellow"])[0]
    got = rank_products(snap, retriever.fusion, q, None, 3)
    want = sorted(((float(text.encode([p.text])[0] @ q), p.id) for p in snap.catalog), reverse=True)
    assert [m.product.id for m in got] == [pid for _, pid in want]
    for m, (score, _) in zip(got, want, strict=True):
        assert m.score == pytest.approx(score, abs=1e-5) == m.text_score
        assert m.image_score is None


def test_a_photo_with_text_scores_a_pictureless_product_by_its_text(retriever: Retriever) -> None:
    r = retriever.query("digital gift card", colour_png("yellow"), k_products=3)
    by_id = {m.product.id: m for m in r.products}
    assert set(by_id) == {"gift-card", "banana", "red-apple"}
    card = by_id["gift-card"]
    assert card.image_score is None and card.score == pytest.approx(card.text_score)
    assert by_id["banana"].image_score == pytest.approx(1.0, abs=1e-5)
    assert [m.score for m in r.products] == sorted((m.score for m in r.products), reverse=True)
    # a photo alone cannot score a product without a picture
    photo_only = retriever.query(None, colour_png("yellow"), k_products=3)
    assert "gift-card" not in {m.product.id for m in photo_only.products}


def test_similar_products_of_a_pictureless_product_come_from_the_text_view(
    retriever: Retriever,
) -> None:
    similar = retriever.similar_products("gift-card", k=5)
    assert {m.product.id for m in similar} == {"banana", "red-apple"}
    assert all(m.image_score is None for m in similar)
    # and a product with a picture has the pictureless one among its similar products
    assert "gift-card" in {m.product.id for m in retriever.similar_products("banana", k=5)}


def test_the_evaluation_answers_each_question_with_its_own_filter(retriever: Retriever) -> None:
    """``retrieval eval products`` passes each query line's filter through the batch and the
    one-at-a-time path alike."""
    from retrieval.evaluation.runner import answer_all
    from retrieval.filters import ProductFilter

    in_stock = ProductFilter(in_stock=True)
    answered = answer_all(
        retriever,
        ["banana", "banana"],
        same=lambda a, b: [m.product.id for m in a.products] == [m.product.id for m in b.products],
        k_faq=1,
        k_products=3,
        product_filters=[in_stock, None],
        latency_sample=2,
    )
    filtered, plain = ([m.product.id for m in r.products] for r in answered.results)
    assert filtered == ["red-apple"]  # the banana is out of stock, the gift card's stock unknown
    assert plain[0] == "banana" and set(plain) == {"banana", "red-apple", "gift-card"}
    assert (
        answered.results[0].product_filter == in_stock
        and answered.results[1].product_filter is None
    )
    assert answered.info["batch_mismatches"] == 0 and len(answered.timed) == 2


def test_a_database_backed_faq_search_runs_beside_the_product_search_when_a_slot_is_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a store searched by a database server the FAQ search of a question alone in the
    process starts on its own thread (the server runs it beside the product search); a
    question that finds the slot taken or others in flight, and every question on
    in-process indexes, searches in turn."""
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    from retrieval import answering

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faq-search")
    monkeypatch.setattr(answering, "_BESIDE", pool)
    monkeypatch.setattr(answering, "_beside_free", threading.Semaphore(1))
    started = threading.Event()
    release = threading.Event()
    threads: list[str] = []

    def search(snap, label):  # noqa: ANN001, ANN202
        threads.append(threading.current_thread().name)
        if label == "first":
            started.set()
            release.wait()
        return [label]

    local = SimpleNamespace(faq_index=SimpleNamespace())
    remote = SimpleNamespace(faq_index=SimpleNamespace(remote=True))
    me = threading.current_thread().name
    try:
        inline = answering._beside(search, local, "local", alone=True)
        assert threads == []  # not run until asked for
        assert inline() == ["local"] and threads == [me]
        first = answering._beside(search, remote, "first", alone=True)
        assert started.wait(30) and threads[-1].startswith("faq-search")
        second = answering._beside(search, remote, "second", alone=True)  # the slot is taken
        assert second() == ["second"] and threads[-1] == me
    finally:
        release.set()
    assert first() == ["first"]
    third = answering._beside(search, remote, "third", alone=True)  # free again
    assert third() == ["third"] and threads[-1].startswith("faq-search")
    # another question in flight: every core is busy, so it searches in turn
    busy = answering._beside(search, remote, "busy", alone=False)
    assert busy() == ["busy"] and threads[-1] == me
    pool.shutdown()


def test_a_question_is_alone_only_while_no_other_is_encoded_or_answered(
    retriever: Retriever, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retriever tells the answer whether another question is in flight in this
    process (it decides whether a database-backed FAQ search runs beside the product
    search)."""
    import threading

    from retrieval import retriever as module

    real_answer = module.answer
    seen: dict[str, bool] = {}
    inside = threading.Event()
    release = threading.Event()

    def recording(snap, q, *args, alone: bool = False, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen[q.text] = alone
        if q.text == "first question":
            inside.set()
            release.wait()
        return real_answer(snap, q, *args, alone=alone, **kwargs)

    monkeypatch.setattr(module, "answer", recording)
    first = threading.Thread(target=retriever.query, args=("first question",), daemon=True)
    first.start()
    try:
        assert inside.wait(30)
        retriever.query("second question")  # while the first is being answered
    finally:
        release.set()
        first.join(30)
    retriever.query("third question")  # alone again
    assert seen == {"first question": True, "second question": False, "third question": True}


def test_flight_counts_across_nested_blocks() -> None:
    from retrieval.retriever import InFlight

    flight = InFlight()
    with flight as first_in:
        with flight as second_in:
            assert (first_in, second_in, flight.count) == (1, 2, 2)
    assert flight.count == 0
