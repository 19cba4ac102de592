"""Rasa custom actions, run inside the retrieval service (its ``/webhook`` route).

Thin adapters: they read the shopper's message and conversation id from the tracker, ask the
retriever, and turn the result into bot messages. The retriever logs every query with the
Rasa sender id as its conversation id; a question that ends in ``suggest`` or ``handoff`` is
thereby on record for the agents' queue.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.executor import CollectingDispatcher

from ..decision import Decision
from ..errors import NotFound
from ..filter_phrases import describe as describe_filter
from ..filter_phrases import filter_from_text
from ..results import QueryResult
from ..retriever import Retriever
from ..uploads import UploadStore

__all__ = [
    "ActionAnswerPhoto",
    "ActionAnswerQuestion",
    "ActionSmallTalk",
    "conversation_language",
    "shopper_language",
]

log = logging.getLogger(__name__)

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
SMALL_TALK = ("greet", "goodbye", "thank", "request_human", "chitchat")


def shopper_language(text: str) -> str:
    """'zh' when the message holds Chinese characters, else 'en'."""
    return "zh" if _CJK.search(text or "") else "en"


def conversation_language(tracker: Tracker) -> str:
    """The language of the shopper's latest typed message ('/intent' messages carry none)."""
    for event in reversed(tracker.events):
        if event.get("event") == "user":
            text = event.get("text") or ""
            if text and not text.startswith("/"):
                return shopper_language(text)
    return "en"


def _response(name: str, lang: str) -> str:
    return f"{name}_zh" if lang == "zh" else name


class ActionSmallTalk(Action):
    """Greetings, thanks, goodbyes, hand-off requests and chit-chat, in the shopper's language.

    A request for a person is also logged as a hand-off, so the agents' queue sees it."""

    def __init__(self, retriever: Callable[[], Retriever] | None = None):
        self._retriever = retriever

    def name(self) -> str:
        return "action_small_talk"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        intent = (tracker.latest_message.get("intent") or {}).get("name")
        text = tracker.latest_message.get("text") or ""
        lang = shopper_language(text)
        dispatcher.utter_message(
            response=_response(f"utter_{intent if intent in SMALL_TALK else 'chitchat'}", lang)
        )
        if intent == "request_human" and self._retriever is not None:
            try:  # off the event loop: a full query log makes this wait (then refuse)
                await asyncio.to_thread(
                    self._retriever().record_handoff, text, conversation_id=tracker.sender_id
                )
            except Exception as exc:  # noqa: BLE001 - the shopper has their reply; the log says what failed
                log.error(
                    "could not record the hand-off of conversation %s: %s", tracker.sender_id, exc
                )
        return []


class ActionAnswerQuestion(Action):
    """Answers from the FAQ bank, shows product cards, or hands the question to an agent.

    What the shopper sees is what the retriever decided (and logged): product cards when a
    product question's best match clears the product threshold, the FAQ answer when the FAQ
    decision is ``answer``, otherwise the hand-off message, so the agents' queue holds
    exactly the questions the bot did not answer."""

    def __init__(self, retriever: Callable[[], Retriever], timeout_s: float = 3.0):
        self._retriever = retriever
        self._timeout_s = timeout_s

    def name(self) -> str:
        return "action_answer_question"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        text = tracker.latest_message.get("text") or ""
        intent = (tracker.latest_message.get("intent") or {}).get("name")
        lang = shopper_language(text)
        # "in stock", "under 2 euros", "两欧元以下": the products are searched with that filter
        wanted, _ = filter_from_text(text)
        product_filter = None if wanted.empty else wanted
        result = await _ask(
            dispatcher,
            tracker,
            lang,
            self._timeout_s,
            lambda: self._retriever().query(
                text,
                conversation_id=tracker.sender_id,
                channel="rasa",
                k_products=4,
                k_faq=3,
                prefer_products=intent == "ask_product",
                product_filter=product_filter,
            ),
        )
        if result is None:
            return []
        if result.answered_with == "products":
            if result.product_filter is not None:  # say which filter the cards answer
                dispatcher.utter_message(text=describe_filter(result.product_filter, lang))
            dispatcher.utter_message(
                response=_response("utter_products", lang),
                json_message=_products_payload(result, lang),
            )
            return []
        if result.decision is Decision.ANSWER:
            best = result.replies[0]
            dispatcher.utter_message(
                text=answer_in_language(self._retriever(), best.entry.group or best.entry.id, lang)
                or best.entry.answer,
                json_message={
                    "type": "answer",
                    "query_id": result.query_id,
                    "faq_id": best.entry.id,
                    "score": round(best.score, 4),
                    "retrieval_ms": _total_ms(result),
                },
            )
            return []
        _hand_off(dispatcher, result, lang)
        return []


