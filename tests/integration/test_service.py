"""The HTTP API with the real models and the demo index (in-process ASGI client)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.orm import Session

from retrieval.runtime import build_retriever, open_store
from retrieval.service import create_app
from retrieval.store import QueryRow

from helpers import DATA, demo_settings

pytestmark = pytest.mark.models

API_KEY = "a-key-for-trusted-callers"


@pytest.fixture()
def client(demo_data_dir: Path):  # noqa: ANN201
    settings = demo_settings(demo_data_dir, max_image_bytes=2 * 1024 * 1024, api_key=API_KEY)
    engine, qlog = open_store(settings)
    retriever = build_retriever(settings, qlog)
    with TestClient(create_app(settings, retriever)) as c:
        c.engine = engine  # type: ignore[attr-defined]
        c.qlog = qlog  # type: ignore[attr-defined]
        yield c
    qlog.close()
    engine.dispose()


def test_health_and_readiness(client: TestClient) -> None:
    h = client.get("/health").json()
    assert h["status"] == "ok"
    assert h["counts"] == {"faq_entries": 92, "products": 81}
    assert h["index_versions"]["faq"].startswith("faq-")
    assert h["query_log"] == {"database": "ok", "writer": "running"}  # details: trusted only
    assert client.get("/ready").json() == {"ready": True}


def test_json_query(client: TestClient) -> None:
    r = client.post(
        "/v1/query",
        json={"text": "how long does delivery take?", "conversation_id": "web-1", "k_products": 3},
        headers={"Authorization": f"Bearer {API_KEY}"},  # a conversation id needs the key
    )
    assert r.status_code == 200
    body = r.json()
    assert body["decision"] == "answer"
    assert (
        body["replies"][0]["id"] == "delivery-time"
        and body["replies"][0]["score"] > body["thresholds"]["answer"]
    )
    # a delivery question is not about products: the ranked matches are not shown (the log
    # keeps all three)
    assert body["products"] == [] and body["product_gate"]["about_products"] is False
    assert set(body["timings_ms"]) >= {"encode", "search", "total"}
    assert client.qlog.flush(10)
    with Session(client.engine) as s:
        row = s.get(QueryRow, body["query_id"])
        assert row.conversation_id == "web-1" and len(row.candidates) == len(body["replies"]) + 3


def test_organic_bananas_over_http(client: TestClient) -> None:
    body = client.post("/v1/query", json={"text": "do you have organic bananas?"}).json()
    assert body["replies"][0]["id"] == "organic"
    top = body["products"][0]
    assert top["id"] == "banana" and top["title"] == "Organic Bananas" and top["price"] > 0
    assert top["image_url"].endswith("/v1/products/banana/image")
    img = client.get(top["image_url"])
    assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
    # a text question is ranked hybrid: the BM25 part is reported beside the cosine
    assert top["lexical_score"] == 1.0  # "organic bananas": the best lexical match
    assert all(0.0 <= p["lexical_score"] <= 1.0 for p in body["products"])


def test_multipart_photo_query(client: TestClient) -> None:
    with open(DATA / "catalog/images/Kiwi.jpg", "rb") as fh:
        r = client.post(
            "/v1/query", files={"image": ("kiwi.jpg", fh, "image/jpeg")}, data={"k_products": "2"}
        )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["products"][0]["id"] == "kiwi" and body["products"][0]["image_score"] > 0.99
    assert body["products"][0]["text_score"] is None
    assert body["products"][0]["lexical_score"] is None  # a photo alone has no words
    assert body["decision"] == "handoff" and body["replies"] == []


def test_multipart_text_and_photo(client: TestClient) -> None:
    with open(DATA / "catalog/images/Banana.jpg", "rb") as fh:
        body = client.post(
            "/v1/query", files={"image": ("b.jpg", fh, "image/jpeg")}, data={"text": "bananas"}
        ).json()
    top = body["products"][0]
    assert (
        top["id"] == "banana" and top["text_score"] is not None and top["image_score"] is not None
    )


def test_similar_products(client: TestClient) -> None:
    body = client.get("/v1/products/granny-smith/similar", params={"k": 4}).json()
    ids = [p["id"] for p in body["products"]]
    assert len(ids) == 4 and "granny-smith" not in ids
    assert client.get("/v1/products/banana").json()["title"] == "Organic Bananas"


def png_bytes(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, "green").save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("request_kwargs", "status", "detail"),
    [
        ({"json": {"text": ""}}, 422, "empty"),
        ({"json": {"text": "   \n\t"}}, 422, "empty"),
        ({"json": {"text": "\u0000\u0001\u0002"}}, 422, "empty"),
        ({"json": {"text": "a" * 102_400}}, 422, "the limit is 2000"),
        ({"json": {"text": "hi", "k_products": 0}}, 422, "between 1 and 100"),
        ({"json": {"text": "hi", "k_faq": 1_000_000}}, 422, "between 1 and 100"),
        ({"json": {}}, 422, "text"),
        ({"json": {"text": 5}}, 422, "text"),
        ({"json": {"text": "hi", "unknown": 1}}, 422, "unknown"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "JSON"),
        (
            {"files": {"image": ("x.jpg", b"this is not an image", "image/jpeg")}},
            422,
            "not an image",
        ),
        (
            {"files": {"image": ("x.png", png_bytes((400, 400))[:300], "image/png")}},
            422,
            "damaged or truncated",
        ),
        ({"files": {"image": ("x.jpg", b"", "image/jpeg")}}, 422, "empty"),
        (
            {"files": {"image": ("x.jpg", b"\xff" * (3 * 1024 * 1024), "image/jpeg")}},
            413,
            "the limit is 2.1 MB",
        ),
        (
            {"files": {"image": ("x.jpg", b"\xff" * (2 * 1024 * 1024 + 10), "image/jpeg")}},
            422,
            "the limit is 2.1 MB",
        ),
        (
            {
                "content": b'{"text": "' + b"a" * (2 * 1024 * 1024) + b'"}',
                "headers": {"content-type": "application/json"},
            },
            413,
            "over 1024 KB",
        ),
        ({"data": {"text": "hi", "k_products": "many"}}, 422, "whole number"),
    ],
)
def test_bad_queries_get_4xx_json(
    client: TestClient, request_kwargs: dict, status: int, detail: str
) -> None:
    r = client.post("/v1/query", **request_kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert detail.lower() in body["detail"].lower()
    assert "Traceback" not in r.text
    assert client.get("/health").status_code == 200  # the service is unharmed


def test_unknown_product_is_404(client: TestClient) -> None:
    for path in ("/v1/products/nope/similar", "/v1/products/nope", "/v1/products/nope/image"):
        r = client.get(path)
        assert r.status_code == 404 and r.json() == {
            "error": "NotFound",
            "detail": r.json()["detail"],
        }
    assert "nope" in client.get("/v1/products/nope").json()["detail"]
    assert client.get("/v1/products/banana/similar", params={"k": 0}).status_code == 422


def test_openapi_documents_the_api(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/v1/query", "/v1/products/{product_id}/similar", "/health", "/ready"} <= set(
        spec["paths"]
    )
    assert client.get("/docs").status_code == 200


def _demo_products() -> list[dict]:
    import json

    lines = (DATA / "catalog" / "products.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.mark.parametrize(
    "filter_",
    [
        {"in_stock": True, "price_max": 1.0},
        {"category": "juice"},
        {"category": ["Plant-based", "Milk & dairy"], "in_stock": False},
        {"price_min": 2.0, "price_max": 2.5},
    ],
)
def test_filters_keep_only_matching_products_and_still_fill_k(
    client: TestClient, filter_: dict
) -> None:
    """Text, photo, and text with photo: every product returned matches the filter, and k
    are returned while the catalog has k matches (the filter works inside the search)."""
    from retrieval.catalog import Product
    from retrieval.filters import parse_filter

    f = parse_filter(filter_)
    matching = {
        row["id"]
        for row in _demo_products()
        if f.matches(
            Product(
                row["id"], row["title"], **{k: row.get(k) for k in ("price", "category", "stock")}
            )
        )
    }
    assert matching  # the case means something
    k = 6
    # every ranked match (?all=true): the filter must still fill k, gated or not
    body = client.post(
        "/v1/query?all=true",
        json={"text": "something fresh to eat", "k_products": k, "filter": filter_},
    ).json()
    ids = [p["id"] for p in body["products"]]
    assert set(ids) <= matching and len(ids) == min(k, len(matching))
    assert body["filter"] == f.public()
    with open(DATA / "catalog/images/Kiwi.jpg", "rb") as fh:
        photo = fh.read()
    for data in ({}, {"text": "fruit"}):
        r = client.post(
            "/v1/query?all=true",
            files={"image": ("kiwi.jpg", photo, "image/jpeg")},
            data={**data, "k_products": str(k), "filter": json.dumps(filter_)},
        )
        assert r.status_code == 200, r.text
        ids = [p["id"] for p in r.json()["products"]]
        assert set(ids) <= matching and len(ids) == min(k, len(matching))


def test_without_a_filter_nothing_is_reported(client: TestClient) -> None:
    body = client.post("/v1/query", json={"text": "apples"}).json()
    assert body["filter"] is None


@pytest.mark.parametrize(
    ("filter_", "field"),
    [
        ({"price_min": 3, "price_max": 1}, "filter.price_min"),
        ({"category": "Toys"}, "filter.category"),
        ({"price_max": "two euros"}, "filter.price_max"),
        ({"stock": 1}, "filter.stock"),
    ],
)
def test_bad_filters_are_a_422_naming_the_field(
    client: TestClient, filter_: dict, field: str
) -> None:
    r = client.post("/v1/query", json={"text": "apples", "filter": filter_})
    assert r.status_code == 422 and field in r.text
    r = client.post("/v1/query", data={"text": "apples", "filter": json.dumps(filter_)})
    assert r.status_code == 422 and field in r.text
    r = client.post("/v1/query", data={"text": "apples", "filter": "{not json"})
    assert r.status_code == 422 and "filter must be a JSON object" in r.text


def test_questions_past_the_gate_wait_and_past_the_waiting_line_get_503(
    demo_data_dir: Path,
) -> None:
    """/v1/query runs through the app's query gate: with one place and no waiting line, a
    question arriving while another runs is refused at once with Retry-After; JSON and form
    questions are both admitted through it."""
    import threading

    settings = demo_settings(demo_data_dir, query_concurrency=1, query_max_waiting=0)
    engine, qlog = open_store(settings)
    retriever = build_retriever(settings, qlog)
    try:
        with TestClient(create_app(settings, retriever)) as c:
            gate = c.app.state.query_gate  # type: ignore[attr-defined]
            assert (gate.concurrency, gate.max_waiting) == (1, 0)
            assert c.post("/v1/query", json={"text": "where is my order?"}).status_code == 200
            assert c.post("/v1/query", data={"text": "bananas"}).status_code == 200
            assert gate.stats().admitted == 2
            release = threading.Event()
            running = c.portal.start_task_soon(gate.run, release.wait, 10)
            for _ in range(100):  # until the blocker holds the one place
                if gate.stats().running == 1:
                    break
                threading.Event().wait(0.01)
            refused = c.post("/v1/query", json={"text": "where is my order?"})
            release.set()
            running.result(10)
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
            assert refused.json()["error"] == "Overloaded"
            assert gate.stats().refused == 1
            assert c.post("/v1/query", json={"text": "where is my order?"}).status_code == 200
    finally:
        qlog.close()
        engine.dispose()
