"""What the bot's actions say: the shopper's language, the responses and payloads the
actions share, the retrieval call with its deadline, and the conversation context's load,
save and slots (:mod:`retrieval.service.actions`, :mod:`retrieval.service.question_action`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from rasa_sdk import Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from ..catalog import Product
from ..conversation.context import Context, ConversationStore
from ..conversation.turns import TurnPlan
from ..errors import StoreError
from ..filters import ProductFilter
from ..product_search import ProductMatch
from ..querytext import has_han
from ..results import QueryResult
from ..retriever import Retriever
from .admission import QueryGate

__all__ = [
    "answer_in_language",
    "conversation_language",
    "product_cards",
    "shopper_language",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


def shopper_language(text: str) -> str:
    """'zh' when the message holds Chinese characters, else 'en'."""
    return "zh" if has_han(text or "") else "en"


def conversation_language(tracker: Tracker) -> str:
    """The language of the shopper's latest typed message ('/intent' messages carry none)."""
    for event in reversed(tracker.events):
        if event.get("event") == "user":
            text = event.get("text") or ""
            if text and not text.startswith("/"):
                return shopper_language(text)
    return "en"


def response_name(name: str, lang: str) -> str:
    return f"{name}_zh" if lang == "zh" else name


def no_similar(pid: str, k: int, keep: Callable[[Product], bool] | None) -> list[Any]:
    return []


async def load_context(store: ConversationStore | None, cid: str) -> Context:
    if store is None:
        return Context()
    try:
        return await asyncio.to_thread(store.load, cid)
    except StoreError as exc:  # answer as a new question rather than not at all
        log.warning("no conversation context for %s: %s", cid, exc)
        return Context()


async def save_context(store: ConversationStore | None, cid: str, ctx: Context) -> None:
    if store is None:
        return
    try:
        await asyncio.to_thread(store.save, cid, ctx)
    except StoreError as exc:
        log.warning("could not save the conversation context of %s: %s", cid, exc)


def slots(ctx: Context) -> list[dict[str, Any]]:
    return [SlotSet("shown_products", list(ctx.products)), SlotSet("shown_faq", ctx.faq_id)]


def clarify(dispatcher: CollectingDispatcher, plan: TurnPlan, lang: str) -> None:
    if plan.reason == "position":
        dispatcher.utter_message(
            response=response_name("utter_clarify_position", lang),
            json_message={"type": "clarify", "reason": "position", "shown": plan.shown},
            shown=plan.shown,
        )
        return
    dispatcher.utter_message(
        response=response_name("utter_clarify_product", lang),
        json_message={"type": "clarify", "reason": plan.reason},
    )


def say_answer(
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
            "retrieval_ms": total_ms(result),
        }
    dispatcher.utter_message(text=text, json_message=payload)


def off_loop(gate: QueryGate | None, call: Callable[[], T]) -> Awaitable[T]:
    """A retrieval call in a worker thread: through the service's query gate when it has one
    (the same places and waiting line as ``POST /v1/query``)."""
    return gate.run(call) if gate is not None else asyncio.to_thread(call)


async def call_retrieval(
    dispatcher: CollectingDispatcher,
    tracker: Tracker,
    lang: str,
    timeout_s: float,
    call: Callable[[], T],
    gate: QueryGate | None = None,
) -> T | None:
    """Run a retrieval call off the event loop (through ``gate``) with a deadline. On any
    failure, a full waiting line included, the shopper gets the hand-off message (never
    silence) and ``None`` comes back."""
    try:
        return await asyncio.wait_for(off_loop(gate, call), timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001 - unavailable, slow or refused: never leave the shopper in silence
        log.warning("retrieval failed for conversation %s: %s", tracker.sender_id, exc)
        dispatcher.utter_message(
            response=response_name("utter_handoff", lang),
            json_message={"handoff": True, "reason": "retrieval unavailable"},
        )
        return None


def hand_off(dispatcher: CollectingDispatcher, result: QueryResult, lang: str) -> None:
    """The hand-off message, with the logged query it refers to (the agents' queue entry)."""
    dispatcher.utter_message(
        response=response_name("utter_handoff", lang),
        json_message={
            "handoff": True,
            "query_id": result.query_id,
            "decision": result.decision.value,
            "retrieval_ms": total_ms(result),
        },
    )


def total_ms(result: QueryResult) -> float:
    return round(float(result.timings_ms.get("total", sum(result.timings_ms.values()))), 2)


def products_payload(result: QueryResult, lang: str = "en") -> dict[str, Any]:
    return {
        "type": "products",
        "query_id": result.query_id,
        "products": product_cards(result, lang),
        "filter": None if result.product_filter is None else result.product_filter.public(),
        "retrieval_ms": total_ms(result),
    }


def product_cards(result: QueryResult, lang: str = "en") -> list[dict[str, Any]]:
    """The products past the product gate as cards, titled in the shopper's language where
    the catalog can."""
    return [{**m.product.card(lang), "score": round(m.score, 4)} for m in result.shown_products]


def answer_in_language(retriever: Retriever, group: str, lang: str) -> str | None:
    """The answer of the group's entry written in the shopper's language, if the bank has one."""
    entry = retriever.snapshot.entry_in_language(group, lang)
    return entry.answer if entry is not None else None


def preferred_similar(
    retriever: Retriever, wanted: ProductFilter | None
) -> Callable[[str, int, Callable[[Product], bool] | None], list[ProductMatch]]:
    """The retriever's nearest products to a catalog product among those ``keep`` accepts
    and the shopper's preferences (``wanted``) allow: what follow-ups and recommendations
    search with."""

    def similar(pid: str, k: int, keep: Callable[[Product], bool] | None) -> list[ProductMatch]:
        if wanted is not None:
            inner = keep

            def keep(p: Product) -> bool:
                return wanted.matches(p) and (inner is None or inner(p))

        return retriever.similar_products(pid, max(1, min(k, retriever.limits.max_k)), keep=keep)

    return similar


def suggestion_payload(
    kind: str, query_id: str | None, matches: list[ProductMatch], lang: str
) -> dict[str, Any]:
    """The cards of a follow-up or a recommendation (``kind``: price, cheaper, popular ...),
    each with its score and, for recommendations, its basis."""
    return {
        "type": "products",
        "followup": kind,
        "query_id": query_id,
        "products": [
            {**m.product.card(lang), "score": round(m.score, 4)}
            | ({"basis": m.matched} if kind in ("popular", "together") else {})
            for m in matches
        ],
        "filter": None,
    }