class ActionAnswerPhoto(Action):
    """A photo the shopper attached in the chat window (stored by the shop page's upload
    route; the message names it as ``/send_photo{"photo_id": "..."}``): product matches."""

    def __init__(
        self,
        retriever: Callable[[], Retriever],
        uploads: Callable[[], UploadStore],
        timeout_s: float = 3.0,
    ):
        self._retriever = retriever
        self._uploads = uploads
        self._timeout_s = timeout_s

    def name(self) -> str:
        return "action_answer_photo"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        lang = conversation_language(tracker)
        photo_id = next(tracker.get_latest_entity_values("photo_id"), None)
        uploads = self._uploads()
        try:
            uploads.path(photo_id)
        except NotFound:
            dispatcher.utter_message(
                response=_response("utter_photo_missing", lang),
                json_message={"type": "error", "reason": "unknown photo"},
            )
            return []
        result = await _ask(
            dispatcher,
            tracker,
            lang,
            self._timeout_s,
            lambda: self._retriever().query(
                None,
                uploads.load(photo_id),  # decoded when it was stored: not decoded again
                conversation_id=tracker.sender_id,
                channel="rasa",
                k_products=4,
                k_faq=1,
                image_ref=f"upload:{photo_id}",
                prefer_products=True,
            ),
        )
        if result is None:
            return []
        if result.answered_with == "products":
            dispatcher.utter_message(
                response=_response("utter_photo_products", lang),
                json_message=_products_payload(result, lang),
            )
            return []
        _hand_off(dispatcher, result, lang)
        return []


async def _ask(
    dispatcher: CollectingDispatcher,
    tracker: Tracker,
    lang: str,
    timeout_s: float,
    call: Callable[[], QueryResult],
) -> QueryResult | None:
    """Run a retrieval call off the event loop with a deadline. On any failure the shopper
    gets the hand-off message (never silence) and ``None`` comes back."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(call), timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001 - unavailable, slow or refused: never leave the shopper in silence
        log.warning("retrieval failed for conversation %s: %s", tracker.sender_id, exc)
        dispatcher.utter_message(
            response=_response("utter_handoff", lang),
            json_message={"handoff": True, "reason": "retrieval unavailable"},
        )
        return None


def _hand_off(dispatcher: CollectingDispatcher, result: QueryResult, lang: str) -> None:
    """The hand-off message, with the logged query it refers to (the agents' queue entry)."""
    dispatcher.utter_message(
        response=_response("utter_handoff", lang),
        json_message={
            "handoff": True,
            "query_id": result.query_id,
            "decision": result.decision.value,
            "retrieval_ms": _total_ms(result),
        },
    )


def _total_ms(result: QueryResult) -> float:
    return round(float(result.timings_ms.get("total", sum(result.timings_ms.values()))), 2)


def _products_payload(result: QueryResult, lang: str = "en") -> dict[str, Any]:
    return {
        "type": "products",
        "query_id": result.query_id,
        "products": product_cards(result, lang),
        "filter": None if result.product_filter is None else result.product_filter.public(),
        "retrieval_ms": _total_ms(result),
    }


def product_cards(result: QueryResult, lang: str = "en") -> list[dict[str, Any]]:
    """The products past the product gate as cards, titled in the shopper's language where
    the catalog can."""
    return [{**m.product.card(lang), "score": round(m.score, 4)} for m in result.shown_products]


def answer_in_language(retriever: Retriever, group: str, lang: str) -> str | None:
    """The answer of the group's entry written in the shopper's language, if the bank has one."""
    entry = retriever.snapshot.entry_in_language(group, lang)
    return entry.answer if entry is not None else None
