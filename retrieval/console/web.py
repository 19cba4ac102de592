"""Shared pieces of the console's HTTP layer: the console object, the agent behind a request,
cookies and security headers."""

from __future__ import annotations

import asyncio

from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from .auth import COOKIE, AgentSession, check_csrf, login, session_for
from .state import Console

__all__ = ["HEADERS", "agent_of", "console_of", "log_in", "set_session_cookie"]

HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'none'; style-src 'self'; "
    "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


def console_of(request: Request) -> Console:
    return request.app.state.console


async def agent_of(
    request: Request, csrf: str | None = None, *, check: bool = False
) -> AgentSession:
    """The logged-in agent (:class:`NotLoggedIn` otherwise); with ``check``, the CSRF token too."""
    console = console_of(request)
    agent = await run_in_threadpool(session_for, console.engine, request.cookies.get(COOKIE))
    if check:
        check_csrf(agent, csrf)
    return agent


def set_session_cookie(response: Response, token: str, request: Request) -> None:
    s = console_of(request).settings
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(s.console_session_ttl_s),
        path="/agent",
        httponly=True,
        samesite="strict",
        secure=s.console_cookie_secure,
    )


async def log_in(request: Request, name: str, password: str) -> tuple[str, AgentSession]:
    """Log in through the console's throttle, keyed by the client's address; a slow-down
    is waited here, without holding a worker thread."""
    console = console_of(request)
    throttle = console.login_throttle
    address = request.client.host if request.client else "-"
    delay = throttle.admit(address, name)
    if delay > 0:
        await asyncio.sleep(delay)
    return await run_in_threadpool(
        login,
        console.engine,
        name,
        password,
        console.settings.console_session_ttl_s,
        throttle,
        address,
        admitted=True,
    )
