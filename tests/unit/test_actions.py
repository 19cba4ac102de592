"""The Rasa custom actions, with JSON tracker fixtures and a CollectingDispatcher."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher

from retrieval.service.actions import (
    ActionAnswerPhoto,
    ActionAnswerQuestion,
    ActionSmallTalk,
    conversation_language,
    shopper_language,
)
from retrieval.service.admission import QueryGate
from retrieval.uploads import UploadStore

from fakes import colour_png


def tracker(
    text: str,
    intent: str,
    sender: str = "shopper-1",
    entities: list[dict] | None = None,
    events: list[dict] | None = None,
) -> Tracker:
    return Tracker.from_dict(
        {
            "sender_id": sender,
            "slots": {},
            "latest_message": {
                "text": text,
                "intent": {"name": intent, "confidence": 0.9},
                "entities": entities or [],
            },
            "events": events or [],
            "paused": False,
            "followup_action": None,
            "active_loop": {},
            "latest_action_name": "action_listen",
        }
    )


def run(action, t: Tracker) -> tuple[list[dict], list[dict]]:  # noqa: ANN001
    dispatcher = CollectingDispatcher()
    events = asyncio.run(action.run(dispatcher, t, {}))
    return dispatcher.messages, events


def test_language_of_the_shopper() -> None:
    assert shopper_language("where is my order") == "en"
    assert shopper_language("我的订单在哪里") == "zh"
    assert shopper_language("my 订单 please") == "zh"


@pytest.mark.parametrize(
    ("text", "intent", "response"),
    [
        ("hello", "greet", "utter_greet"),
        ("你好", "greet", "utter_greet_zh"),
        ("thanks", "thank", "utter_thank"),
        ("bye", "goodbye", "utter_goodbye"),
        ("转人工", "request_human", "utter_request_human_zh"),
        ("tell me a joke", "chitchat", "utter_chitchat"),
        ("whatever", "unexpected_intent", "utter_chitchat"),
    ],
)
def test_small_talk(text: str, intent: str, response: str) -> None:
    messages, events = run(ActionSmallTalk(), tracker(text, intent))
    assert [m["response"] for m in messages] == [response]
    assert events == []


def test_confident_answer_with_its_score(retriever) -> None:  # noqa: ANN001, F811
    messages, events = run(
        ActionAnswerQuestion(lambda: retriever), tracker("how long does delivery take", "ask_faq")
    )
    [m] = messages
    assert m["text"] == "Delivery takes two days."
    assert m["custom"]["type"] == "answer" and m["custom"]["faq_id"] == "delivery"
    assert m["custom"]["score"] == pytest.approx(1.0, abs=1e-3)
    # the answer is mirrored into the slots (no context store: nothing kept between turns)
    slots = {e["name"]: e["value"] for e in events if e["event"] == "slot"}
    assert slots == {"shown_products": [], "shown_faq": "delivery"}
    [rec] = retriever.query_log.records
    assert rec["query"]["conversation_id"] == "shopper-1" and rec["query"]["channel"] == "rasa"
    assert rec["query"]["id"] == m["custom"]["query_id"]


def test_answer_in_the_shoppers_language(retriever) -> None:  # noqa: ANN001, F811
    messages, _ = run(ActionAnswerQuestion(lambda: retriever), tracker("送货 需要 多久", "ask_faq"))
    assert messages[0]["text"] == "送货需要两天。"


def test_product_cards_with_scores(retriever) -> None:  # noqa: ANN001, F811
    messages, _ = run(ActionAnswerQuestion(lambda: retriever), tracker("red apple", "ask_product"))
    [m] = messages
    assert m["response"] == "utter_products"
    cards = m["custom"]["products"]
    assert (
        cards[0]["id"] == "red-apple" and cards[0]["price"] == 1.0 and cards[0]["in_stock"] is True
    )
    assert cards[0]["image_url"] == "/v1/products/red-apple/image"
    assert cards[0]["similar_url"] == "/v1/products/red-apple/similar"
    assert cards[0]["score"] > 0.5 and [c["score"] for c in cards] == sorted(
        (c["score"] for c in cards), reverse=True
    )
    # logged as answered (with products), so it does not wait in the agents' queue
    [rec] = retriever.query_log.records
    assert rec["query"]["decision"] == "answer" and rec["query"]["id"] == m["custom"]["query_id"]
    assert rec["decisions"][0]["reason"].startswith("top product score")


def test_product_question_without_a_good_match_is_handed_off(retriever) -> None:  # noqa: ANN001, F811
    messages, _ = run(
        ActionAnswerQuestion(lambda: retriever), tracker("zebra quantum violin", "ask_product")
    )
    assert [m["response"] for m in messages] == ["utter_handoff"]
    [rec] = retriever.query_log.records
    assert rec["query"]["decision"] == "handoff"


def test_no_good_answer_hands_off_and_is_on_record(retriever) -> None:  # noqa: ANN001, F811
    messages, _ = run(
        ActionAnswerQuestion(lambda: retriever),
        tracker("zebra quantum violin", "ask_faq", sender="s-9"),
    )
    [m] = messages
    assert m["response"] == "utter_handoff" and m["custom"]["handoff"] is True
    [rec] = retriever.query_log.records
    assert rec["query"]["decision"] == m["custom"]["decision"] == "handoff"
    assert rec["query"]["conversation_id"] == "s-9"


def test_retrieval_unavailable_gives_a_handoff_message() -> None:
    def broken():  # noqa: ANN202
        raise ConnectionError("retrieval is down")

    messages, _ = run(ActionAnswerQuestion(broken), tracker("where is my order", "ask_faq"))
    [m] = messages
    assert m["response"] == "utter_handoff"
    assert m["custom"] == {"handoff": True, "reason": "retrieval unavailable"}


def test_the_actions_retrieval_passes_the_services_query_gate(retriever) -> None:  # noqa: ANN001, F811
    """The chat's questions take the same places and waiting line as POST /v1/query: a
    question is admitted through the gate, and a full gate is a hand-off, not a wait."""
    import threading

    gate = QueryGate(1, 0)
    action = ActionAnswerQuestion(lambda: retriever, gate=gate)
    messages, _ = run(action, tracker("how long does delivery take", "ask_faq"))
    assert gate.stats().admitted >= 1 and messages[0]["response"] != "utter_handoff"
    release = threading.Event()

    async def while_full() -> list[dict]:
        busy = asyncio.create_task(gate.run(release.wait, 5))
        await asyncio.sleep(0.05)
        dispatcher = CollectingDispatcher()
        await action.run(dispatcher, tracker("how long does delivery take", "ask_faq"), {})
        release.set()
        await busy
        return dispatcher.messages

    [m] = asyncio.run(while_full())
    assert m["response"] == "utter_handoff"
    assert m["custom"] == {"handoff": True, "reason": "retrieval unavailable"}
    assert gate.stats().refused >= 1


def test_slow_retrieval_gives_a_handoff_message_in_time(retriever) -> None:  # noqa: ANN001, F811
    class Slow:
        snapshot = retriever.snapshot

        def query(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            time.sleep(2)
            return retriever.query(*args, **kwargs)

    t0 = time.perf_counter()
    messages, _ = run(
        ActionAnswerQuestion(lambda: Slow(), timeout_s=0.2), tracker("你们几点营业", "ask_faq")
    )
    assert time.perf_counter() - t0 < 2.5
    assert messages[0]["response"] == "utter_handoff_zh"


def test_asking_for_a_person_is_logged_as_a_handoff(retriever) -> None:  # noqa: ANN001, F811
    messages, _ = run(
        ActionSmallTalk(lambda: retriever), tracker("转人工客服", "request_human", sender="s-5")
    )
    assert [m["response"] for m in messages] == ["utter_request_human_zh"]
    [rec] = retriever.query_log.records
    assert rec["query"]["decision"] == "handoff" and rec["query"]["conversation_id"] == "s-5"
    assert rec["query"]["text"] == "转人工客服" and rec["candidates"] == []
    assert rec["decisions"][0]["reason"] == "the shopper asked for a person"


def test_the_none_of_these_button_hands_off_in_the_conversations_language(retriever) -> None:  # noqa: ANN001, F811
    button = tracker(
        "/request_human",
        "request_human",
        sender="s-6",
        events=[{"event": "user", "text": "有这个吗"}, {"event": "user", "text": "/request_human"}],
    )
    messages, _ = run(ActionSmallTalk(lambda: retriever), button)
    assert [m["response"] for m in messages] == ["utter_request_human_zh"]
    [rec] = retriever.query_log.records
    assert rec["query"]["decision"] == "handoff" and rec["query"]["conversation_id"] == "s-6"
    assert rec["query"]["text"] == "(the shopper pressed a button to ask for a person)"


def photo_tracker(photo_id: str, earlier: str | None = None) -> Tracker:
    text = f'/send_photo{{"photo_id": "{photo_id}"}}'
    events = [{"event": "user", "text": earlier}] if earlier else []
    events.append({"event": "user", "text": text})
    return tracker(
        text,
        "send_photo",
        sender="s-photo",
        entities=[{"entity": "photo_id", "value": photo_id}],
        events=events,
    )


def test_language_of_a_conversation_skips_commands() -> None:
    assert conversation_language(photo_tracker("ab" * 16, earlier="有香蕉吗")) == "zh"
    assert conversation_language(photo_tracker("ab" * 16, earlier="hello")) == "en"
    assert conversation_language(photo_tracker("ab" * 16)) == "en"


def test_photo_gets_matching_product_cards(retriever, tmp_path) -> None:  # noqa: ANN001, F811
    uploads = UploadStore(tmp_path / "up", max_bytes=10**6, max_pixels=10**7)
    photo_id = uploads.save(colour_png("yellow"))
    gate = QueryGate(2, 10)  # the photo's retrieval passes the service's query gate
    messages, events = run(
        ActionAnswerPhoto(lambda: retriever, lambda: uploads, gate=gate),
        photo_tracker(photo_id, earlier="有这个吗"),
    )
    [m] = messages
    assert m["response"] == "utter_photo_products_zh"
    slots = {e["name"]: e["value"] for e in events if e["event"] == "slot"}
    assert slots["shown_products"] == [c["id"] for c in m["custom"]["products"]]
    assert m["custom"]["type"] == "products" and m["custom"]["products"][0]["id"] == "banana"
    [rec] = retriever.query_log.records
    assert rec["query"]["has_image"] is True and rec["query"]["text"] is None
    assert rec["query"]["decision"] == "answer"
    assert rec["query"]["image_ref"] == f"upload:{photo_id}"
    assert rec["query"]["conversation_id"] == "s-photo"
    assert rec["query"]["id"] == m["custom"]["query_id"]
    assert gate.stats().admitted == 1


def test_an_unsure_photo_match_asks_is_it_one_of_these(retriever, tmp_path) -> None:  # noqa: ANN001, F811
    uploads = UploadStore(tmp_path / "up", max_bytes=10**6, max_pixels=10**7)
    photo_id = uploads.save(colour_png("yellow"))
    sure = run(ActionAnswerPhoto(lambda: retriever, lambda: uploads), photo_tracker(photo_id))
    best = sure[0][0]["custom"]["products"][0]["score"]
    snap = retriever.snapshot  # the sure level just above the best match's score
    policy = dataclasses.replace(snap.policy, photo_sure_threshold=best + 0.01)
    retriever.swap(dataclasses.replace(snap, policy=policy))
    messages, events = run(
        ActionAnswerPhoto(lambda: retriever, lambda: uploads),
        photo_tracker(photo_id, earlier="有这个吗"),
    )
    [m] = messages
    assert m["response"] == "utter_photo_unsure_zh"
    assert m["custom"]["unsure"] is True and m["custom"]["none_label"] == "都不是"
    assert [c["id"] for c in m["custom"]["products"]] == [
        c["id"] for c in sure[0][0]["custom"]["products"]
    ]  # the same cards, asked about instead of asserted
    slots = {e["name"]: e["value"] for e in events if e["event"] == "slot"}
    assert slots["shown_products"] == [c["id"] for c in m["custom"]["products"]]
    rec = retriever.query_log.records[-1]
    assert rec["query"]["decision"] == "suggest"  # waits in the agents' queue
    assert rec["decisions"][0]["reason"].startswith("unsure photo match")


@pytest.mark.parametrize("photo_id", ["0123456789abcdef0123456789abcdef", "../../etc/passwd"])
def test_unknown_photo_is_asked_again(retriever, tmp_path, photo_id: str) -> None:  # noqa: ANN001, F811
    uploads = UploadStore(tmp_path / "up", max_bytes=10**6, max_pixels=10**7)
    messages, _ = run(
        ActionAnswerPhoto(lambda: retriever, lambda: uploads), photo_tracker(photo_id)
    )
    assert [m["response"] for m in messages] == ["utter_photo_missing"]
    assert retriever.query_log.records == []


def test_photo_with_retrieval_down_gives_a_handoff_message(tmp_path) -> None:  # noqa: ANN001
    uploads = UploadStore(tmp_path / "up", max_bytes=10**6, max_pixels=10**7)
    photo_id = uploads.save(colour_png("red"))

    def broken():  # noqa: ANN202
        raise ConnectionError("retrieval is down")

    messages, _ = run(ActionAnswerPhoto(broken, lambda: uploads), photo_tracker(photo_id))
    assert messages == [
        {
            **messages[0],
            "response": "utter_handoff",
            "custom": {"handoff": True, "reason": "retrieval unavailable"},
        }
    ]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("apple or banana in stock", "Showing only products in stock"),
        ("有货的 red apple", "只显示有货的商品"),
        ("fruit under 0.80 euros", "Showing only products priced up to 0.8"),
    ],
)
def test_a_filter_in_the_question_filters_the_cards_and_is_said(
    retriever,  # noqa: ANN001, F811
    text: str,
    said: str,
) -> None:
    messages, _ = run(ActionAnswerQuestion(lambda: retriever), tracker(text, "ask_product"))
    products = [m for m in messages if (m.get("custom") or {}).get("type") == "products"]
    assert messages[0]["text"] == said
    [m] = products
    cards = m["custom"]["products"]
    filt = m["custom"]["filter"]
    assert cards and filt
    for card in cards:
        assert filt.get("in_stock") is None or card["in_stock"] is True
        assert "price_max" not in filt or card["price"] <= filt["price_max"]


def test_a_question_the_nlu_took_for_small_talk_is_answered(retriever) -> None:  # noqa: ANN001, F811
    answer = ActionAnswerQuestion(lambda: retriever)
    small_talk = ActionSmallTalk(lambda: retriever, answer=answer)
    messages, _ = run(small_talk, tracker("red apple", "greet"))
    assert messages[-1]["custom"]["type"] == "products"
    assert messages[-1]["custom"]["products"][0]["id"] == "red-apple"
    [rec] = retriever.query_log.records  # logged once, by the question's action
    assert rec["query"]["decision"] == "answer"
    # real small talk stays small talk, and the check is not logged
    messages, _ = run(small_talk, tracker("hello", "greet"))
    assert [m["response"] for m in messages] == ["utter_greet"]
    assert len(retriever.query_log.records) == 1
    # a request for a person the NLU is sure of is not second-guessed; a greeting is,
    # however sure the NLU is (the demo bot took 甜椒, bell pepper, for a greeting at 0.98)
    sure_greeting = tracker("red apple", "greet")
    sure_greeting.latest_message["intent"]["confidence"] = 0.99
    messages, _ = run(small_talk, sure_greeting)
    assert messages[-1]["custom"]["type"] == "products"
    sure = tracker("red apple", "request_human")
    sure.latest_message["intent"]["confidence"] = 0.99
    messages, _ = run(small_talk, sure)
    assert [m["response"] for m in messages] == ["utter_request_human"]
