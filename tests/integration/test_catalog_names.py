"""The demo catalog's Chinese product names find the products with the real models."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import demo_settings


@pytest.mark.models
@pytest.mark.parametrize(
    ("question", "product"),
    [
        ("牛油果", "avocado"),
        ("有西瓜吗", "watermelon"),
        ("燕麦奶", "oatly-oat-milk"),
        ("李子", "plum"),
    ],
)
def test_chinese_product_names_are_found(demo_data_dir: Path, question: str, product: str) -> None:
    """The misses the issue reported (avocado -> orange, watermelon -> avocado, oat milk ->
    cow's milk, plum -> lime) with the demo catalog's Chinese names."""
    from retrieval.runtime import build_retriever

    retriever = build_retriever(demo_settings(demo_data_dir))
    r = retriever.query(question, k_products=3, prefer_products=True)
    assert r.products[0].product.id == product
    assert r.products[0].product.card("zh")["title"] != r.products[0].product.title
