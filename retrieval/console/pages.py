"""The console's server-rendered pages under ``/agent/`` (Jinja2, autoescaped, no script).

Forms post back here with the session's CSRF token; a successful action redirects (303) to
a page that shows its result, so reloading never sends a reply twice. Reading a page never
changes anything: a question is claimed by the queue's "Open" button (a POST). A form is
parsed only after the session is checked, within bounds (fields, no files, part size).
Errors are rendered as a page with the same status the JSON API would give (401, 403, 404,
409, 413, 422, 429).
"""

from __future__ import annotations

import functools
import logging
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from ..errors import Busy, InputError, NotLoggedIn, RetrievalError
from ..httplimits import read_form
from ..store.outage import DATABASE_DOWN, RETRY_AFTER_S, UNREACHABLE, is_outage, summary
from . import actions, audit, auth, clusters, tasks
from .numbers import numbers as compute_numbers
from .numbers import rates_chart
from .web import HEADERS, agent_of, console_of, log_in, set_session_cookie

__all__ = ["router"]

HERE = Path(__file__).parent
LOGIN_COOKIE = "agent_login"
MAX_FORM = 256 * 1024  # the longest text field (a reply, a draft's examples)
MAX_FIELDS = 16

log = logging.getLogger(__name__)
router = APIRouter(prefix="/agent", include_in_schema=False)
_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_env.filters["when"] = lambda dt: dt.strftime("%Y-%m-%d %H:%M:%S") if dt else ""
_env.filters["score"] = lambda v: "-" if v is None else f"{v:.3f}"
_env.filters["pct"] = lambda v: "-" if v is None else f"{v:.0%}"


def render(
    name: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any
) -> HTMLResponse:
    html = _env.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status, headers={**HEADERS, **(headers or {})})


def html_errors(fn: Callable) -> Callable:
    """Render :class:`RetrievalError` as a page with its HTTP status, and a database that
    cannot be used as a 503 page that names no server (store/outage.py)."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Response:
        try:
            return await fn(*args, **kwargs)
        except (RetrievalError, *UNREACHABLE) as exc:
            if is_outage(exc):
                log.warning("console page: the database cannot be used: %s", summary(exc))
                return render(
                    "message.html",
                    status=503,
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                    title="The console cannot reach its database",
                    message=DATABASE_DOWN,
                    login=False,
                    agent=None,
                )
            if not isinstance(exc, RetrievalError):
                raise  # a bug (a missing table), not an outage: a 500, logged
            return render(
                "message.html",
                status=exc.http_status,
                title="Please log in" if isinstance(exc, NotLoggedIn) else "That did not work",
                message=str(exc),
                login=isinstance(exc, NotLoggedIn),
                agent=None,
            )

    return wrapper


async def _form(request: Request) -> dict[str, str]:
    form = await read_form(request, max_fields=MAX_FIELDS, max_files=0, max_part_size=MAX_FORM)
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def _agent(request: Request) -> auth.AgentSession:
    return await agent_of(request)


async def _agent_and_form(request: Request) -> tuple[auth.AgentSession, dict[str, str]]:
    """The logged-in agent, then (only then) the form, then its CSRF token."""
    agent = await agent_of(request)
    form = await _form(request)
    auth.check_csrf(agent, form.get("csrf"))
    return agent, form


def _int(value: str | None, name: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise InputError(f"{name} must be a whole number") from None


@router.get("/static/console.css")
async def console_css() -> FileResponse:
    return FileResponse(HERE / "static" / "console.css", headers={"Cache-Control": "no-cache"})


@router.get("/login")
@html_errors
async def login_page(request: Request) -> Response:
    token = secrets.token_urlsafe(24)
    response = render("login.html", login_csrf=token, agent=None, error=None)
    response.set_cookie(
        LOGIN_COOKIE, token, max_age=3600, path="/agent", httponly=True, samesite="strict"
    )
    return response


@router.post("/login")
@html_errors
async def login_submit(request: Request) -> Response:
    form = await _form(request)
    sent, cookie = form.get("login_csrf", ""), request.cookies.get(LOGIN_COOKIE, "")
    if not auth.same_token(sent, cookie):
        return render(
            "message.html",
            status=403,
            title="The login form expired",
            message="reload the login page and try again",
            login=True,
            agent=None,
        )
    try:
        token, _ = await log_in(request, form.get("name", ""), form.get("password", ""))
    except (NotLoggedIn, Busy) as exc:
        return render(
            "login.html", status=exc.http_status, login_csrf=cookie, agent=None, error=str(exc)
        )
    response = RedirectResponse("/agent/", status_code=303)
    set_session_cookie(response, token, request)
    response.delete_cookie(LOGIN_COOKIE, path="/agent")
    return response


@router.post("/logout")
@html_errors
async def logout(request: Request) -> Response:
    await _agent_and_form(request)
    await run_in_threadpool(
        auth.end_session, console_of(request).engine, request.cookies.get(auth.COOKIE)
    )
    response = RedirectResponse("/agent/login", status_code=303)
    response.delete_cookie(auth.COOKIE, path="/agent")
    return response


@router.get("/")
@html_errors
async def queue_page(request: Request) -> Response:
    agent = await _agent(request)
    items = await run_in_threadpool(tasks.queue, console_of(request).engine)
    return render("queue.html", agent=agent, items=items, page="queue")


@router.get("/questions/{query_id}")
@html_errors
async def question_page(request: Request, query_id: str) -> Response:
    agent = await _agent(request)
    console = console_of(request)
    q = await run_in_threadpool(
        tasks.question, console.engine, query_id, console.faq, console.catalog
    )
    done = _int(request.query_params.get("done"), "done")
    return render(
        "question.html",
        agent=agent,
        q=q,
        page="queue",
        done=next((a for a in q.actions if a["id"] == done), None),
        opened=int(time.time() * 1000),
        max_chars=console.settings.console_max_reply_chars,
    )


@router.post("/questions/{query_id}/claim")
@html_errors
async def question_claim(request: Request, query_id: str) -> Response:
    """The queue's "Open" button: reserve the question, then show it."""
    agent, _ = await _agent_and_form(request)
    console = console_of(request)
    await run_in_threadpool(tasks.question, console.engine, query_id)  # 404, task row
    await run_in_threadpool(
        actions.claim, console.engine, agent, query_id, console.settings.console_claim_ttl_s
    )
    return RedirectResponse(f"/agent/questions/{query_id}", status_code=303)


