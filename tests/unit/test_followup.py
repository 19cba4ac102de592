"""Follow-up questions: what a message refers to and asks (pure), what kind of turn it is
against the conversation's context (pure), and the answers from a small catalog."""

from __future__ import annotations

import pytest

from retrieval.catalog import Product
from retrieval.conversation.context import Context
from retrieval.conversation.followup import read_followup
from retrieval.conversation.turns import TurnPlan, answer_followup, plan_turn
from retrieval.product_search import ProductMatch


@pytest.mark.parametrize(
    ("text", "aspect", "position", "pronoun"),
    [
        ("how much is it?", "price", None, True),
        ("what does the second one cost?", "price", 2, False),
        ("is it in stock?", "stock", None, True),
        ("do you have it available?", "stock", None, True),
        ("anything cheaper?", "cheaper", None, False),
        ("show me something similar", "similar", None, False),
        ("do you have it from another brand?", "other_brands", None, True),
        ("tell me more about the third one", "details", 3, False),
        ("the last one?", None, -1, False),
        ("number 2 please", None, 2, False),
        ("and that one?", None, None, True),
        ("多少钱", "price", None, False),
        ("第二个多少钱", "price", 2, False),
        ("这个有货吗", "stock", None, True),
        ("有便宜一点的吗", "cheaper", None, False),
        ("有类似的吗", "similar", None, False),
        ("有其他牌子的吗", "other_brands", None, False),
        ("最后一个呢", None, -1, False),
        ("第三款", None, 3, False),
        ("do you have a bigger one?", "bigger", None, False),
        ("I'd rather have something cheaper", "cheaper", None, False),
        ("a smaller pack?", "smaller", None, False),
        ("有大一点的吗", "bigger", None, False),
    ],
)
def test_follow_ups_have_no_subject_of_their_own(
    text: str, aspect: str | None, position: int | None, pronoun: bool
) -> None:
    f = read_followup(text)
    assert (f.aspect, f.position, f.pronoun) == (aspect, position, pronoun)
    assert f.rest == "" and not f.has_subject


@pytest.mark.parametrize(
    ("text", "subject"),
    [
        ("how long does delivery take?", "delivery"),
        ("do you have bananas?", "bananas"),
        ("is the kiwi in stock?", "kiwi"),
        ("how much does delivery cost?", "delivery"),
        ("can I return it?", "return"),
        ("有牛油果吗", "牛油果"),
        ("那运费呢", "运费"),
    ],
)
def test_a_message_that_names_its_subject_is_a_new_question(text: str, subject: str) -> None:
    f = read_followup(text)
    assert subject in f.rest
    assert plan_turn(f, Context(products=("a", "b"))).kind == "new"


@pytest.mark.parametrize(
    ("text", "lang"),
    [("in Chinese please", "zh"), ("can you say that in English?", "en"), ("用中文说", "zh"),
     ("请用英文回答", "en")],
)  # fmt: skip
def test_a_language_request_alone_switches_language(text: str, lang: str) -> None:
    plan = plan_turn(read_followup(text), Context(products=("a",)))
    assert plan == TurnPlan("language", language=lang)


def test_plurals_ask_about_every_card() -> None:
    f = read_followup("how much are they?")
    assert f.plural and f.aspect == "price"
    plan = plan_turn(f, Context(products=("a", "b", "c")))
    assert plan.targets == ("a", "b", "c")


def test_what_a_follow_up_refers_to() -> None:
    ctx = Context(products=("a", "b", "c"))
    assert plan_turn(read_followup("how much is it?"), ctx).targets == ("a",)
    assert plan_turn(read_followup("the second one"), ctx) == TurnPlan(
        "followup", aspect="details", targets=("b",)
    )
    assert plan_turn(read_followup("is the last one in stock?"), ctx).targets == ("c",)
    # after "the second one", "it" is the second one
    assert plan_turn(read_followup("is it in stock?"), ctx.focused("b")).targets == ("b",)
    # a new topic forgets the focus
    assert ctx.focused("b").showing(["x", "y"]).focus is None


def test_nothing_to_refer_to_or_a_card_too_far_gets_a_clarifying_question() -> None:
    assert plan_turn(read_followup("is it in stock?"), Context()).reason == "nothing shown"
    # an FAQ answer has no products to be "it"
    assert plan_turn(read_followup("第二个多少钱"), Context(faq_id="x")).kind == "clarify"
    plan = plan_turn(read_followup("number 5"), Context(products=("a", "b")))
    assert (plan.kind, plan.reason, plan.shown) == ("clarify", "position", 2)


