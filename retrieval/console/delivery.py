"""Putting an agent's reply into the conversation's Rasa tracker.

The shopper's page gets the reply by polling this service (``/shop/api/updates``), so the
reply reaches the shopper even when Rasa is down. The tracker copy keeps Rasa's view of the
conversation complete: a ``bot`` event appended through Rasa's HTTP API (``rasa run
--enable-api --auth-token TOKEN``; the launcher sets a random token per run).
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import quote

import httpx

__all__ = ["RasaTracker"]

log = logging.getLogger(__name__)


class RasaTracker:
    """Appends events to Rasa trackers: ``POST /conversations/{id}/tracker/events``."""

    def __init__(
        self,
        rasa_url: str,
        token: str | None,
        *,
        timeout_s: float = 5.0,
        client: httpx.AsyncClient | None = None,
    ):
        self.base = rasa_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self._client = client or httpx.AsyncClient(timeout=timeout_s)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def append_bot(
        self, conversation_id: str, text: str, metadata: dict[str, Any]
    ) -> tuple[bool, str]:
        """Append the reply as a ``bot`` utterance; returns (done, what happened)."""
        if not self.token:
            return False, "Rasa's HTTP API is not configured (rasa_token is empty)"
        url = f"{self.base}/conversations/{quote(conversation_id, safe='')}/tracker/events"
        event = {"event": "bot", "text": text, "timestamp": time.time(), "metadata": metadata}
        try:
            r = await self._client.post(
                url,
                params={"token": self.token, "include_events": "NONE"},
                json=event,
                timeout=self.timeout_s,
            )
        except httpx.HTTPError as exc:
            log.warning("cannot reach Rasa at %s: %s", self.base, exc)
            return False, f"Rasa is not reachable ({type(exc).__name__})"
        if r.status_code != 200:
            log.error("Rasa refused the tracker event: %s %s", r.status_code, r.text[:300])
            return False, f"Rasa answered HTTP {r.status_code}"
        return True, "added to the Rasa tracker"
