"""The chat window's path to the Rasa server: one relay per service process.

The shop page talks only to this service (same origin, no CORS); the relay forwards a
shopper's message to Rasa's REST channel under the conversation id the page's cookie holds
(signed by the server, :class:`~retrieval.service.keys.ConversationIds`).
Messages from one conversation are relayed one at a time, in order (Rasa would serialise
them anyway); when more than ``max_pending`` are already waiting, the next one is refused
with :class:`Busy` so a stuck key or a script cannot queue unbounded work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from ..errors import Busy, InputError, TooLarge, Unavailable

__all__ = ["ChatRelay", "check_message"]

log = logging.getLogger(__name__)


def check_message(message: object, max_chars: int) -> str:
    """The shopper's text, or an error a person can act on."""
    if not isinstance(message, str):
        raise InputError("message must be text")
    if len(message) > max_chars:  # as sent, spaces included (what the API schema says)
        raise TooLarge(
            f"the message is {len(message):,} characters long; please keep it under {max_chars:,} "
            "characters"
        )
    text = message.strip()
    if not text:
        raise InputError("the message is empty: type a question first")
    if text.startswith("/"):
        # '/intent{...}' would let the page steer Rasa directly; the page never sends it
        text = "\u2215" + text[1:]  # shown the same, read by Rasa as text
    return text


class ChatRelay:
    """Forwards messages to Rasa's REST webhook, one at a time per conversation."""

    def __init__(
        self,
        rasa_url: str,
        *,
        timeout_s: float = 10.0,
        max_pending: int = 3,
        client: httpx.AsyncClient | None = None,
    ):
        self.webhook = rasa_url.rstrip("/") + "/webhooks/rest/webhook"
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self._client = client or httpx.AsyncClient(timeout=timeout_s)
        self._locks: dict[str, asyncio.Lock] = {}
        self._pending: dict[str, int] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    @contextmanager
    def _slot(self, conversation_id: str) -> Iterator[asyncio.Lock]:
        waiting = self._pending.get(conversation_id, 0)
        if waiting >= self.max_pending:
            raise Busy("you have sent several messages at once; please wait for the reply")
        self._pending[conversation_id] = waiting + 1
        lock = self._locks.setdefault(conversation_id, asyncio.Lock())
        try:
            yield lock
        finally:
            left = self._pending[conversation_id] - 1
            if left:
                self._pending[conversation_id] = left
            else:  # nothing waiting: forget the conversation, memory stays bounded
                del self._pending[conversation_id]
                self._locks.pop(conversation_id, None)

    async def send(self, conversation_id: str, message: str) -> list[dict[str, Any]]:
        """Relay one message; returns the bot's messages (``text`` and/or ``custom``)."""
        with self._slot(conversation_id) as lock:
            async with lock:
                try:
                    r = await self._client.post(
                        self.webhook,
                        json={"sender": conversation_id, "message": message},
                        timeout=self.timeout_s,
                    )
                except httpx.TimeoutException:
                    raise Unavailable(
                        "the assistant is taking too long to answer; please try again"
                    ) from None
                except httpx.TransportError as exc:
                    log.warning("Rasa at %s is unreachable: %s", self.webhook, exc)
                    raise Unavailable("the assistant is not available right now") from None
        if r.status_code != 200:
            log.error("Rasa answered %s: %s", r.status_code, r.text[:500])
            raise Unavailable("the assistant could not answer; please try again")
        try:
            messages = r.json()
        except ValueError:
            raise Unavailable("the assistant sent an unreadable reply") from None
        return [
            {k: v for k, v in m.items() if k in ("text", "custom", "image")}
            for m in messages
            if isinstance(m, dict)
        ]
