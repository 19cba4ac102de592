"""The shop page's recommendation routes on the real app (TestClient, real SQLite): clicks
are checked, bounded and counted; popular and "goes well with" answer from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from retrieval.service import create_app
from retrieval.service.routes_recommend import ClickLimiter

from secfixtures import close_retriever, settings_for, small_retriever


@pytest.fixture()
def client(tmp_path: Path):  # noqa: ANN201
    settings = settings_for(tmp_path)
    r = small_retriever(settings)
    with TestClient(create_app(settings, r)) as c:
        yield c
    close_retriever(r)


def test_clicks_are_checked_and_limited(client: TestClient) -> None:
    assert client.post("/shop/api/click", content=b"not json").status_code == 422
    assert client.post("/shop/api/click", json={"product_id": ""}).status_code == 422
    assert client.post("/shop/api/click", json={"product_id": "x" * 300}).status_code == 422
    r = client.post("/shop/api/click", json={"product_id": "no-such-product"})
    assert r.status_code == 404 and "no-such-product" in r.json()["detail"]
    client.app.state.click_limiter = ClickLimiter(per_minute=2)
    codes = [
        client.post("/shop/api/click", json={"product_id": "red-apple"}).status_code
        for _ in range(3)
    ]
    assert codes == [204, 204, 429]
    assert client.cookies.get("shop_conversation")  # counted under the page's conversation


def test_popular_and_together_answer_from_the_clicks(client: TestClient) -> None:
    empty = client.get("/shop/api/popular").json()
    # nothing in the log: the best-stocked products (the only one in stock), said so
    assert empty["basis"] == "best-stocked" and empty["window_days"] == 7
    assert [p["id"] for p in empty["products"]] == ["red-apple"]
    assert client.get("/v1/popular").json() == empty  # the same for API callers
    for _ in range(2):  # two shoppers (two cookies) click the apple
        with TestClient(client.app) as shopper:
            assert (
                shopper.post("/shop/api/click", json={"product_id": "red-apple"}).status_code == 204
            )
            shopper.post("/shop/api/click", json={"product_id": "banana"})
    popular = client.get("/shop/api/popular?days=1&k=3").json()
    assert popular["basis"] == "interest"
    # the banana is out of stock: not shown however popular
    assert [(p["id"], p["score"], p["basis"]) for p in popular["products"]] == [
        ("red-apple", 2.0, "interest")
    ]
    together = client.get("/shop/api/together/red-apple").json()
    assert client.get("/v1/products/red-apple/together").json() == together
    assert together["product_id"] == "red-apple"
    assert all(p["id"] != "red-apple" and p["id"] != "banana" for p in together["products"])
    assert client.get("/shop/api/together/nope").status_code == 404
    assert client.get("/shop/api/popular?days=0").status_code == 422
    assert client.get("/shop/api/popular?k=1000").status_code == 422
