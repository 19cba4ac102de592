"""What the bot says when asked what is popular or what goes well with a product: the
recommendations of :mod:`retrieval.recommend` on the live catalog and the shoppers'
interest (:class:`~retrieval.store.events.Interests`), narrowed by their preferences, with
the line that says what they are based on."""

from __future__ import annotations

from ..catalog import Product
from ..filters import ProductFilter
from ..product_search import ProductMatch
from ..recommend import best_stocked, popular, together
from ..retriever import Retriever
from ..store.events import Interests
from .bot_replies import preferred_similar

__all__ = ["POPULAR_DAYS", "TOGETHER_DAYS", "recommendations", "say_recommend"]

POPULAR_DAYS = 7.0  # "popular this week"
TOGETHER_DAYS = 30.0  # "customers who asked about X also asked about Y": a month of traffic

_RECOMMEND = {
    "popular": ("Popular{category} in the last {days} days:", "最近 {days} 天{category}热销："),
    "popular_none": (
        "Too few shoppers asked about products{category} in the last {days} days to say what is popular; here are our best-stocked ones:",
        "最近 {days} 天{category}的咨询太少，暂时无法判断哪些商品热销；以下是库存最充足的商品：",
    ),
    "together": ("Shoppers who asked about {name} also asked about:", "咨询{name}的顾客也问了："),
    "together_none": (
        "Nothing is asked about together with {name} often enough yet; similar products:",
        "目前还没有常与{name}一起咨询的商品；类似的商品：",
    ),
}  # fmt: skip


def say_recommend(key: str, lang: str, **values: str) -> str:
    en, zh = _RECOMMEND[key]
    category = values.pop("category", "")
    where = (f"（{category}）" if lang == "zh" else f" in {category}") if category else ""
    return (zh if lang == "zh" else en).format(category=where, **values)


def category_named(words: str, categories: list[str]) -> str | None:
    """The category (of the catalog's normalised ``categories``) the message's own words
    name ("best sellers in fruit"), if any."""
    said = {w.casefold() for w in words.split()}
    for category in categories:
        if said & ({w.strip("&,") for w in category.split()} - {""}):
            return category
    return None


def recommendations(
    retriever: Retriever,
    interests: Interests | None,
    product_id: str | None,
    words: str,
    wanted: ProductFilter | None,
    lang: str,
    k: int = 4,
) -> tuple[list[str], list[ProductMatch], str]:
    """Popular products (``product_id`` None; a category the message's ``words`` name) or
    what goes well with ``product_id``: the line to say, the cards, the reason to log."""
    snap = retriever.snapshot
    catalog = snap.catalog
    days = POPULAR_DAYS if product_id is None else TOGETHER_DAYS
    sets = interests.sets(days, None, snap.title_index) if interests is not None else {}

    def ok(p: Product) -> bool:
        return wanted is None or wanted.matches(p)

    if product_id is None:
        category = category_named(words, snap.catalog_columns.category_names)
        recs = [r for r in popular(sets, catalog, 3 * k, category) if ok(r.product)][:k]
        key = "popular"
        if not recs:  # too little in the log: the best-stocked ones, said so
            stocked = best_stocked(catalog, 6 * k, category, snap.catalog_columns)
            recs, key = [r for r in stocked if ok(r.product)][:k], "popular_none"
        line = say_recommend(key, lang, days=f"{days:g}", category=category or "")
        reason = f"popular in {days:g} days"
    else:
        ref = catalog.get(product_id)
        name = ref.name(lang) if ref is not None else product_id
        similar = preferred_similar(retriever, wanted)

        def neighbours(pid: str, n: int) -> list[tuple[Product, float]]:
            return [(m.product, m.score) for m in similar(pid, n, None)]

        recs = [r for r in together(product_id, sets, catalog, 2 * k, neighbours) if ok(r.product)]
        recs = recs[:k]
        key = "together" if any(r.basis == "co-occurrence" for r in recs) else "together_none"
        line = say_recommend(key, lang, name=name, days=f"{days:g}")
        reason = f"goes well with {product_id}"
    matches = [ProductMatch(r.product, r.score, None, None, r.basis) for r in recs]
    return [line], matches, reason
