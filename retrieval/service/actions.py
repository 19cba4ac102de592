"""Rasa custom actions, run inside the retrieval service (its ``/webhook`` route).

Thin adapters: they read the shopper's message and conversation id from the tracker, ask the
retriever, and turn the result into bot messages. The retriever logs every query with the
Rasa sender id as its conversation id; a question that ends in ``suggest`` or ``handoff`` is
thereby on record for the agents' queue.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from ..catalog import Product
from ..conversation.context import Context, ConversationStore
from ..conversation.followup import FollowUp, read_followup
from ..conversation.preferences import as_filter, preference_turn, read_preferences, violated
from ..conversation.preferences import say as say_preference
from ..conversation.turns import FollowUpAnswer, TurnPlan, answer_followup, plan_turn
from ..decision import Decision
from ..errors import NotFound, StoreError
from ..filter_phrases import describe as describe_filter
from ..filter_phrases import filter_from_text
from ..filters import ProductFilter
from ..results import QueryResult
from ..retriever import Retriever
from ..uploads import UploadStore

__all__ = [
    "ActionAnswerFollowup",
    "ActionAnswerPhoto",
    "ActionAnswerQuestion",
    "ActionSmallTalk",
    "conversation_language",
    "shopper_language",
]

log = logging.getLogger(__name__)

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
T = TypeVar("T")
SMALL_TALK = ("greet", "goodbye", "thank", "request_human", "chitchat")
SURE = 0.95  # NLU confidence above which small talk is taken as it is, without a check


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

    A request for a person is also logged as a hand-off, so the agents' queue sees it.

    The NLU's small-talk intents are not trusted blindly: a short product question such as
    "got any watermelon?" or 甜椒 can look like a greeting to it (with confidence 0.78 and
    0.86 in the demo bot). With ``answer`` (the question action), a small-talk message the
    NLU is not sure of (confidence below :data:`SURE`) is first checked against the indexes
    without being logged; when retrieval would answer it (a confident FAQ answer, or products
    past the product gate), it is answered as a question instead."""

    def __init__(
        self,
        retriever: Callable[[], Retriever] | None = None,
        answer: ActionAnswerQuestion | None = None,
        timeout_s: float = 3.0,
    ):
        self._retriever = retriever
        self._answer = answer
        self._timeout_s = timeout_s

    def name(self) -> str:
        return "action_small_talk"

    async def _is_question(self, text: str, intent: str | None, confidence: float) -> bool:
        if self._answer is None or self._retriever is None or not text.strip():
            return False
        if confidence >= SURE:  # "hello", "thanks", "talk to a person": as the NLU says
            return False
        retriever = self._retriever

        def probe() -> bool:
            r = retriever().query(text, k_products=1, k_faq=1, prefer_products=None, log=False)
            return r.decision is Decision.ANSWER

        try:
            return await asyncio.wait_for(asyncio.to_thread(probe), self._timeout_s)
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
    """Answers from the FAQ bank, shows product cards, answers a follow-up about the cards
    just shown, or hands the question to an agent.

    What the shopper sees is what the retriever decided (and logged): product cards when a
    product question's best match clears the product threshold, the FAQ answer when the FAQ
    decision is ``answer``, otherwise the hand-off message, so the agents' queue holds
    exactly the questions the bot did not answer. Whether a message is a follow-up ("how
    much is it?", "the second one", 第二个多少钱) is decided here, by the retrieval side
    (:mod:`retrieval.conversation.turns`), against the conversation's context in SQL, for
    every intent this action serves: a follow-up the NLU took for a product question is
    still one. The context is mirrored into the slots ``shown_products`` and ``shown_faq``."""

    def __init__(
        self,
        retriever: Callable[[], Retriever],
        timeout_s: float = 3.0,
        contexts: Callable[[], ConversationStore | None] | None = None,
    ):
        self._retriever = retriever
        self._timeout_s = timeout_s
        self._contexts = contexts or (lambda: None)

    def name(self) -> str:
        return "action_answer_question"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        text = tracker.latest_message.get("text") or ""
        intent = (tracker.latest_message.get("intent") or {}).get("name")
        cid = tracker.sender_id
        store = self._contexts()
        ctx = await _load_context(store, cid)
        asked = read_followup(text)
        plan = plan_turn(asked, ctx)
        if plan.language:  # "in Chinese please": kept for the rest of the conversation
            ctx = dataclasses.replace(ctx, lang=plan.language)
        lang = ctx.lang or shopper_language(text)
        # "I'm vegan", "no lactose", "forget my preferences": kept with the conversation
        stated = read_preferences(text, self._attributes())
        one_off: tuple[str, ...] = ()
        if stated.any:
            content_left = bool(stated.rest) and read_followup(stated.rest).has_subject
            turn = preference_turn(stated, ctx.preferences, lang, content_left)
            for line in turn.lines:
                dispatcher.utter_message(
                    text=line,
                    json_message={"type": "preferences", "preferences": list(turn.kept)},
                )
            ctx = dataclasses.replace(ctx, preferences=turn.kept)
            one_off = turn.one_off
            if not turn.asks_more:
                await _save_context(store, cid, ctx)
                return _slots(ctx)
        if plan.kind == "language":
            ctx = await self._repeat(dispatcher, tracker, ctx, lang)
        elif plan.kind == "clarify":
            _clarify(dispatcher, plan, lang)
        elif plan.kind == "followup":
            ctx = await self._followup(dispatcher, tracker, text, plan, ctx, lang)
        else:
            ctx = await self._new_question(
                dispatcher, tracker, text, intent, asked, ctx, lang, one_off
            )
        await _save_context(store, cid, ctx)
        return _slots(ctx)

    def _attributes(self) -> list[str]:
        """The attribute words the live catalog uses (what preferences can name)."""
        try:
            return list(self._retriever().snapshot.catalog_columns.attribute)
        except Exception:  # noqa: BLE001 - no retriever: no preferences, the question still gets its reply
            return []

    async def _new_question(
        self,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        text: str,
        intent: str | None,
        asked: FollowUp,
        ctx: Context,
        lang: str,
        one_off: tuple[str, ...] = (),
    ) -> Context:
        # "in stock", "under 2 euros", "两欧元以下": the products are searched with that filter
        wanted, _ = filter_from_text(text)
        prefs = ctx.preferences + one_off
        product_filter = as_filter(prefs, None if wanted.empty else wanted)
        cid = tracker.sender_id

        def ask() -> tuple[QueryResult, tuple[str, ...]]:
            """The answer, with the shopper's preferences as a filter; when they leave no
            product to show but the question has products without them ("vegan", then
            "I want cheese"), the later wish wins: those products, and the preferences they
            break are dropped. Only the result shown is logged."""
            retriever = self._retriever()

            def query(f: ProductFilter | None) -> QueryResult:
                return retriever.query(
                    text,
                    channel="rasa",
                    k_products=4,
                    k_faq=3,
                    # the NLU's follow-up that names its own subject ("is the kiwi in
                    # stock?") is a product question; for any other intent the product
                    # gate decides whether products answer what the FAQ cannot
                    prefer_products=True if intent in ("ask_product", "ask_followup") else None,
                    product_filter=f,
                    log=False,
                )

            result, dropped = query(product_filter), ()
            if prefs and result.answered_with != "products":
                plain = query(None if wanted.empty else wanted)
                if plain.answered_with == "products" and plain.shown_products:
                    dropped = violated(prefs, plain.shown_products[0].product.attributes)
                    if dropped:
                        result = plain
            retriever.log_result(result, conversation_id=cid, channel="rasa")
            return result, dropped

        answered = await _ask(dispatcher, tracker, lang, self._timeout_s, ask)
        if answered is None:
            return ctx.showing()
        result, dropped = answered
        if dropped:
            ctx = dataclasses.replace(
                ctx, preferences=tuple(p for p in ctx.preferences if p not in dropped)
            )
            top = result.shown_products[0].product.name(lang)
            dispatcher.utter_message(text=say_preference("dropped", lang, dropped, top))
        if result.answered_with == "products":
            active = tuple(p for p in prefs if p not in dropped)
            if active:  # the card says why: "lactose-free, as you asked"
                dispatcher.utter_message(text=say_preference("applied", lang, active))
            if not wanted.empty:  # say which filter the cards answer
                dispatcher.utter_message(text=describe_filter(wanted, lang))
            shown = result.shown_products
            if asked.aspect in ("price", "stock") and shown:  # "is the kiwi in stock?"
                plan = TurnPlan("followup", aspect=asked.aspect, targets=(shown[0].product.id,))
                answer = answer_followup(
                    plan, lang, self._retriever().snapshot.catalog.get, _no_similar
                )
                for line in answer.lines if answer else ():
                    dispatcher.utter_message(text=line)
            dispatcher.utter_message(
                response=_response("utter_products", lang),
                json_message=_products_payload(result, lang),
            )
            return ctx.showing([m.product.id for m in shown], question=result.text)
        if result.decision is Decision.ANSWER:
            best = result.replies[0]
            _say_answer(dispatcher, self._retriever(), best.entry, lang, result)
            return ctx.showing(faq_id=best.entry.id, question=result.text)
        _hand_off(dispatcher, result, lang)
        return ctx.showing(question=result.text)

    async def _followup(
        self,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        text: str,
        plan: TurnPlan,
        ctx: Context,
        lang: str,
    ) -> Context:
        retriever = self._retriever()

        wanted = as_filter(ctx.preferences)  # "anything cheaper?" of a vegan: vegan ones

        def similar(pid: str, k: int, keep: Callable[[Product], bool] | None) -> list[Any]:
            if wanted is not None:
                inner = keep

                def keep(p: Product) -> bool:
                    return wanted.matches(p) and (inner is None or inner(p))

            return retriever.similar_products(pid, max(1, k), keep=keep)

        def answer() -> tuple[FollowUpAnswer | None, str | None]:
            found = answer_followup(plan, lang, retriever.snapshot.catalog.get, similar)
            if found is None:
                return None, None
            qid = retriever.record_followup(
                text, found.products, conversation_id=tracker.sender_id, reason=found.reason
            )
            return found, qid

        t0 = time.perf_counter()
        try:
            found, query_id = await asyncio.wait_for(asyncio.to_thread(answer), self._timeout_s)
        except Exception as exc:  # noqa: BLE001 - never leave the shopper in silence
            log.warning("follow-up failed for conversation %s: %s", tracker.sender_id, exc)
            dispatcher.utter_message(
                response=_response("utter_handoff", lang),
                json_message={"handoff": True, "reason": "retrieval unavailable"},
            )
            return ctx
        if found is None:  # the products shown were taken out of the catalog since
            _clarify(dispatcher, TurnPlan("clarify", reason="nothing shown"), lang)
            return ctx.showing()
        for line in found.lines[:-1]:
            dispatcher.utter_message(text=line)
        dispatcher.utter_message(
            text=found.lines[-1],
            json_message={
                "type": "products",
                "followup": plan.aspect,
                "query_id": query_id,
                "products": [
                    {**m.product.card(lang), "score": round(m.score, 4)} for m in found.products
                ],
                "filter": None,
                "retrieval_ms": round((time.perf_counter() - t0) * 1e3, 2),
            },
        )
        if plan.aspect in ("price", "stock", "details"):
            # still about the same cards ("and the second one?" keeps working); "it" now
            # means the product this turn was about
            return ctx.focused(plan.targets[0] if len(plan.targets) == 1 else None)
        return ctx.showing(found.product_ids, question=ctx.question)

    async def _repeat(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, ctx: Context, lang: str
    ) -> Context:
        """The last answer again, in the language the shopper just asked for."""
        retriever = self._retriever()
        snap = retriever.snapshot
        if ctx.faq_id is not None and snap.faq.get(ctx.faq_id) is not None:
            _say_answer(dispatcher, retriever, snap.faq.get(ctx.faq_id), lang, None)
            return ctx
        shown = (ctx.focus,) if ctx.focus else ctx.products  # the last answer, not the list
        cards = [p.card(lang) for p in (snap.catalog.get(pid) for pid in shown) if p]
        if cards:
            dispatcher.utter_message(
                response=_response("utter_products", lang),
                json_message={"type": "products", "followup": "language", "products": cards},
            )
            return ctx
        dispatcher.utter_message(
            response=_response("utter_language", lang), json_message={"type": "language"}
        )
        return ctx


