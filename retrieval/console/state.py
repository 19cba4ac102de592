"""The console's resources in one object, built by the app factory and kept on ``app.state``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from ..settings import Settings
from ..store import make_engine, migrate
from . import actions
from .auth import AgentSession, LoginThrottle
from .delivery import RasaTracker

__all__ = ["Console", "open_console"]

log = logging.getLogger(__name__)


class Console:
    """SQL engine, Rasa tracker client and the retriever's FAQ bank, catalog and encoder."""

    def __init__(
        self,
        settings: Settings,
        retriever: Callable[[], Any],
        engine: Engine,
        *,
        own_engine: bool = False,
        tracker: RasaTracker | None = None,
    ):
        self.settings = settings
        self.login_throttle = LoginThrottle()
        self._retriever = retriever
        self._engine = engine
        self._own_engine = own_engine
        self._schema_ready = False
        self._lock = threading.Lock()
        self.tracker = tracker or RasaTracker(
            settings.rasa_url, settings.rasa_token, timeout_s=settings.chat_timeout_s
        )

    @property
    def engine(self) -> Engine:
        """The engine, with the schema brought up to date before first use."""
        if not self._schema_ready:
            with self._lock:
                if not self._schema_ready:
                    migrate(self._engine)
                    self._schema_ready = True
        return self._engine

    @property
    def drafts_path(self) -> Path:
        """Where draft FAQ entries go: ``faq_drafts_path``, which re-indexing merges into
        the bank (default ``data_dir/faq-drafts.jsonl``)."""
        return self.settings.resolved_faq_drafts_path

    @property
    def faq(self) -> Any:
        return self._retriever().snapshot.faq

    @property
    def catalog(self) -> Any:
        return self._retriever().snapshot.catalog

    def encode(self, texts: list[str]) -> Any:
        """Vectors for clustering questions: the multilingual encoder when there is one (it
        separates Chinese topics and joins the language versions of one question; MiniLM
        scores unrelated Chinese questions ~0.7 alike), else the text encoder."""
        r = self._retriever()
        encoder = getattr(r, "multilingual_encoder", None) or r.text_encoder
        return encoder.encode(texts)

    async def aclose(self) -> None:
        await self.tracker.aclose()
        if self._own_engine:
            self._engine.dispose()

    async def act(self, agent: AgentSession, query_id: str, **kwargs: Any) -> dict[str, Any]:
        """Store an agent's action and, for a reply, put it into the Rasa tracker.

        The reply is stored first (the shop page shows it from SQL), so a Rasa that is down
        loses nothing; the answer says whether the tracker got it."""
        s = self.settings
        result = await run_in_threadpool(
            actions.act,
            self.engine,
            agent,
            query_id,
            faq=self.faq,
            claim_ttl_s=s.console_claim_ttl_s,
            max_chars=s.console_max_reply_chars,
            **kwargs,
        )
        out: dict[str, Any] = {
            "action_id": result.action_id,
            "action": result.action,
            "query_id": result.query_id,
            "version": result.version,
            "text": result.final_text,
            "shown_to_shopper": result.final_text is not None,
            "rasa_tracker": None,
            "detail": "the suggestions were rejected; nothing was sent to the shopper",
        }
        if result.final_text is not None:
            done, detail = await self.tracker.append_bot(
                result.conversation_id,
                result.final_text,
                {"agent": agent.name, "query_id": query_id, "action": result.action},
            )
            await run_in_threadpool(
                actions.record_delivery, self.engine, result.action_id, done, detail
            )
            out["rasa_tracker"] = done
            out["detail"] = "sent: the shopper's chat window shows the reply; " + (
                "it was added to the Rasa tracker" if done else f"NOT in the Rasa tracker: {detail}"
            )
        return out


def open_console(
    settings: Settings, retriever: Callable[[], Any], engine: Engine | None
) -> Console:
    """The console for an app; ``engine`` is the query log's (None: one of its own)."""
    if engine is None:
        return Console(
            settings, retriever, make_engine(settings.resolved_database_url), own_engine=True
        )
    return Console(settings, retriever, engine)
