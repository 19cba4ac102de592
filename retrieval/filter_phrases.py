"""A shopper's own words for a product filter, in English and Chinese: "in stock", "under 2
euros", "between 1 and 3 €", "有货的", "两欧元以下", "5块以上".

:func:`filter_from_text` finds them (pure regular expressions: no model, deterministic) and
returns the :class:`~retrieval.filters.ProductFilter` they ask for, with the question minus
those words (the bot's action searches with the shopper's whole message, so the query log
keeps what was asked, and uses only the filter). :func:`describe` says in the shopper's language which
filter was applied, so the bot can show it beside the products.

A price needs a currency word or sign (€, eur, euro(s), $, dollar(s), 欧/欧元, 元, 块):
"under 2 days" and "2天以内" are about delivery, not price. Relative requests ("cheaper",
"便宜一点的") need the products shown before, so they belong to the conversation, not here.
Category words are left to the search itself: the question's words already rank the
category's products first.
"""

from __future__ import annotations

import re

from .filters import ProductFilter

__all__ = ["describe", "filter_from_text"]

_NUM = r"(\d+(?:[.,]\d{1,2})?)"
_CUR_EN = r"(?:€|eur(?:os?)?\b|\$|usd\b|dollars?\b|bucks\b)"
_CN_DIGITS = "零〇一二两三四五六七八九十"
_NUM_ZH = rf"(\d+(?:\.\d{{1,2}})?|[{_CN_DIGITS}]+(?:点[{_CN_DIGITS[:-1]}]+)?)"
_CUR_ZH = r"(?:欧元|欧|元|块钱|块|美元)"


def _price_en(before: str) -> str:
    """A price after ``before``: a number with a currency sign or word on either side."""
    return rf"\b(?:{before})\s+(?:{_CUR_EN}\s*{_NUM}|{_NUM}\s*{_CUR_EN})"


_EN_STOCK = re.compile(
    r"\b(?:(?:that are |which are |what'?s |what is )?in[- ]stock|available (?:now|today)|"
    r"on hand|ready to ship)\b",
    re.I,
)
_EN_BETWEEN = re.compile(
    rf"\b(?:between|from)\s+{_CUR_EN}?\s*{_NUM}\s*{_CUR_EN}?\s*(?:and|to|-)\s*"
    rf"(?:{_CUR_EN}\s*{_NUM}|{_NUM}\s*{_CUR_EN})",
    re.I,
)
_EN_MAX = re.compile(
    _price_en(
        r"under|below|less than|cheaper than|no more than|not more than|at most|max(?:imum)?|"
        r"up to|within|for less than|for under|at or below"
    ),
    re.I,
)
_EN_MIN = re.compile(
    _price_en(r"over|above|more than|at least|from|min(?:imum)?|starting at"), re.I
)
_ZH_STOCK = re.compile(r"(?:有货|现货|有库存|还有货|在售)(?:的)?")
_ZH_BETWEEN = re.compile(
    rf"{_NUM_ZH}\s*{_CUR_ZH}?\s*(?:到|至|-|~)\s*{_NUM_ZH}\s*{_CUR_ZH}(?:之间)?(?:的)?"
)
_ZH_MAX_AFTER = re.compile(rf"{_NUM_ZH}\s*{_CUR_ZH}\s*(?:以下|以内|之内|内|或更少)(?:的)?")
_ZH_MAX_BEFORE = re.compile(
    rf"(?:低于|少于|不超过|不到|小于|便宜于|最多)\s*{_NUM_ZH}\s*{_CUR_ZH}(?:的)?"
)
_ZH_MIN_AFTER = re.compile(rf"{_NUM_ZH}\s*{_CUR_ZH}\s*(?:以上|或更多)(?:的)?")
_ZH_MIN_BEFORE = re.compile(rf"(?:高于|超过|多于|大于|至少)\s*{_NUM_ZH}\s*{_CUR_ZH}(?:的)?")


def _zh_number(text: str) -> float:
    """Arabic digits, or Chinese numerals up to 99 with an optional 点 decimal (两 = 2)."""
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    whole, _, frac = text.partition("点")
    digit = {c: i for i, c in enumerate("零一二三四五六七八九")} | {"两": 2, "〇": 0}
    if "十" in whole:
        tens, _, ones = whole.partition("十")
        value = (digit[tens] if tens else 1) * 10 + (digit[ones] if ones else 0)
    else:
        value = 0
        for c in whole:
            value = value * 10 + digit[c]
    if frac:
        value += float("0." + "".join(str(digit[c]) for c in frac))
    return float(value)


def _en_number(text: str) -> float:
    return float(text.replace(",", "."))


def _first(groups: tuple[str | None, ...]) -> str:
    return next(g for g in groups if g)


def filter_from_text(text: str) -> tuple[ProductFilter, str]:
    """The filter the shopper's words ask for, and the text without them (spaces tidied;
    the original text when nothing was found). The empty filter when none is asked for."""
    price_min: float | None = None
    price_max: float | None = None
    in_stock: bool | None = None
    spans: list[tuple[int, int]] = []

    def take(pattern: re.Pattern[str]) -> re.Match[str] | None:
        for m in pattern.finditer(text):
            if not any(a < m.end() and m.start() < b for a, b in spans):
                spans.append(m.span())
                return m
        return None

    if m := take(_EN_BETWEEN):
        nums = [g for g in m.groups() if g]
        price_min, price_max = sorted((_en_number(nums[0]), _en_number(nums[1])))
    if m := take(_ZH_BETWEEN):
        price_min, price_max = sorted((_zh_number(m.group(1)), _zh_number(m.group(2))))
    if m := take(_EN_MAX):
        price_max = _en_number(_first(m.groups()))
    if m := take(_ZH_MAX_AFTER) or take(_ZH_MAX_BEFORE):
        price_max = _zh_number(m.group(1))
    if m := take(_EN_MIN):
        price_min = _en_number(_first(m.groups()))
    if m := take(_ZH_MIN_AFTER) or take(_ZH_MIN_BEFORE):
        price_min = _zh_number(m.group(1))
    if take(_EN_STOCK) or take(_ZH_STOCK):
        in_stock = True
    if price_min is not None and price_max is not None and price_min > price_max:
        price_min = None  # "over 5 under 2": keep the ceiling, the safer reading
    f = ProductFilter(frozenset(), price_min, price_max, in_stock)
    if f.empty:
        return f, text
    rest = text
    for a, b in sorted(spans, reverse=True):
        rest = rest[:a] + " " + rest[b:]
    rest = re.sub(r"\s+", " ", rest).strip(" ,，。.?？!！")
    return f, rest or text


def describe(f: ProductFilter, lang: str = "en") -> str:
    """Which filter was applied, in the shopper's language ('en' or 'zh')."""
    if lang != "zh":
        return "Showing only products " + f.describe().replace("price ", "priced ")
    parts = []
    if f.in_stock:
        parts.append("有货")
    if f.price_min is not None and f.price_max is not None:
        parts.append(f"价格 {f.price_min:g}–{f.price_max:g}")
    elif f.price_max is not None:
        parts.append(f"价格 {f.price_max:g} 以下")
    elif f.price_min is not None:
        parts.append(f"价格 {f.price_min:g} 以上")
    if f.categories:
        parts.append("类别：" + "、".join(sorted(f.categories)))
    return "只显示" + "，".join(parts) + "的商品"
