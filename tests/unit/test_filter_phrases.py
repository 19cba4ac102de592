"""A shopper's words for a product filter, English and Chinese: what is understood, what is
left to embed, and what must not be read as a filter."""

from __future__ import annotations

import pytest

from retrieval.filter_phrases import describe, filter_from_text
from retrieval.filters import ProductFilter


@pytest.mark.parametrize(
    ("text", "price_min", "price_max", "in_stock", "rest"),
    [
        ("oat milk under 2 euros", None, 2.0, None, "oat milk"),
        ("do you have apples in stock?", None, None, True, "do you have apples"),
        ("any juice that is below €1.50", None, 1.5, None, "any juice that is"),
        ("cheese for less than 3,20 eur please", None, 3.2, None, "cheese please"),
        ("something in stock under $5", None, 5.0, True, "something"),
        ("vegetables between 1 and 2 euros", 1.0, 2.0, None, "vegetables"),
        ("fruit from €1 to €3", 1.0, 3.0, None, "fruit"),
        ("milk over 2 euros", 2.0, None, None, "milk"),
        ("有货的牛奶", None, None, True, "牛奶"),
        ("两欧元以下的水果", None, 2.0, None, "水果"),
        ("有没有5块以上的果汁", 5.0, None, None, "有没有 果汁"),
        ("不超过三欧的蔬菜", None, 3.0, None, "蔬菜"),
        ("一到三欧元之间的苹果", 1.0, 3.0, None, "苹果"),
        ("十二元以内的奶酪，有现货吗", None, 12.0, True, "奶酪，有 吗"),
        ("两点五欧以下", None, 2.5, None, "两点五欧以下"),
    ],
)
def test_filters_are_read_from_the_shoppers_words(
    text: str, price_min: float | None, price_max: float | None, in_stock: bool | None, rest: str
) -> None:
    f, left = filter_from_text(text)
    assert (f.price_min, f.price_max, f.in_stock) == (price_min, price_max, in_stock)
    assert left == rest


@pytest.mark.parametrize(
    "text",
    [
        "how long does delivery take",
        "I want 2 avocados",
        "delivery within 2 days?",
        "under the sink cleaner",
        "what is the price of 3 bananas",
        "2天以内能送到吗",
        "我要三个苹果",
        "over there",
        "",
    ],
)
def test_other_numbers_are_not_a_filter(text: str) -> None:
    f, left = filter_from_text(text)
    assert f.empty and left == text


def test_the_applied_filter_is_said_in_the_shoppers_language() -> None:
    f = ProductFilter(frozenset(), None, 2.0, True)
    assert describe(f, "en") == "Showing only products in stock, priced up to 2"
    assert describe(f, "zh") == "只显示有货，价格 2 以下的商品"
    assert describe(ProductFilter(price_min=1.0, price_max=3.0), "zh") == "只显示价格 1–3的商品"
