"""The question action: answers a shopper's question from the FAQ bank or the catalog, a
follow-up about the cards just shown, a preference, or hands the question to an agent
(run inside the retrieval service, like every action: :mod:`retrieval.service.actions`)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.executor import CollectingDispatcher

from ..conversation.context import Context, ConversationStore
from ..conversation.followup import FollowUp, read_followup
from ..conversation.preferences import as_filter, preference_turn, read_preferences, violated
from ..conversation.preferences import say as say_preference
from ..conversation.turns import FollowUpAnswer, TurnPlan, answer_followup, plan_turn
from ..decision import Decision
from ..filter_phrases import describe as describe_filter
from ..filter_phrases import filter_from_text
from ..filters import ProductFilter
from ..product_search import ProductMatch
from ..results import QueryResult
from ..retriever import Retriever
from ..store.events import Interests
from .admission import QueryGate
from .bot_replies import (
    call_retrieval,
    clarify,
    hand_off,
    load_context,
    no_similar,
    off_loop,
    preferred_similar,
    products_payload,
    response_name,
    save_context,
    say_answer,
    shopper_language,
    slots,
    suggestion_payload,
)
from .recommend_replies import recommendations

__all__ = ["ActionAnswerFollowup", "ActionAnswerQuestion"]

log = logging.getLogger(__name__)


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
        interests: Callable[[], Interests | None] | None = None,
        gate: QueryGate | None = None,
    ):
        self._retriever = retriever
        self._timeout_s = timeout_s
        self._gate = gate
        self._contexts = contexts or (lambda: None)
        self._interests = interests or (lambda: None)

    def name(self) -> str:
        return "action_answer_question"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        text = tracker.latest_message.get("text") or ""
        intent = (tracker.latest_message.get("intent") or {}).get("name")
        cid = tracker.sender_id
        store = self._contexts()
        ctx = await load_context(store, cid)
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
                await save_context(store, cid, ctx)
                return slots(ctx)
            if stated.found:  # "which milk do you have? I'm lactose intolerant": products
                intent = "ask_product"
        if plan.kind == "language":
            ctx = await self._repeat(dispatcher, tracker, ctx, lang)
        elif plan.kind == "clarify":
            clarify(dispatcher, plan, lang)
        elif plan.kind == "popular":
            ctx = await self._recommend(dispatcher, tracker, text, None, asked, ctx, lang)
        elif plan.kind == "together":  # "what goes well with avocado?": find it first
            ctx = await self._together_search(dispatcher, tracker, text, asked, ctx, lang, one_off)
        elif plan.kind == "followup" and plan.aspect == "together":
            ctx = await self._recommend(
                dispatcher, tracker, text, plan.targets[0], asked, ctx, lang
            )
        elif plan.kind == "followup":
            ctx = await self._followup(dispatcher, tracker, text, plan, ctx, lang)
        else:
            ctx = await self._new_question(
                dispatcher, tracker, text, intent, asked, ctx, lang, one_off
            )
        await save_context(store, cid, ctx)
        return slots(ctx)

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

        answered = await call_retrieval(dispatcher, tracker, lang, self._timeout_s, ask, self._gate)
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
                    plan, lang, self._retriever().snapshot.catalog.get, no_similar
                )
                for line in answer.lines if answer else ():
                    dispatcher.utter_message(text=line)
            dispatcher.utter_message(
                response=response_name("utter_products", lang),
                json_message=products_payload(result, lang),
            )
            return ctx.showing([m.product.id for m in shown], question=result.text)
        if result.decision is Decision.ANSWER:
            best = result.replies[0]
            say_answer(dispatcher, self._retriever(), best.entry, lang, result)
            return ctx.showing(faq_id=best.entry.id, question=result.text)
        hand_off(dispatcher, result, lang)
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
        # "anything cheaper?" of a vegan: vegan ones
        similar = preferred_similar(retriever, as_filter(ctx.preferences))

        def answer() -> tuple[FollowUpAnswer | None, str | None]:
            found = answer_followup(plan, lang, retriever.snapshot.catalog.get, similar)
            if found is None:
                return None, None
            qid = retriever.record_followup(
                text,
                found.products,
                conversation_id=tracker.sender_id,
                reason=found.reason,
                suggested=plan.aspect not in ("price", "stock", "details"),
            )
            return found, qid

        t0 = time.perf_counter()
        answered = await call_retrieval(
            dispatcher, tracker, lang, self._timeout_s, answer, self._gate
        )
        if answered is None:
            return ctx
        found, query_id = answered
        if found is None:  # the products shown were taken out of the catalog since
            clarify(dispatcher, TurnPlan("clarify", reason="nothing shown"), lang)
            return ctx.showing()
        for line in found.lines[:-1]:
            dispatcher.utter_message(text=line)
        payload = suggestion_payload(plan.aspect or "details", query_id, found.products, lang)
        payload["retrieval_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
        dispatcher.utter_message(text=found.lines[-1], json_message=payload)
        if plan.aspect in ("price", "stock", "details"):
            # still about the same cards ("and the second one?" keeps working); "it" now
            # means the product this turn was about
            return ctx.focused(plan.targets[0] if len(plan.targets) == 1 else None)
        return ctx.showing(found.product_ids, question=ctx.question)

    async def _together_search(
        self,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        text: str,
        asked: FollowUp,
        ctx: Context,
        lang: str,
        one_off: tuple[str, ...],
    ) -> Context:
        """ "What goes well with avocado?": the product the question names, then what goes
        with it; a question that names no product is answered as any new question."""
        retriever = self._retriever()
        try:
            found = await asyncio.wait_for(
                off_loop(
                    self._gate,
                    lambda: retriever.query(
                        asked.rest, k_products=1, prefer_products=True, log=False
                    ),
                ),
                self._timeout_s,
            )
        except Exception:  # noqa: BLE001 - answered as a new question below
            found = None
        if found is None or found.answered_with != "products" or not found.shown_products:
            return await self._new_question(
                dispatcher, tracker, text, "ask_product", asked, ctx, lang, one_off
            )
        return await self._recommend(
            dispatcher, tracker, text, found.shown_products[0].product.id, asked, ctx, lang
        )

    async def _recommend(
        self,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        text: str,
        product_id: str | None,
        asked: FollowUp,
        ctx: Context,
        lang: str,
    ) -> Context:
        """Popular products (``product_id`` None) or what goes well with a product, from
        the shoppers' interest in the query log and clicks (:mod:`retrieval.recommend`)."""
        retriever = self._retriever()
        interests = self._interests()
        wanted = as_filter(ctx.preferences)

        def run() -> tuple[list[str], list[ProductMatch], str | None]:
            lines, matches, reason = recommendations(
                retriever, interests, product_id, asked.rest, wanted, lang
            )
            qid = retriever.record_followup(
                text, matches, conversation_id=tracker.sender_id, reason=reason, suggested=True
            )
            return lines, matches, qid

        found = await call_retrieval(dispatcher, tracker, lang, self._timeout_s, run, self._gate)
        if found is None:
            return ctx
        lines, matches, query_id = found
        kind = "popular" if product_id is None else "together"
        dispatcher.utter_message(
            text=lines[0], json_message=suggestion_payload(kind, query_id, matches, lang)
        )
        return ctx.showing([m.product.id for m in matches]) if matches else ctx

    async def _repeat(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, ctx: Context, lang: str
    ) -> Context:
        """The last answer again, in the language the shopper just asked for."""
        retriever = self._retriever()
        snap = retriever.snapshot
        if ctx.faq_id is not None and snap.faq.get(ctx.faq_id) is not None:
            say_answer(dispatcher, retriever, snap.faq.get(ctx.faq_id), lang, None)
            return ctx
        shown = (ctx.focus,) if ctx.focus else ctx.products  # the last answer, not the list
        cards = [p.card(lang) for p in (snap.catalog.get(pid) for pid in shown) if p]
        if cards:
            dispatcher.utter_message(
                response=response_name("utter_products", lang),
                json_message={"type": "products", "followup": "language", "products": cards},
            )
            return ctx
        dispatcher.utter_message(
            response=response_name("utter_language", lang), json_message={"type": "language"}
        )
        return ctx


class ActionAnswerFollowup(ActionAnswerQuestion):
    """The action of the ``ask_followup`` intent ("is it in stock?", "the second one"):
    the same turn logic, so a message the NLU took for a follow-up but that names its own
    subject is still answered as a new question."""

    def name(self) -> str:
        return "action_answer_followup"
