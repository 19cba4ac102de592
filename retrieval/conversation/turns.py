"""One chat turn against what the conversation remembers: a new question, a follow-up about
the products just shown, a language switch, or a clarifying question.

:func:`plan_turn` is pure: from what the message asks (:func:`~.followup.read_followup`)
and the conversation's :class:`~.context.Context` it decides what kind of turn this is.
:func:`answer_followup` then answers a follow-up from the catalog and the fused product
vectors (cheaper / bigger / smaller / similar / other brands are the referenced product's
nearest neighbours among the products that qualify), in the shopper's language. Rendering into chat messages
is the bot action's job (:mod:`retrieval.service.actions`).

- A message that names its own subject ("is the kiwi in stock?", "how much does delivery
  cost?") is a **new question**, even with a pronoun in it: the search answers it afresh.
- A message with a reference or an aspect and nothing else ("how much is it?", "the second
  one", "anything cheaper?", 第二个多少钱) is a **follow-up** about the products last shown:
  the card at the named position, all of them ("how much are they?"), or else the product
  the latest follow-up was about (after "the second one", "it" is the second one), or the
  first card.
- A follow-up with nothing shown to refer to, or a position past the last card, gets a
  **clarifying question**.
- "in Chinese please" alone **switches the language** and repeats the last answer in it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..catalog import Product
from ..product_search import ProductMatch
from ..sizes import parse_size
from .context import Context
from .followup import FollowUp

__all__ = ["FollowUpAnswer", "TurnPlan", "answer_followup", "plan_turn"]


@dataclass(frozen=True)
class TurnPlan:
    """What to do with a message: ``kind`` is ``new`` (search afresh), ``followup`` (answer
    ``aspect`` about the ``targets``, product ids from the context; ``together`` included:
    "what goes well with it?"), ``language`` (repeat the last answer in ``language``),
    ``popular`` (the popular products), ``together`` (what goes well with the product the
    message names: search it first) or ``clarify`` (``reason``: ``nothing shown`` or
    ``position``, with ``shown`` the number of cards)."""

    kind: str
    aspect: str | None = None
    targets: tuple[str, ...] = ()
    language: str | None = None
    reason: str = ""
    shown: int = 0


def plan_turn(f: FollowUp, ctx: Context) -> TurnPlan:
    """Decide the kind of turn (see the module)."""
    if f.language and not f.has_subject and f.aspect is None and f.position is None:
        return TurnPlan("language", language=f.language)
    if f.aspect == "popular":  # "what's popular?", "best sellers in fruit?"
        return TurnPlan("popular", language=f.language)
    if f.aspect == "together" and f.has_subject:  # "what goes well with avocado?"
        return TurnPlan("together", language=f.language)
    if f.has_subject or not (f.refers or f.aspect is not None):
        return TurnPlan("new", language=f.language)
    if not ctx.products:
        return TurnPlan("clarify", reason="nothing shown", language=f.language)
    shown = len(ctx.products)
    if f.position is not None:
        i = shown - 1 if f.position == -1 else f.position - 1
        if not 0 <= i < shown:
            return TurnPlan("clarify", reason="position", shown=shown, language=f.language)
        targets: tuple[str, ...] = (ctx.products[i],)
    elif f.plural and f.aspect in ("price", "stock"):
        targets = ctx.products
    elif ctx.focus is not None and ctx.focus in ctx.products:
        targets = (ctx.focus,)  # "it" after "the second one" is the second one
    else:
        targets = ctx.products[:1]
    return TurnPlan("followup", aspect=f.aspect or "details", targets=targets, language=f.language)


@dataclass
class FollowUpAnswer:
    """A follow-up's answer: message lines, product cards (matches with their scores; the
    referenced product itself scores 1.0) and what the conversation shows afterwards."""

    lines: list[str]
    products: list[ProductMatch] = field(default_factory=list)
    reason: str = ""  # for the query log, in English

    @property
    def product_ids(self) -> list[str]:
        return [m.product.id for m in self.products]


def _money(p: Product) -> str:
    return f"{p.price:.2f} {p.currency}".strip() if p.price is not None else ""


def _as_match(p: Product) -> ProductMatch:
    return ProductMatch(p, 1.0, None, None, "reference")


_TEXT = {
    "price": ("{name} costs {price}.", "{name}的价格是 {price}。"),
    "no_price": ("I have no price for {name}; an agent can tell you.", "{name}暂无价格信息，客服可以为您查询。"),
    "in_stock": ("Yes, {name} is in stock.", "{name}有货。"),
    "out_of_stock": (
        "Sorry, {name} is out of stock at the moment.",
        "抱歉，{name}目前缺货。",
    ),
    "no_stock": ("I cannot see the stock of {name}; an agent can check.", "暂时无法查看{name}的库存，客服可以为您确认。"),
    "alternatives": ("Similar products in stock:", "有货的类似商品："),
    "cheaper": ("Cheaper than {name} ({price}):", "比{name}（{price}）便宜的商品："),
    "cheapest": (
        "{name} is already the lowest-priced product in {category}.",
        "{name}已经是{category}类中价格最低的商品。",
    ),
    "similar": ("Products similar to {name}:", "与{name}类似的商品："),
    "other_brands": ("Other brands than {brand}:", "{brand}以外的其他品牌："),
    "no_other_brands": ("We have no other brand of this in {category}; similar products:", "{category}类中没有其他品牌，类似的商品："),
    "no_brand": ("The catalog names no brand for {name}; similar products:", "目录中没有{name}的品牌信息，类似的商品："),
    "bigger": ("Bigger than {name} ({size}):", "比{name}（{size}）大的："),
    "smaller": ("Smaller than {name} ({size}):", "比{name}（{size}）小的："),
    "biggest": ("{name} ({size}) is already the biggest size we have in {category}.", "{name}（{size}）已经是{category}类中最大的规格。"),
    "smallest": ("{name} ({size}) is already the smallest size we have in {category}.", "{name}（{size}）已经是{category}类中最小的规格。"),
    "no_size": ("The catalog gives no size for {name}; similar products:", "目录中没有{name}的规格信息，类似的商品："),
    "details": ("{name}: {description}", "{name}：{description}"),
    "details_short": ("Here is {name}.", "这是{name}。"),
}  # fmt: skip


def _say(key: str, lang: str, **values: str) -> str:
    en, zh = _TEXT[key]
    return (zh if lang == "zh" else en).format(**values)


def answer_followup(
    plan: TurnPlan,
    lang: str,
    product: Callable[[str], Product | None],
    similar: Callable[[str, int, Callable[[Product], bool] | None], list[ProductMatch]],
    k: int = 4,
) -> FollowUpAnswer | None:
    """Answer a ``followup`` plan in ``lang`` ('en' or 'zh'); None when none of its target
    products is in the catalog any more (the caller asks the shopper to clarify).
    ``product(id)`` reads the live catalog; ``similar(id, k, keep)`` is the retriever's
    nearest products to a catalog product among those ``keep`` accepts."""
    targets = [p for p in (product(pid) for pid in plan.targets) if p is not None]
    if not targets:
        return None
    ref = targets[0]
    name = ref.name(lang)
    aspect = plan.aspect or "details"
    if aspect == "price":
        lines = [
            _say("price", lang, name=p.name(lang), price=_money(p))
            if p.price is not None
            else _say("no_price", lang, name=p.name(lang))
            for p in targets
        ]
        return FollowUpAnswer(lines, [_as_match(p) for p in targets], f"price of {_ids(targets)}")
    if aspect == "stock":
        lines, cards = [], [_as_match(p) for p in targets]
        for p in targets:
            key = "no_stock" if p.stock is None else "in_stock" if p.stock > 0 else "out_of_stock"
            lines.append(_say(key, lang, name=p.name(lang)))
        if len(targets) == 1 and ref.stock == 0:
            others = similar(ref.id, k - 1, lambda p: bool(p.stock) and p.category == ref.category)
            if others:
                lines.append(_say("alternatives", lang))
                cards += others
        return FollowUpAnswer(lines, cards, f"stock of {_ids(targets)}")
    if aspect == "cheaper":
        if ref.price is None:
            matches = similar(ref.id, k, None)
            return FollowUpAnswer(
                [_say("no_price", lang, name=name)], matches, "no price to compare"
            )
        price = ref.price
        matches = similar(
            ref.id,
            k,
            lambda p: p.price is not None and p.price < price and p.category == ref.category,
        )
        if not matches:
            line = _say("cheapest", lang, name=name, category=ref.category or "-")
            return FollowUpAnswer([line], [_as_match(ref)], f"nothing cheaper than {ref.id}")
        line = _say("cheaper", lang, name=name, price=_money(ref))
        return FollowUpAnswer([line], matches, f"cheaper than {ref.id}")
    if aspect in ("bigger", "smaller"):
        mine = parse_size(ref.size)
        if mine is None:
            matches = similar(ref.id, k, lambda p: p.category == ref.category)
            return FollowUpAnswer([_say("no_size", lang, name=name)], matches, "no size")
        dimension, amount = mine
        bigger = aspect == "bigger"

        def fits(p: Product) -> bool:
            size = parse_size(p.size)
            return (
                p.category == ref.category
                and size is not None
                and size[0] == dimension
                and (size[1] > amount if bigger else size[1] < amount)
            )

        matches = similar(ref.id, k, fits)
        if not matches:
            key = "biggest" if bigger else "smallest"
            line = _say(key, lang, name=name, size=ref.size, category=ref.category or "-")
            return FollowUpAnswer([line], [_as_match(ref)], f"no {aspect} size than {ref.id}")
        line = _say(aspect, lang, name=name, size=ref.size)
        return FollowUpAnswer([line], matches, f"{aspect} than {ref.id}")
    if aspect == "similar":
        matches = similar(ref.id, k, None)
        return FollowUpAnswer([_say("similar", lang, name=name)], matches, f"similar to {ref.id}")
    if aspect == "other_brands":
        if not ref.brand:
            matches = similar(ref.id, k, lambda p: p.category == ref.category)
            return FollowUpAnswer([_say("no_brand", lang, name=name)], matches, "no brand")
        brand = ref.brand.casefold()
        matches = similar(
            ref.id, k, lambda p: p.category == ref.category and p.brand.casefold() != brand
        )
        if not matches:
            matches = similar(ref.id, k, lambda p: p.category == ref.category)
            line = _say("no_other_brands", lang, category=ref.category or "-")
            return FollowUpAnswer([line], matches, f"no other brand than {ref.brand}")
        line = _say("other_brands", lang, brand=ref.brand)
        return FollowUpAnswer([line], matches, f"other brands than {ref.brand}")
    # details, or a bare reference ("the second one")
    line = (
        _say("details", lang, name=name, description=ref.description)
        if ref.description
        else _say("details_short", lang, name=name)
    )
    return FollowUpAnswer([line], [_as_match(ref)], f"details of {ref.id}")


def _ids(products: list[Product]) -> str:
    return ", ".join(p.id for p in products)
