"""The agent console under ``/agent/``: the queue of questions the bot did not answer, accept /
edit / reject of suggested replies, the audit of automatic answers, unanswered-question
clusters turned into draft FAQ entries, and the numbers. See docs/console.md."""

from fastapi import APIRouter

from .api import router as api_router
from .cli import register
from .pages import router as pages_router
from .state import Console, open_console

__all__ = ["Console", "open_console", "register", "router"]

router = APIRouter()
router.include_router(pages_router)
router.include_router(api_router)