class ActionAnswerFollowup(ActionAnswerQuestion):
    """The action of the ``ask_followup`` intent ("is it in stock?", "the second one"):
    the same turn logic, so a message the NLU took for a follow-up but that names its own
    subject is still answered as a new question."""

    def name(self) -> str:
        return "action_answer_followup"


def _no_similar(pid: str, k: int, keep: Callable[[Product], bool] | None) -> list[Any]:
    return []


async def _load_context(store: ConversationStore | None, cid: str) -> Context:
    if store is None:
        return Context()
    try:
        return await asyncio.to_thread(store.load, cid)
    except StoreError as exc:  # answer as a new question rather than not at all
        log.warning("no conversation context for %s: %s", cid, exc)
        return Context()


async def _save_context(store: ConversationStore | None, cid: str, ctx: Context) -> None:
    if store is None:
        return
    try:
        await asyncio.to_thread(store.save, cid, ctx)
    except StoreError as exc:
        log.warning("could not save the conversation context of %s: %s", cid, exc)


def _slots(ctx: Context) -> list[dict[str, Any]]:
    return [SlotSet("shown_products", list(ctx.products)), SlotSet("shown_faq", ctx.faq_id)]


def _clarify(dispatcher: CollectingDispatcher, plan: TurnPlan, lang: str) -> None:
    if plan.reason == "position":
        dispatcher.utter_message(
            response=_response("utter_clarify_position", lang),
            json_message={"type": "clarify", "reason": "position", "shown": plan.shown},
            shown=plan.shown,
        )
        return
    dispatcher.utter_message(
        response=_response("utter_clarify_product", lang),
        json_message={"type": "clarify", "reason": plan.reason},
    )