CATALOG = {
    p.id: p
    for p in [
        Product("oat", "Oat Milk", "An oat drink.", 2.44, "EUR", "Plant", 8, brand="Oatly",
                size="1 l"),
        Product("soy", "Soy Milk", "", 2.31, "EUR", "Plant", 0, brand="Alpro",
                names=(("zh", "豆奶"),), size="1500 ml"),
        Product("oatgurt", "Oatgurt", "", 1.89, "EUR", "Plant", 12, brand="Oatly", size="1 kg"),
        Product("milk", "Milk", "", 1.02, "EUR", "Dairy", 25, brand="Arla"),
        Product("nobrand", "Rice Drink", "", 3.10, "EUR", "Plant", None),
    ]
}  # fmt: skip
# a fixed similarity order: what the retriever's nearest-neighbour search would return
ORDER = ["oatgurt", "soy", "milk", "nobrand", "oat"]


def similar(pid: str, k: int, keep) -> list[ProductMatch]:  # noqa: ANN001
    out = [CATALOG[i] for i in ORDER if i != pid and (keep is None or keep(CATALOG[i]))]
    return [ProductMatch(p, 0.9 - 0.1 * n, None, None, "x") for n, p in enumerate(out[:k])]


def ask(aspect: str, targets: tuple[str, ...], lang: str = "en"):  # noqa: ANN201
    return answer_followup(TurnPlan("followup", aspect, targets), lang, CATALOG.get, similar)


def test_price_and_stock_answers() -> None:
    a = ask("price", ("oat",))
    assert a.lines == ["Oat Milk costs 2.44 EUR."] and a.product_ids == ["oat"]
    assert ask("price", ("soy",), "zh").lines == ["豆奶的价格是 2.31 EUR。"]
    assert ask("stock", ("oat",)).lines == ["Yes, Oat Milk is in stock."]
    # out of stock: in-stock alternatives of its category follow the product itself
    out = ask("stock", ("soy",))
    assert out.lines[0] == "Sorry, Soy Milk is out of stock at the moment."
    assert out.product_ids[0] == "soy" and "milk" not in out.product_ids
    assert all(CATALOG[i].stock for i in out.product_ids[1:])
    assert "cannot see the stock" in ask("stock", ("nobrand",)).lines[0]


def test_cheaper_means_the_same_category_and_a_lower_price() -> None:
    a = ask("cheaper", ("oat",))
    assert a.product_ids == ["oatgurt", "soy"]  # not the cheaper dairy milk
    assert all(CATALOG[i].price < 2.44 for i in a.product_ids)
    cheapest = ask("cheaper", ("oatgurt",))
    assert cheapest.product_ids == ["oatgurt"] and "lowest-priced" in cheapest.lines[0]


def test_other_brands_and_similar() -> None:
    assert ask("other_brands", ("oat",)).product_ids == ["soy", "nobrand"]
    assert ask("similar", ("oat",)).product_ids == ["oatgurt", "soy", "milk", "nobrand"]
    no_brand = ask("other_brands", ("nobrand",))
    assert "no brand" in no_brand.lines[0] and "nobrand" not in no_brand.product_ids


def test_details_and_products_gone_from_the_catalog() -> None:
    assert ask("details", ("oat",)).lines == ["Oat Milk: An oat drink."]
    assert ask("price", ("deleted",)) is None


# --- preferences ------------------------------------------------------------------------

KNOWN = {"organic", "vegan", "dairy", "lactose", "lactose-free"}


@pytest.mark.parametrize(
    ("text", "found", "lasting"),
    [
        ("I'm lactose intolerant", ("-lactose",), True),
        ("I am vegan", ("+vegan",), True),
        ("我不吃乳制品", ("-dairy",), True),
        ("我是素食主义者", ("+vegan",), True),
        ("organic only please", ("+organic",), True),
        ("no dairy please", ("-dairy",), True),
        ("do you have lactose-free milk?", ("-lactose",), False),  # for this question only
        ("I want cheese", (), False),
        ("how much is it?", (), False),
    ],
)
def test_stated_preferences(text: str, found: tuple[str, ...], lasting: bool) -> None:
    from retrieval.conversation.preferences import read_preferences

    stated = read_preferences(text, KNOWN)
    assert stated.found == found
    assert stated.lasting == lasting


