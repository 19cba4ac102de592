"""The demo shop with the real packaged models: the answers the README promises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from retrieval.decision import Decision
from retrieval.errors import IndexMismatch
from retrieval.runtime import build_retriever, open_store
from retrieval.store import QueryRow

from helpers import DATA, demo_settings, run_cli

pytestmark = pytest.mark.models


@pytest.fixture()
def demo(demo_data_dir: Path):  # noqa: ANN201
    settings = demo_settings(demo_data_dir)
    engine, qlog = open_store(settings)
    retriever = build_retriever(settings, qlog)
    yield retriever, engine, qlog
    qlog.close()
    engine.dispose()


def test_delivery_question_gets_the_delivery_answer(demo) -> None:  # noqa: ANN001
    retriever, _, _ = demo
    r = retriever.query("how long does delivery take?")
    assert r.replies[0].entry.id == "delivery-time"
    assert r.decision is Decision.ANSWER


def test_organic_bananas(demo) -> None:  # noqa: ANN001
    retriever, _, _ = demo
    r = retriever.query("do you have organic bananas?")
    assert r.replies[0].entry.id == "organic"
    assert r.products[0].product.id == "banana"
    # the text cosine, and the lexical signal blended into the score: "organic bananas"
    # shares both words with the product's title
    assert r.products[0].lexical_score is not None and r.products[0].lexical_score > 0
    assert r.products[0].score >= r.products[0].text_score


@pytest.mark.parametrize(
    ("question", "entry"),
    [
        ("can I pay with paypal?", "payment-methods"),
        ("I forgot my password", "reset-password"),
        ("how do I cancel my order", "cancel-order"),
        ("when are you open?", "opening-hours"),
    ],
)
def test_common_questions(demo, question: str, entry: str) -> None:  # noqa: ANN001
    retriever, _, _ = demo
    assert retriever.query(question).replies[0].entry.id == entry


def test_off_topic_question_is_not_answered(demo) -> None:  # noqa: ANN001
    retriever, _, _ = demo
    assert (
        retriever.query("who won the football world cup in 1998?").decision is not Decision.ANSWER
    )


def test_shopper_photo_finds_the_product(demo) -> None:  # noqa: ANN001
    retriever, _, _ = demo
    r = retriever.query(image=DATA / "catalog/images/Kiwi.jpg")
    assert r.products[0].product.id == "kiwi" and r.products[0].image_score == pytest.approx(
        1.0, abs=1e-4
    )


def test_every_candidate_reaches_sqlite(demo) -> None:  # noqa: ANN001
    retriever, engine, qlog = demo
    r = retriever.query("how much is delivery", conversation_id="demo-conv", k_faq=3, k_products=4)
    assert qlog.flush(10)
    with Session(engine) as s:
        row = s.get(QueryRow, r.query_id)
        assert row is not None and row.conversation_id == "demo-conv"
        assert row.faq_index_version == retriever.snapshot.faq_version
        assert row.text_encoder == retriever.text_encoder.id
        faq = [c for c in row.candidates if c.kind == "faq"]
        prods = [c for c in row.candidates if c.kind == "product"]
        assert [c.item_id for c in faq] == [c.entry.id for c in r.replies]
        assert [round(c.score, 6) for c in prods] == [round(m.score, 6) for m in r.products]
        assert len(prods) == 4 and all(
            c.index_version == retriever.snapshot.product_version for c in prods
        )
        assert (
            s.scalars(select(QueryRow).where(QueryRow.id == r.query_id)).one().decisions[0].decision
            == r.decision.value
        )


def test_index_built_with_another_encoder_is_refused(demo_data_dir: Path, tmp_path: Path) -> None:
    meta_path = next((demo_data_dir / "index" / "faq").glob("faq-*/meta.json"))
    meta = json.loads(meta_path.read_text())
    meta["text_encoder"] = "st:some-other-model"
    meta_path.write_text(json.dumps(meta))
    before = meta_path.read_bytes()
    with pytest.raises(IndexMismatch, match="some-other-model.*retrieval ingest"):
        build_retriever(demo_settings(demo_data_dir))
    assert meta_path.read_bytes() == before  # nothing damaged


def test_cli_query_prints_decision_replies_and_products(demo_data_dir: Path) -> None:
    out = run_cli("query", "how long does delivery take?", "--data-dir", str(demo_data_dir))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("decision: answer")
    assert "delivery-time" in out.stdout and "products:" in out.stdout
    out = run_cli(
        "query",
        "do you have organic bananas?",
        "--json",
        "--data-dir",
        str(demo_data_dir),
    )
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["replies"][0]["id"] == "organic" and data["products"][0]["id"] == "banana"
    assert data["products"][0]["text_score"] is not None
    assert data["filter"] is None


def test_cli_query_filters_products(demo_data_dir: Path) -> None:
    out = run_cli(
        "query",
        "something fresh",
        "--filter",
        "category=Juice",
        "--filter",
        "category=plant-based",
        "--filter",
        "price_max=2",
        "-k",
        "8",
        "--json",
        "--data-dir",
        str(demo_data_dir),
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["filter"] == {"category": ["juice", "plant-based"], "price_max": 2.0}
    assert data["products"] and all(
        p["category"].lower() in ("juice", "plant-based") and p["price"] <= 2.0
        for p in data["products"]
    )
    table = run_cli("query", "milk", "--filter", "in_stock=true", "--data-dir", str(demo_data_dir))
    assert "products: (in stock)" in table.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["query", ""], "error: give a question, --image PATH, or both"),
        (["query", "hi", "-k", "0"], "error: k_products must be between 1 and 100, got 0"),
        (["query", "x" * 5000], "error: the query is 5000 characters long; the limit is 2000"),
        (["query", "--image", "pyproject.toml"], "error: pyproject.toml is not an image"),
        (
            ["query", "milk", "--filter", "in_stock"],
            "error: --filter 'in_stock': expected KEY=VALUE",
        ),
        (
            ["query", "milk", "--filter", "category=Toys"],
            "error: filter.category: unknown category",
        ),
        (
            ["query", "milk", "--filter", "price_min=3", "--filter", "price_max=1"],
            "error: filter.price_min (3) is above filter.price_max (1)",
        ),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    demo_data_dir: Path, args: list[str], message: str
) -> None:
    out = run_cli(*args, "--data-dir", str(demo_data_dir))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in out.stderr


def test_cli_without_an_index_says_what_to_do(tmp_path: Path) -> None:
    out = run_cli("query", "hello", "--data-dir", str(tmp_path / "empty"))
    assert (
        out.returncode == 2
        and "run 'retrieval ingest' first" in out.stderr
        and "Traceback" not in out.stderr
    )


def test_cli_ingest_rejects_a_bad_catalog_without_touching_the_index(
    demo_data_dir: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "title": "Apple"}\n{"id": "b"}\n')
    before = (demo_data_dir / "index" / "products" / "CURRENT").read_text()
    out = run_cli("ingest", "--catalog", str(bad), "--data-dir", str(demo_data_dir))
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: {bad}:2: field 'title': missing or empty"
    assert (demo_data_dir / "index" / "products" / "CURRENT").read_text() == before


def test_cli_ingest_records_versions_and_skips_when_unchanged(tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    from retrieval.store import IndexVersionRow

    data_dir = tmp_path / "var"
    args = ("ingest", "--only", "faq", "--if-changed", "--no-progress", "--data-dir", str(data_dir))
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert (
        "published faq index faq-" in first.stdout
        and "answer threshold calibrated on 92" in first.stdout
    )
    second = run_cli(*args)  # unchanged sources: nothing is encoded or published
    assert second.returncode == 0, second.stderr
    assert "faq index unchanged" in second.stdout
    engine = create_engine(f"sqlite:///{data_dir / 'retrieval.db'}")
    with Session(engine) as s:
        [row] = s.scalars(select(IndexVersionRow)).all()
        assert (
            row.kind == "faq"
            and row.n_items == 92
            and row.encoders["text_encoder"].startswith("st:")
        )
        assert (data_dir / "index" / "faq" / "CURRENT").read_text().strip() == row.id
    engine.dispose()


def test_ingest_if_changed_publishes_a_price_change(tmp_path: Path) -> None:
    """A catalog edit that changes no vector (a price, the stock, a size) is still a change:
    ``ingest --if-changed`` (what scripts/start.sh runs) publishes it; an untouched catalog
    is skipped."""
    import json

    data_dir = tmp_path / "var"
    catalog = tmp_path / "catalog.jsonl"
    rows = [
        {"id": "oat", "title": "Oat Milk", "price": 2.44, "stock": 3, "size": "1 l"},
        {"id": "kiwi", "title": "Kiwi", "price": 0.68, "stock": 60},
    ]
    catalog.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ("ingest", "--only", "products", "--catalog", str(catalog), "--if-changed",
            "--no-progress", "--data-dir", str(data_dir))  # fmt: skip
    assert run_cli(*args).returncode == 0
    assert "products index unchanged" in run_cli(*args).stdout
    rows[0]["price"] = 1.99
    catalog.write_text("".join(json.dumps(r) + "\n" for r in rows))
    changed = run_cli(*args)
    assert changed.returncode == 0 and "published products index" in changed.stdout
    current = (data_dir / "index" / "products" / "CURRENT").read_text().strip()
    meta = json.loads((data_dir / "index" / "products" / current / "meta.json").read_text())
    assert {r["id"]: r["price"] for r in meta["records"]} == {"oat": 1.99, "kiwi": 0.68}


def test_reindex_publishes_while_the_database_cannot_be_used(
    demo_data_dir: Path, tmp_path: Path
) -> None:
    """A price change goes live while the log database is down (found by the soak: the
    command stopped at "cannot prepare the database"); the version history waits, and so
    does the FAQ, whose calibration reads the agents' labels from the database."""
    from retrieval.indexfolders import current_version, load_current

    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "images").symlink_to(DATA / "catalog" / "images")
    rows = [json.loads(line) for line in (DATA / "catalog" / "products.jsonl").open()]
    rows[0]["price"] = round(rows[0]["price"] + 0.01, 2)
    (catalog / "products.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "not-a-folder").write_text("")
    down = f"sqlite:///{tmp_path / 'not-a-folder' / 'log.db'}"  # cannot be opened
    before = current_version(demo_data_dir / "index", "products")
    faq_before = current_version(demo_data_dir / "index", "faq")
    args = ["--no-progress", "--data-dir", str(demo_data_dir)]
    out = run_cli(
        "reindex", *args, "--catalog", str(catalog / "products.jsonl"),
        env={"RETRIEVAL_DATABASE_URL": down},
    )  # fmt: skip
    assert out.returncode == 1, out.stderr  # done, but not all of it
    assert "cannot use the SQLite database" in out.stderr and "not recorded" in out.stderr
    assert "faq: not re-indexed: its calibration reads the agents' labels" in out.stderr
    assert current_version(demo_data_dir / "index", "faq") == faq_before
    after = current_version(demo_data_dir / "index", "products")
    assert after != before
    records = load_current(demo_data_dir / "index", "products", expect={}).meta["records"]
    assert next(r for r in records if r["id"] == rows[0]["id"])["price"] == rows[0]["price"]
    listed = run_cli(
        "versions", "--json", "--data-dir", str(demo_data_dir), env={"RETRIEVAL_DATABASE_URL": down}
    )
    assert listed.returncode == 0, listed.stderr
    assert any(v["version"] == after and v["current"] for v in json.loads(listed.stdout))
