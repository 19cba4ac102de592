"""The conversation context in SQL (real SQLite), and the bot's action answering follow-ups
against it across turns, a restart of the store and a database that is down."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher

from retrieval.conversation.context import MAX_PRODUCTS, Context, ConversationStore
from retrieval.errors import StoreError
from retrieval.service.actions import ActionAnswerFollowup, ActionAnswerQuestion
from retrieval.store import make_engine, migrate


@pytest.fixture
def store(tmp_path) -> ConversationStore:  # noqa: ANN001
    engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(engine)
    return ConversationStore(engine, retention_days=30)


def test_a_context_is_saved_loaded_bounded_and_forgotten(store: ConversationStore) -> None:
    assert store.load("c1") == Context()
    ctx = Context().showing([f"p{i}" for i in range(20)], question="x" * 2000).focused("p1")
    store.save("c1", ctx)
    got = store.load("c1")
    assert got.products == tuple(f"p{i}" for i in range(MAX_PRODUCTS))
    assert got.focus == "p1" and len(got.question or "") == 500
    store.save("c1", got.showing(faq_id="delivery"))  # a new topic replaces the cards
    assert store.load("c1") == Context(faq_id="delivery", question=None)
    assert store.load("c2") == Context()  # never shared across conversations
    store.forget("c1")
    assert store.load("c1") == Context()


def test_old_contexts_are_purged(store: ConversationStore) -> None:
    store.save("old", Context(products=("a",)))
    store.save("new", Context(products=("b",)))
    assert store.purge(now=datetime.now(UTC) + timedelta(days=31)) == 2
    store.save("new", Context(products=("b",)))
    assert store.purge() == 0 and store.load("new").products == ("b",)


def test_a_database_that_is_down_is_a_store_error(tmp_path) -> None:  # noqa: ANN001
    broken = ConversationStore(make_engine(f"sqlite:///{tmp_path / 'not-migrated.db'}"))
    with pytest.raises(StoreError, match="conversation context"):
        broken.load("c1")


def turn(action, text: str, intent: str, sender: str = "shopper-1"):  # noqa: ANN001, ANN201
    t = Tracker.from_dict(
        {
            "sender_id": sender,
            "slots": {},
            "latest_message": {"text": text, "intent": {"name": intent}, "entities": []},
            "events": [],
            "paused": False,
            "followup_action": None,
            "active_loop": {},
            "latest_action_name": "action_listen",
        }
    )
    dispatcher = CollectingDispatcher()
    events = asyncio.run(action.run(dispatcher, t, {}))
    return dispatcher.messages, {e["name"]: e["value"] for e in events if e["event"] == "slot"}


def cards(messages: list[dict]) -> list[str]:
    return next(
        [c["id"] for c in m["custom"]["products"]]
        for m in messages
        if (m.get("custom") or {}).get("type") == "products"
    )


def test_follow_ups_across_turns_and_a_restart(retriever, store) -> None:  # noqa: ANN001
    ask = ActionAnswerQuestion(lambda: retriever, contexts=lambda: store)
    follow = ActionAnswerFollowup(lambda: retriever, contexts=lambda: store)
    messages, slots = turn(ask, "red apple", "ask_product")
    shown = cards(messages)
    assert shown[0] == "red-apple" and slots["shown_products"] == shown
    # the NLU's intent does not matter: the retrieval side decides it is a follow-up
    messages, slots = turn(ask, "how much is it?", "ask_product")
    assert messages[0]["text"] == "red apple costs 1.00 EUR." and cards(messages) == ["red-apple"]
    assert slots["shown_products"] == shown  # still the same cards
    # a new action object over the same database: the context survived (Rasa restarted)
    again = ActionAnswerFollowup(
        lambda: retriever, contexts=lambda: ConversationStore(store.engine)
    )
    messages, _ = turn(again, "the first one", "ask_followup")
    assert messages[0]["text"] == "red apple: a crisp red apple"
    # a new topic, then "it" is its first card
    assert cards(turn(again, "organic banana", "ask_product")[0])[0] == "banana"
    messages, _ = turn(again, "is it in stock?", "ask_followup")
    assert "out of stock" in messages[0]["text"] and cards(messages)[0] == "banana"
    # every follow-up is on record, answered with the products it showed
    followups = [r for r in retriever.query_log.records if r["query"]["text"] == "how much is it?"]
    [rec] = followups
    assert rec["query"]["decision"] == "answer" and rec["query"]["conversation_id"] == "shopper-1"
    assert [c["item_id"] for c in rec["candidates"]] == ["red-apple"]
    assert rec["decisions"][0]["reason"].startswith("follow-up: price of red-apple")
    # another conversation has nothing to refer to
    messages, _ = turn(follow, "is it in stock?", "ask_followup", sender="shopper-2")
    assert messages[0]["custom"] == {"type": "clarify", "reason": "nothing shown"}
    assert messages[0]["response"] == "utter_clarify_product"


def test_a_card_past_the_last_and_a_language_switch(retriever, store) -> None:  # noqa: ANN001
    ask = ActionAnswerQuestion(lambda: retriever, contexts=lambda: store)
    shown = cards(turn(ask, "red apple", "ask_product")[0])
    messages, _ = turn(ask, "第九个多少钱", "ask_followup")
    assert messages[0]["response"] == "utter_clarify_position_zh"
    assert messages[0]["custom"]["shown"] == len(shown)
    messages, _ = turn(ask, "送货 需要 多久", "ask_faq")
    assert messages[0]["text"] == "送货需要两天。"
    messages, slots = turn(ask, "in English please", "ask_followup")
    assert messages[0]["text"] == "Delivery takes two days." and slots["shown_faq"]
    # the asked-for language stays: a later answer is in English too
    assert store.load("shopper-1").lang == "en"


def test_with_the_database_down_the_bot_still_answers(retriever, tmp_path) -> None:  # noqa: ANN001
    broken = ConversationStore(make_engine(f"sqlite:///{tmp_path / 'not-migrated.db'}"))
    ask = ActionAnswerQuestion(lambda: retriever, contexts=lambda: broken)
    assert cards(turn(ask, "red apple", "ask_product")[0])[0] == "red-apple"
    messages, _ = turn(ask, "how much is it?", "ask_followup")  # no memory: asks back
    assert messages[0]["custom"]["type"] == "clarify"


def test_preferences_filter_later_answers_until_forgotten(retriever, store) -> None:  # noqa: ANN001
    ask = ActionAnswerQuestion(lambda: retriever, contexts=lambda: store)
    messages, _ = turn(ask, "organic only please", "state_preference")
    assert messages[0]["text"] == "Noted. My product answers will keep to this: organic."
    assert store.load("shopper-1").preferences == ("+organic",)
    # a product question that only non-organic products answer: the later wish wins
    messages, _ = turn(ask, "red apple", "ask_product")
    texts = [m.get("text") for m in messages]
    assert any(t and "no longer keep them" in t for t in texts)
    assert cards(messages)[0] == "red-apple"
    assert store.load("shopper-1").preferences == ()
    # stated again, a product question the preference allows says why the cards are these
    turn(ask, "organic only please", "state_preference")
    messages, _ = turn(ask, "organic banana", "ask_product")
    assert "Chosen for your preferences: organic." in [m.get("text") for m in messages]
    assert cards(messages) == ["banana"]  # the only organic product
    messages, _ = turn(ask, "what are my preferences?", "manage_preferences")
    assert messages[0]["text"].startswith("Your preferences: organic.")
    messages, _ = turn(ask, "forget my preferences", "manage_preferences")
    assert messages[0]["text"] == "I have forgotten your preferences."
    assert store.load("shopper-1").preferences == ()
    # never shared with another conversation
    assert store.load("shopper-2").preferences == ()


def test_the_agent_sees_what_the_bot_remembers(store) -> None:  # noqa: ANN001
    from retrieval.catalog import Catalog, Product
    from retrieval.console import tasks

    from consoledb import waiting_query

    qid = waiting_query(store.engine, conversation="c-remember")
    assert tasks.question(store.engine, qid).remembered_products == []
    store.save("c-remember", Context(products=("oat", "gone"), preferences=("-lactose",)))
    catalog = Catalog({"oat": Product("oat", "Oat Milk")})
    q = tasks.question(store.engine, qid, catalog=catalog)
    assert q.remembered_products == [
        {"id": "oat", "title": "Oat Milk"},
        {"id": "gone", "title": "gone"},  # no longer in the catalog: its id
    ]
    assert q.preferences == ["without lactose"]
    # the question page shows it (the console's template, as the page renders it)
    from types import SimpleNamespace

    from retrieval.console.pages import render

    agent = SimpleNamespace(name="alice", csrf="x")
    html = render(
        "question.html", agent=agent, q=q, page="queue", done=None, opened=0, max_chars=100
    ).body.decode()
    assert 'data-product-id="oat">Oat Milk</span>' in html
    assert '<span class="preference">without lactose</span>' in html


def test_popular_and_goes_well_with_in_the_chat(retriever, store) -> None:  # noqa: ANN001
    from retrieval.store.events import Interests

    interests = Interests(store.engine, cache_s=0.0)
    ask = ActionAnswerQuestion(
        lambda: retriever, contexts=lambda: store, interests=lambda: interests
    )
    messages, _ = turn(ask, "what's popular this week?", "ask_product")
    # nothing in the log yet: the best-stocked products, and the reply says so
    assert messages[0]["text"].startswith("Too few shoppers asked about products")
    assert "best-stocked" in messages[0]["text"]
    assert [(c["id"], c["basis"]) for c in messages[0]["custom"]["products"]] == [
        ("red-apple", "best-stocked")
    ]
    # three conversations clicked the red apple and the gift card, one the banana
    for c in ("a", "b", "c"):
        interests.record_click(c, "red-apple")
        interests.record_click(c, "gift-card")
    interests.record_click("d", "banana")
    messages, _ = turn(ask, "what's popular this week?", "ask_product")
    assert messages[0]["text"] == "Popular in the last 7 days:"
    # the banana is out of stock, and the gift card's stock is unknown: neither is shown
    assert cards(messages) == ["red-apple"]
    # "what goes well with it?": the popular card, and the products asked about with it
    messages, _ = turn(ask, "what goes well with it?", "ask_followup")
    # the gift card shares three conversations with it, but its stock is unknown: the
    # similar products fill in, and the reply says so
    assert messages[0]["text"].startswith("Nothing is asked about together with red apple")
    shown = messages[0]["custom"]["products"]
    assert "red-apple" not in [c["id"] for c in shown]
    # what the bot suggested is logged, but not as the shopper's interest
    assert interests.sets(7) == {
        "a": {"red-apple", "gift-card"},
        "b": {"red-apple", "gift-card"},
        "c": {"red-apple", "gift-card"},
        "d": {"banana"},
    }