def test_preferences_the_catalog_cannot_apply_are_said_not_kept() -> None:
    from retrieval.conversation.preferences import preference_turn, read_preferences

    stated = read_preferences("I'm gluten-free", KNOWN)
    assert stated.found == () and stated.unknown == ("-gluten",)
    turn = preference_turn(stated, ("+vegan",), "en", content_left=False)
    assert turn.kept == ("+vegan",)
    assert turn.lines == (
        "I cannot filter by this (without gluten): our catalog does not record it.",
    )


def test_later_preferences_win_the_list_is_capped_and_can_be_forgotten() -> None:
    from retrieval.conversation.preferences import (
        MAX_PREFERENCES,
        merge,
        preference_turn,
        read_preferences,
    )

    kept, replaced = merge(("+vegan", "-lactose"), ("-vegan",))
    assert kept == ("-lactose", "-vegan") and replaced == ("+vegan",)
    many = tuple(f"+a{i}" for i in range(25))
    assert merge((), many)[0] == many[-MAX_PREFERENCES:]
    turn = preference_turn(read_preferences("forget my preferences", KNOWN), kept, "en", False)
    assert turn.kept == () and turn.lines == ("I have forgotten your preferences.",)
    shown = preference_turn(read_preferences("我的偏好是什么", KNOWN), ("-dairy",), "zh", False)
    assert shown.kept == ("-dairy",) and "不含乳制品" in shown.lines[0]
    # "which milk? I'm lactose intolerant": kept, and the question is still answered
    asks = preference_turn(
        read_preferences("which milk do you have? I'm lactose intolerant", KNOWN), (), "en", True
    )
    assert asks.kept == ("-lactose",) and asks.asks_more and asks.one_off == ()
    one_off = preference_turn(read_preferences("lactose-free milk?", KNOWN), (), "en", True)
    assert one_off.kept == () and one_off.one_off == ("-lactose",)


def test_preferences_as_a_filter() -> None:
    from retrieval.conversation.preferences import as_filter, violated
    from retrieval.filters import ProductFilter

    f = as_filter(("+organic", "-lactose"), ProductFilter(in_stock=True))
    assert f.attributes == {"organic"} and f.exclude_attributes == {"lactose"} and f.in_stock
    ok = Product("a", "A", stock=1, attributes=("organic", "lactose-free"))
    assert f.matches(ok)
    assert not f.matches(Product("b", "B", stock=1, attributes=("organic", "lactose")))
    assert as_filter(()) is None
    assert violated(("+vegan", "-dairy"), ("dairy", "lactose")) == ("+vegan", "-dairy")


def test_bigger_and_smaller_compare_sizes_of_one_kind() -> None:
    from retrieval.sizes import parse_size

    assert parse_size("1.5 l") == ("volume", 1500.0) == parse_size("1500ml")
    assert parse_size("6 x 330 ml") == ("volume", 1980.0)
    assert parse_size("1 kg") == ("mass", 1000.0) and parse_size("big") is None
    bigger = ask("bigger", ("oat",))
    # 1.5 l of soy milk, not the 1 kg oatgurt (another kind of size) nor the dairy milk
    assert bigger.product_ids == ["soy"] and bigger.lines == ["Bigger than Oat Milk (1 l):"]
    biggest = ask("bigger", ("soy",))
    assert biggest.product_ids == ["soy"] and "already the biggest" in biggest.lines[0]
    assert ask("smaller", ("soy",), "zh").lines == ["比豆奶（1500 ml）小的："]
    no_size = ask("bigger", ("milk",))
    assert no_size.lines[0].startswith("The catalog gives no size for Milk")


def test_a_size_the_catalog_cannot_read_names_the_line(tmp_path) -> None:  # noqa: ANN001
    from retrieval.catalog import load_catalog
    from retrieval.errors import SourceError

    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"id": "a", "title": "A", "size": "1 l"}\n{"id": "b", "title": "B", "size": "huge"}\n'
    )
    with pytest.raises(SourceError, match=r"c.jsonl:2: field 'size': 'huge' is not a size"):
        load_catalog(path)
