"""The agent console under ``/agent/``: the queue of questions the bot did not answer, accept /
edit / reject of suggested replies, the audit of automatic answers, unanswered-question
clusters turned into draft FAQ entries, and the numbers. See docs/console.md.

The web parts are imported on first use (``router``, ``open_console``), so the command line
(``retrieval agents``, and every other command whose parser lists it) starts quickly."""

from __future__ import annotations

from typing import Any

__all__ = ["Console", "open_console", "register", "router"]


def __getattr__(name: str) -> Any:
    if name == "router":
        from fastapi import APIRouter

        from .api import router as api_router
        from .pages import router as pages_router

        router = APIRouter()
        router.include_router(pages_router)
        router.include_router(api_router)
        globals()["router"] = router
        return router
    if name in ("Console", "open_console"):
        from . import state

        return getattr(state, name)
    if name == "register":
        from .cli import register

        return register
    raise AttributeError(name)