@router.post("/questions/{query_id}/act")
@html_errors
async def question_act(request: Request, query_id: str) -> Response:
    agent, form = await _agent_and_form(request)
    result = await console_of(request).act(
        agent,
        query_id,
        action=form.get("action", ""),
        version=_int(form.get("version"), "version") or 0,
        candidate_id=_int(form.get("candidate_id"), "candidate_id"),
        text=form.get("text"),
        reason=form.get("reason", ""),
        opened_ms=float(_int(form.get("opened"), "opened") or 0) or None,
    )
    return RedirectResponse(
        f"/agent/questions/{query_id}?done={result['action_id']}", status_code=303
    )


@router.get("/audit")
@html_errors
async def audit_page(request: Request) -> Response:
    agent = await _agent(request)
    p = request.query_params
    decision = p.get("decision", "answer")
    items = await run_in_threadpool(
        audit.audit,
        console_of(request).engine,
        day_from=audit.parse_day(p.get("from"), "from"),
        day_to=audit.parse_day(p.get("to"), "to"),
        decision=decision or None,
    )
    return render(
        "audit.html",
        agent=agent,
        items=items,
        page="audit",
        decision=decision,
        day_from=p.get("from", ""),
        day_to=p.get("to", ""),
        flagged=p.get("flagged"),
    )


@router.post("/audit/{query_id}/flag")
@html_errors
async def audit_flag(request: Request, query_id: str) -> Response:
    agent, form = await _agent_and_form(request)
    await run_in_threadpool(
        actions.flag, console_of(request).engine, agent, query_id, form.get("reason", "")
    )
    return RedirectResponse(f"/agent/audit?flagged={query_id}", status_code=303)


@router.get("/unanswered")
@html_errors
async def unanswered_page(request: Request) -> Response:
    agent = await _agent(request)
    console = console_of(request)
    found = await run_in_threadpool(
        clusters.unanswered_clusters,
        console.engine,
        console.encode,
        console.settings.console_cluster_threshold,
    )
    return render(
        "unanswered.html",
        agent=agent,
        clusters=found,
        page="unanswered",
        drafted=request.query_params.get("drafted"),
        drafts_path=str(console.drafts_path),
    )


@router.post("/unanswered/draft")
@html_errors
async def unanswered_draft(request: Request) -> Response:
    agent, form = await _agent_and_form(request)
    console = console_of(request)
    record = await run_in_threadpool(
        clusters.draft_entry,
        console.engine,
        console.drafts_path,
        agent,
        faq_id=form.get("id", ""),
        question=form.get("question", ""),
        answer=form.get("answer", ""),
        examples=form.get("examples", "").splitlines(),
        lang=form.get("lang", "en"),
        query_ids=[q for q in form.get("query_ids", "").split(",") if q],
        existing_ids=console.faq,
    )
    return RedirectResponse(f"/agent/unanswered?drafted={record['id']}", status_code=303)


@router.get("/numbers")
@html_errors
async def numbers_page(request: Request) -> Response:
    agent = await _agent(request)
    days = _int(request.query_params.get("days"), "days") or 14
    if not 1 <= days <= 366:
        raise InputError("days must be between 1 and 366")
    n = await run_in_threadpool(compute_numbers, console_of(request).engine, days)
    return render(
        "numbers.html",
        agent=agent,
        n=n,
        chart=rates_chart(n.days),
        page="numbers",
        now=datetime.now(UTC),
    )
