"""Hybrid product ranking: the lexical index (BM25, retrieval/lexical/) is built with the
product index, saved and published with its version, kept in step by re-index, and blended
with the text cosine for text-only queries (``lexical_weight``; 0 = the dense ranking)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from retrieval.build import build_faq_index, build_product_index
from retrieval.catalog import Catalog, Product
from retrieval.decision import DecisionPolicy
from retrieval.faq import FAQBank
from retrieval.fusion import Fusion
from retrieval.index import IndexParams, VectorIndex
from retrieval.indexfolders import current_version, load_current, publish, version_dir
from retrieval.indexformat import TEXT_VIEW
from retrieval.lexical.tokens import DEFAULT_TOKENIZER
from retrieval.product_search import rank_products, text_matches
from retrieval.reindex import reindex
from retrieval.retriever import Limits, Retriever
from retrieval.runtime import limits_from
from retrieval.settings import load_settings
from retrieval.snapshot import Snapshot

from fakes import ColourImageEncoder, HashingTextEncoder

TITLES = {
    "tv-7100": "Samsung UE55NU7100 television, 7 series",
    "tv-7400": "Samsung UE55NU7400 55 inch 4K Ultra HD Smart TV",
    "tv-7500": "Samsung UE55NU7500 55 inch curved 4K Smart TV",
    "tv-49": "Samsung UE49NU7100 49 inch 4K Ultra HD Smart TV",
    "tv-lg": "LG 55UK6300 55 inch 4K Smart TV",
    "phone": "Apple iPhone 8 64GB Space Grey",
    "kettle": "Bosch TWK7203 cordless kettle 1.7 l",
    "fridge": "Samsung RB29FSRNDSA fridge freezer",
}
# MiniLM puts the 7400 (whose title shares "4k tv" with the query) above the exact model
CODE_QUERY = "samsung ue55nu7100 4k tv"
PARAMS = IndexParams(m=8, ef_construction=50, ef=20)


def write_faq(path: Path, entries: list[dict]) -> None:
    path.write_text(yaml.safe_dump(entries, allow_unicode=True), encoding="utf-8")


def write_catalog(path: Path, products: list[dict]) -> None:
    path.write_text("\n".join(json.dumps(p) for p in products) + "\n", encoding="utf-8")


def catalog() -> Catalog:
    return Catalog(
        {i: Product(i, t, "", 100.0, "EUR", "Electronics", 1, ()) for i, t in TITLES.items()}
    )


@pytest.fixture(scope="module")
def minilm():  # noqa: ANN201
    from retrieval.encoders import text_encoder

    return text_encoder(load_settings(None))


@pytest.fixture(scope="module")
def snap(minilm) -> Snapshot:  # noqa: ANN001
    image = ColourImageEncoder()
    index = build_product_index(
        catalog(),
        minilm,
        image,
        Fusion(image.dim, minilm.dim),
        PARAMS,
        max_image_bytes=10**7,
        max_image_pixels=10**8,
    )
    faq = build_faq_index(FAQBank({}), minilm, PARAMS)
    return Snapshot.from_indexes(faq, index, DecisionPolicy(0.6, 0.3, 0.05))


def ranked(snap: Snapshot, query: str, minilm, weight: float, k: int = 5):  # noqa: ANN001, ANN201
    q = minilm.encode([query])[0]
    fusion = Fusion(ColourImageEncoder().dim, minilm.dim)
    return rank_products(snap, fusion, q, None, k, query_text=query, lexical_weight=weight)


def test_a_model_number_ranks_the_exact_product_first_where_dense_alone_does_not(
    snap: Snapshot,
    minilm,  # noqa: ANN001
) -> None:
    dense = ranked(snap, CODE_QUERY, minilm, 0.0)
    assert dense[0].product.id != "tv-7100"  # the reason for the lexical signal
    hybrid = ranked(snap, CODE_QUERY, minilm, 0.4)
    top = hybrid[0]
    assert top.product.id == "tv-7100"
    assert top.lexical_score == pytest.approx(1.0)  # the query's best BM25 match
    cosine = {m.product.id: m.text_score for m in dense}
    assert top.text_score == pytest.approx(cosine["tv-7100"], abs=1e-5)  # still the cosine
    assert top.score == pytest.approx(0.6 * top.text_score + 0.4 * top.lexical_score, abs=1e-5)
    assert [m.score for m in hybrid] == sorted((m.score for m in hybrid), reverse=True)
    assert all(m.image_score is None and m.lexical_score is not None for m in hybrid)
    card = top.public()
    assert card["lexical_score"] == pytest.approx(1.0) and card["text_score"] is not None


def test_the_retriever_ranks_hybrid_with_the_configured_weight(snap: Snapshot, minilm) -> None:  # noqa: ANN001
    image = ColourImageEncoder()
    settings = load_settings(None)
    assert settings.lexical_weight == 0.4 and limits_from(settings).lexical_weight == 0.4

    def top(limits: Limits) -> str:
        r = Retriever(
            text_encoder=minilm,
            image_encoder=image,
            fusion=Fusion(image.dim, minilm.dim),
            snapshot=snap,
            limits=limits,
        )
        return r.query(CODE_QUERY, prefer_products=True).products[0].product.id

    assert top(limits_from(settings)) == "tv-7100"
    assert top(limits_from(load_settings(None, lexical_weight=0.0))) != "tv-7100"


def test_lexical_weight_zero_is_the_dense_ranking(snap: Snapshot, minilm) -> None:  # noqa: ANN001
    q = minilm.encode([CODE_QUERY])[0]
    fusion = Fusion(ColourImageEncoder().dim, minilm.dim)
    old = text_matches(snap, q, 5)
    for got in (
        rank_products(snap, fusion, q, None, 5),
        rank_products(snap, fusion, q, None, 5, query_text=CODE_QUERY, lexical_weight=0.0),
    ):
        assert got == old
        assert all(m.lexical_score is None and m.score == m.text_score for m in got)
    # a query sharing no token with any product has no lexical signal: the dense ranking
    nothing = "zzzz qqqq"
    assert ranked(snap, nothing, minilm, 0.4) == ranked(snap, nothing, minilm, 0.0)


def test_the_lexical_index_is_saved_and_loaded_with_the_version(
    snap: Snapshot, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    index = snap.product_index
    assert index.lexical is not None and index.lexical.item_count == len(TITLES)
    assert index.meta["lexical_tokenizer"] == DEFAULT_TOKENIZER.spec
    folder = publish(index.compacted(), tmp_path, "products", "products-1")
    assert (folder / "lexical" / "lexical.json").is_file()
    loaded = load_current(tmp_path, "products", expect={"kind": "products"})
    assert loaded.lexical is not None
    assert loaded.lexical.search("ue55nu7100", 3) == index.lexical.search("ue55nu7100", 3)
    assert loaded.lexical.search("ue55nu7100", 1)[0][0] == "tv-7100"

    # a version from before the lexical index loads, without the lexical signal
    old = index.compacted()
    old.lexical = None
    folder = publish(old, tmp_path, "products", "products-2")
    assert not (folder / "lexical").exists()
    assert load_current(tmp_path, "products", expect={"kind": "products"}).lexical is None

    # one made by another tokeniser too (a warning; re-index rebuilds it)
    folder = publish(index.compacted(), tmp_path, "products", "products-3")
    meta_file = folder / "lexical" / "lexical.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    meta_file.write_text(json.dumps({**meta, "tokenizer": "lex0:other"}), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="retrieval.index"):
        assert VectorIndex.load(folder).lexical is None
    assert "tokenizer" in caplog.text


def test_an_old_version_without_a_lexical_index_ranks_by_cosine(
    snap: Snapshot,
    minilm,  # noqa: ANN001
) -> None:
    old = snap.product_index.compacted()
    old.lexical = None
    plain = Snapshot.from_indexes(snap.faq_index, old, snap.policy)
    assert ranked(plain, CODE_QUERY, minilm, 0.4) == ranked(snap, CODE_QUERY, minilm, 0.0)


@pytest.fixture()
def shop(tmp_path: Path):  # noqa: ANN201
    faq, products = tmp_path / "faq.yaml", tmp_path / "products.jsonl"
    write_faq(faq, [{"id": "e0", "question": "how long is delivery", "answer": "two days"}])
    rows = [{"id": i, "title": t, "price": 1.0} for i, t in TITLES.items()]
    write_catalog(products, rows)
    settings = load_settings(
        None,
        data_dir=tmp_path / "var",
        faq_path=faq,
        catalog_path=products,
        faq_calibration_path=tmp_path / "none.jsonl",
    )
    return settings, rows


def _run(settings, text, image) -> str:  # noqa: ANN001
    return reindex(settings, text=text, image=image, kinds=("products",)).reports[0].mode


def _lexical(settings):  # noqa: ANN001, ANN202
    return VectorIndex.load(
        version_dir(settings.index_dir, "products", current_version(settings.index_dir, "products"))
    ).lexical


def test_incremental_reindex_keeps_the_lexical_index_in_step(shop) -> None:  # noqa: ANN001
    settings, rows = shop
    text, image = HashingTextEncoder(), ColourImageEncoder()
    assert _run(settings, text, image) == "full"
    lexical = _lexical(settings)
    assert lexical is not None and lexical.search("rb29fsrndsa", 1)[0][0] == "fridge"

    # nothing changed: nothing done (no new version)
    version = current_version(settings.index_dir, "products")
    assert _run(settings, text, image) == "unchanged"
    assert current_version(settings.index_dir, "products") == version

    # the fridge is renamed to a new model, the kettle is deleted, a product is added
    rows = [r for r in rows if r["id"] != "kettle"]
    next(r for r in rows if r["id"] == "fridge")["title"] = "Samsung RB38T675DSA fridge freezer"
    rows.append({"id": "toaster", "title": "Philips HD2581 toaster", "price": 20.0})
    write_catalog(settings.catalog_path, rows)
    text.calls = text.items_encoded = 0
    assert _run(settings, text, image) == "incremental"
    assert text.items_encoded == 2  # the fridge and the toaster
    lexical = _lexical(settings)
    assert lexical is not None
    assert lexical.search("rb38t675dsa", 1)[0][0] == "fridge"  # findable by its new code
    tokens = lexical.row_tokens("fridge", "text")
    assert "rb38t675dsa" in tokens and "rb29fsrndsa" not in tokens  # the old code is gone
    assert lexical.search("hd2581", 1)[0][0] == "toaster"
    assert "kettle" not in lexical and lexical.item_count == len(rows)


def test_reindex_adds_a_lexical_index_to_a_version_made_before_it(shop) -> None:  # noqa: ANN001
    settings, rows = shop
    text, image = HashingTextEncoder(), ColourImageEncoder()
    assert _run(settings, text, image) == "full"
    # make the current version look like one from before the lexical index
    folder = version_dir(
        settings.index_dir, "products", current_version(settings.index_dir, "products")
    )
    index = VectorIndex.load(folder)
    index.lexical = None
    index.meta.pop("lexical_tokenizer")
    index.save(folder)
    assert _lexical(settings) is None

    text.calls = text.items_encoded = 0
    assert _run(settings, text, image) == "incremental"  # not "unchanged"
    assert text.items_encoded == 0  # no vector re-encoded
    lexical = _lexical(settings)
    assert lexical is not None and lexical.item_count == len(rows)
    assert _run(settings, text, image) == "unchanged"


def test_the_text_view_and_lexical_index_hold_the_same_products(snap: Snapshot) -> None:
    view = snap.product_index.companions[TEXT_VIEW]
    lexical = snap.product_index.lexical
    assert lexical is not None
    assert sorted(lexical.item_ids()) == sorted(view.item_ids())


def test_retrieval_train_judges_products_in_the_service_ranking(snap: Snapshot, minilm) -> None:  # noqa: ANN001
    """``retrieval train --product-queries`` judges a model by ranking held-out questions
    outside any index (retrieval/training/products.py); its ranking must be the service's."""
    from retrieval.labelled import LabelledQuery
    from retrieval.lexical.hybrid import weighted
    from retrieval.training.products import hybrid_candidates

    queries = [CODE_QUERY, "iphone 8 64gb", "samsung 49 inch", "a cordless kettle", "lg tv"]
    questions = [LabelledQuery(i, frozenset({"tv-7100"}), q) for i, q in enumerate(queries)]
    examples = hybrid_candidates(minilm, list(catalog()), questions)
    for (dense, lexical, _), query in zip(examples, queries, strict=True):
        for weight in (0.0, 0.4, 0.8):
            judged = weighted(dense, lexical, weight)[:5]
            served = ranked(snap, query, minilm, weight)
            assert [i for i, _ in judged] == [m.product.id for m in served], (query, weight)
            for (_, score), match in zip(judged, served, strict=True):
                assert score == pytest.approx(match.score, abs=1e-5)