def _say_answer(
    dispatcher: CollectingDispatcher,
    retriever: Retriever,
    entry: Any,
    lang: str,
    result: QueryResult | None,
) -> None:
    """An FAQ entry's answer in the shopper's language where the bank has it."""
    text = answer_in_language(retriever, entry.group or entry.id, lang) or entry.answer
    payload: dict[str, Any] = {"type": "answer", "faq_id": entry.id}
    if result is not None:
        best = result.replies[0]
        payload |= {
            "query_id": result.query_id,
            "score": round(best.score, 4),
            "retrieval_ms": _total_ms(result),
        }
    dispatcher.utter_message(text=text, json_message=payload)


class ActionAnswerPhoto(Action):
    """A photo the shopper attached in the chat window (stored by the shop page's upload
    route; the message names it as ``/send_photo{"photo_id": "..."}``): product matches."""

    def __init__(
        self,
        retriever: Callable[[], Retriever],
        uploads: Callable[[], UploadStore],
        timeout_s: float = 3.0,
        contexts: Callable[[], ConversationStore | None] | None = None,
    ):
        self._retriever = retriever
        self._uploads = uploads
        self._timeout_s = timeout_s
        self._contexts = contexts or (lambda: None)

    def name(self) -> str:
        return "action_answer_photo"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        store = self._contexts()
        ctx = await _load_context(store, tracker.sender_id)
        lang = ctx.lang or conversation_language(tracker)
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
            ctx = ctx.showing([m.product.id for m in result.shown_products])
        else:
            _hand_off(dispatcher, result, lang)
            ctx = ctx.showing()
        await _save_context(store, tracker.sender_id, ctx)
        return _slots(ctx)


async def _ask(
    dispatcher: CollectingDispatcher,
    tracker: Tracker,
    lang: str,
    timeout_s: float,
    call: Callable[[], T],
) -> T | None:
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
