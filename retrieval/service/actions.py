"""Rasa custom actions, run inside the retrieval service (its ``/webhook`` route).

Thin adapters: they read the shopper's message and conversation id from the tracker, ask the
retriever, and turn the result into bot messages. The retriever logs every query with the
Rasa sender id as its conversation id; a question that ends in ``suggest`` or ``handoff`` is
thereby on record for the agents' queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.executor import CollectingDispatcher

from ..conversation.context import ConversationStore
from ..decision import Decision
from ..errors import NotFound
from ..retriever import Retriever
from ..uploads import UploadStore
from .admission import QueryGate
from .bot_replies import (
    call_retrieval,
    conversation_language,
    hand_off,
    load_context,
    off_loop,
    products_payload,
    response_name,
    save_context,
    shopper_language,
    slots,
)
from .question_action import ActionAnswerFollowup, ActionAnswerQuestion

__all__ = [
    "ActionAnswerFollowup",
    "ActionAnswerPhoto",
    "ActionAnswerQuestion",
    "ActionSmallTalk",
    "conversation_language",
    "shopper_language",
]

log = logging.getLogger(__name__)

SMALL_TALK = ("greet", "goodbye", "thank", "request_human", "chitchat")
SURE = 0.95  # NLU confidence above which a request for a person is taken as it is
# the button under an unsure photo match's cards (the shop page asks for a person with it)
NONE_OF_THESE = {"en": "None of these", "zh": "都不是"}
BUTTON_HANDOFF = "(the shopper pressed a button to ask for a person)"  # logged as the question


class ActionSmallTalk(Action):
    """Greetings, thanks, goodbyes, hand-off requests and chit-chat, in the shopper's language.

    A request for a person is also logged as a hand-off, so the agents' queue sees it.

    The NLU's small-talk intents are not trusted blindly: a short product question such as
    "got any watermelon?" or 甜椒 can look like a greeting to it (甜椒 came out as ``greet``
    with confidence 0.98 in one training of the demo bot). With ``answer`` (the question
    action), a small-talk message is first checked against the indexes without being logged
    (one retrieval call); when retrieval would answer it (a confident FAQ answer, or
    products past the product gate), it is answered as a question instead. A request for a
    person the NLU is sure of (confidence >= :data:`SURE`) is never second-guessed."""

    def __init__(
        self,
        retriever: Callable[[], Retriever] | None = None,
        answer: ActionAnswerQuestion | None = None,
        timeout_s: float = 3.0,
        gate: QueryGate | None = None,
    ):
        self._retriever = retriever
        self._answer = answer
        self._timeout_s = timeout_s
        self._gate = gate

    def name(self) -> str:
        return "action_small_talk"

    async def _is_question(self, text: str, intent: str | None, confidence: float) -> bool:
        if self._answer is None or self._retriever is None or not text.strip():
            return False
        if text.startswith("/"):  # an intent sent by a button of the shop page, not typed
            return False
        if intent == "request_human" and confidence >= SURE:  # never second-guessed
            return False
        retriever = self._retriever

        def probe() -> bool:
            r = retriever().query(text, k_products=1, k_faq=1, prefer_products=None, log=False)
            return r.decision is Decision.ANSWER

        try:
            return await asyncio.wait_for(off_loop(self._gate, probe), self._timeout_s)
        except Exception as exc:  # noqa: BLE001 - small talk still gets its reply
            log.warning("could not check small talk %r against the indexes: %s", text[:80], exc)
            return False

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        intent_info = tracker.latest_message.get("intent") or {}
        intent = intent_info.get("name")
        text = tracker.latest_message.get("text") or ""
        confidence = float(intent_info.get("confidence") or 0.0)
        if await self._is_question(text, intent, confidence):
            assert self._answer is not None
            return await self._answer.run(dispatcher, tracker, domain)
        button = text.startswith("/")  # a button of the shop page (e.g. "None of these")
        lang = conversation_language(tracker) if button else shopper_language(text)
        dispatcher.utter_message(
            response=response_name(f"utter_{intent if intent in SMALL_TALK else 'chitchat'}", lang)
        )
        if intent == "request_human" and self._retriever is not None:
            logged = BUTTON_HANDOFF if button else text
            try:  # off the event loop: a full query log makes this wait (then refuse)
                await asyncio.to_thread(
                    self._retriever().record_handoff, logged, conversation_id=tracker.sender_id
                )
            except Exception as exc:  # noqa: BLE001 - the shopper has their reply; the log says what failed
                log.error(
                    "could not record the hand-off of conversation %s: %s", tracker.sender_id, exc
                )
        return []


class ActionAnswerPhoto(Action):
    """A photo the shopper attached in the chat window (stored by the shop page's upload
    route; the message names it as ``/send_photo{"photo_id": "..."}``): product matches."""

    def __init__(
        self,
        retriever: Callable[[], Retriever],
        uploads: Callable[[], UploadStore],
        timeout_s: float = 3.0,
        contexts: Callable[[], ConversationStore | None] | None = None,
        gate: QueryGate | None = None,
    ):
        self._retriever = retriever
        self._uploads = uploads
        self._timeout_s = timeout_s
        self._gate = gate
        self._contexts = contexts or (lambda: None)

    def name(self) -> str:
        return "action_answer_photo"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        store = self._contexts()
        ctx = await load_context(store, tracker.sender_id)
        lang = ctx.lang or conversation_language(tracker)
        photo_id = next(tracker.get_latest_entity_values("photo_id"), None)
        uploads = self._uploads()
        try:
            uploads.path(photo_id)
        except NotFound:
            dispatcher.utter_message(
                response=response_name("utter_photo_missing", lang),
                json_message={"type": "error", "reason": "unknown photo"},
            )
            return []
        result = await call_retrieval(
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
            self._gate,
        )
        if result is None:
            return []
        unsure = result.decision is Decision.SUGGEST and result.verdict.basis == "products"
        if result.answered_with == "products" or unsure:
            # an unsure match (decision.UNSURE_PHOTO) asks "is it one of these?" and offers a
            # person; the question already waits in the agents' queue as a suggestion
            dispatcher.utter_message(
                response=response_name(
                    "utter_photo_unsure" if unsure else "utter_photo_products", lang
                ),
                json_message=products_payload(result, lang)
                | ({"unsure": True, "none_label": NONE_OF_THESE[lang]} if unsure else {}),
            )
            ctx = ctx.showing([m.product.id for m in result.shown_products])
        else:
            hand_off(dispatcher, result, lang)
            ctx = ctx.showing()
        await save_context(store, tracker.sender_id, ctx)
        return slots(ctx)