def test_eval_products_chooses_the_lexical_weight_on_train_unless_configured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """TRAIN's text-only product questions choose the weight by cross-validation (codes that
    MiniLM blurs need BM25); a configured weight is used as it is."""
    from retrieval.cli import main

    products = [{"id": i, "title": t, "category": "Electronics"} for i, t in TITLES.items()]
    write_catalog(tmp_path / "catalog.jsonl", products)
    codes = {i: t.split()[1].lower() for i, t in TITLES.items()}
    # offers in the style of CODE_QUERY, whose nearest title by MiniLM is the wrong model
    train = [
        {"query": f"samsung {codes[i]} 4k tv {n}", "relevant": [i]}
        for i in TITLES
        for n in ("new", "deal")
    ]
    write_catalog(tmp_path / "train.jsonl", train)
    write_catalog(tmp_path / "queries.jsonl", [{"query": CODE_QUERY, "relevant": ["tv-7100"]}])
    monkeypatch.setenv("RETRIEVAL_DATA_DIR", str(tmp_path / "var"))
    args = ["eval", "products", "--catalog", str(tmp_path / "catalog.jsonl")]
    args += ["--queries", str(tmp_path / "queries.jsonl"), "--train", str(tmp_path / "train.jsonl")]
    assert main([*args, "--json", "--no-progress"]) == 0
    fitted = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    weight, how = fitted["lexical_weight"].split(" ", 1)
    assert how.startswith("(fitted on 16 TRAIN questions: 5-fold cross-validated hit@1")
    assert float(weight) > 0 and fitted["hit_at_1"] == 1.0
    monkeypatch.setenv("RETRIEVAL_LEXICAL_WEIGHT", "0")
    assert main([*args, "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "lexical weight: 0 (configured)" in table
