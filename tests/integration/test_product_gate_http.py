"""Products only where they belong, on the demo service through HTTP with the real packaged
models: an FAQ question shows no products, a product question does, ?all=true shows every
ranked match, Chinese questions are held to the setting, and cards carry the catalog's
other-language names."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from helpers import demo_settings


@pytest.fixture()
def client(demo_data_dir: Path):  # noqa: ANN201
    from retrieval.runtime import build_retriever
    from retrieval.service.app import create_app

    settings = demo_settings(demo_data_dir)
    with TestClient(create_app(settings, build_retriever(settings))) as c:
        yield c


@pytest.mark.models
def test_faq_questions_show_no_products_and_product_questions_do(client: TestClient) -> None:
    faq = client.post("/v1/query", json={"text": "how long does delivery take?"}).json()
    assert faq["product_gate"]["about_products"] is False
    assert faq["products"] == []
    assert faq["product_gate"]["measure"] == "text cosine"
    everything = client.post("/v1/query?all=true", json={"text": "how long does delivery take?"})
    assert len(everything.json()["products"]) > 0  # still there when asked for
    scores = [p["text_score"] for p in everything.json()["products"]]
    assert max(scores) < everything.json()["product_gate"]["threshold"]

    apples = client.post("/v1/query", json={"text": "do you have apples?"}).json()
    gate = apples["product_gate"]
    assert gate["about_products"] is True and apples["products"]
    assert all(p["text_score"] >= gate["threshold"] for p in apples["products"])
    assert any("apple" in p["title"].lower() for p in apples["products"])
    # the demo catalog's Chinese names reach the API
    assert all(p["names"].get("zh") for p in apples["products"])

    zh = client.post("/v1/query", json={"text": "有牛油果吗"}).json()
    assert zh["product_gate"]["about_products"] is True
    assert "Chinese" in zh["product_gate"]["source"]
    assert client.post("/v1/query?all=maybe", json={"text": "hi"}).status_code == 422
