"""The console's JSON API under ``/agent/api/`` (the pages use the same functions).

Every route needs an agent session (cookie from ``POST /agent/api/login`` or the login
page); every route that changes something (claiming a question included) is a POST and
also needs the session's CSRF token in the ``X-CSRF-Token`` header. The session is checked
before a body is read. Errors are ``{"error", "detail"}`` with 401 (not logged in or
expired), 403 (CSRF), 404, 409 (another agent acted first, or a stale version), 413, 422,
429 (too many logins). Every response is ``Cache-Control: no-store``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..errors import InputError, TooLarge
from . import actions, audit, auth, clusters, tasks
from .numbers import numbers as compute_numbers
from .web import agent_of, console_of, log_in, set_session_cookie

__all__ = ["router"]

router = APIRouter(prefix="/agent/api", tags=["agent console"])

MAX_BODY = 256 * 1024


async def _json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise TooLarge(f"the request is over {MAX_BODY // 1024} KB")
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise InputError("send JSON (Content-Type: application/json)")
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise InputError("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InputError("the body must be a JSON object")
    return body


def _int(body: dict[str, Any], name: str, required: bool = True) -> int | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InputError(f"{name} must be a whole number (from the question you opened)")
    return value


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str, ensure_ascii=False))


@router.post("/login")
async def api_login(request: Request) -> JSONResponse:
    body = await _json(request)
    name, password = body.get("name"), body.get("password")
    token, session = await log_in(
        request,
        name if isinstance(name, str) else "",
        password if isinstance(password, str) else "",
    )
    response = JSONResponse(
        {
            "agent": session.name,
            "csrf_token": session.csrf,
            "expires_at": session.expires_at.isoformat(),
        }
    )
    set_session_cookie(response, token, request)
    return response


@router.post("/logout")
async def api_logout(request: Request) -> JSONResponse:
    await agent_of(request, request.headers.get("x-csrf-token"), check=True)
    await run_in_threadpool(
        auth.end_session, console_of(request).engine, request.cookies.get(auth.COOKIE)
    )
    response = JSONResponse({"logged_out": True})
    response.delete_cookie(auth.COOKIE, path="/agent")
    return response


@router.get("/queue")
async def api_queue(request: Request) -> dict[str, Any]:
    await agent_of(request)
    items = await run_in_threadpool(tasks.queue, console_of(request).engine)
    return {"questions": _jsonable([asdict(i) for i in items])}


@router.get("/questions/{query_id}")
async def api_question(request: Request, query_id: str) -> dict[str, Any]:
    """The question as it stands; reading it changes nothing (claim with POST .../claim)."""
    await agent_of(request)
    console = console_of(request)
    q = await run_in_threadpool(
        tasks.question, console.engine, query_id, console.faq, console.catalog
    )
    return _jsonable(asdict(q))


@router.post("/questions/{query_id}/claim")
async def api_claim(request: Request, query_id: str) -> dict[str, Any]:
    """Reserve the question for this agent (``console_claim_ttl_s``); returns it, with
    ``claimed: false`` when another agent holds it."""
    agent = await agent_of(request, request.headers.get("x-csrf-token"), check=True)
    console = console_of(request)
    q = await run_in_threadpool(tasks.question, console.engine, query_id)  # 404, task row
    claimed = await run_in_threadpool(
        actions.claim, console.engine, agent, query_id, console.settings.console_claim_ttl_s
    )
    q = await run_in_threadpool(
        tasks.question, console.engine, query_id, console.faq, console.catalog
    )
    return {**_jsonable(asdict(q)), "claimed": claimed or q.claimed_by == agent.name}


@router.post("/questions/{query_id}/reply")
async def api_reply(request: Request, query_id: str) -> dict[str, Any]:
    agent = await agent_of(request, request.headers.get("x-csrf-token"), check=True)
    body = await _json(request)
    action = str(body.get("action") or "")
    if action == "reject":
        raise InputError("use POST .../reject to reject the suggestions")
    return await console_of(request).act(
        agent,
        query_id,
        action=action,
        version=_int(body, "version"),
        candidate_id=_int(body, "candidate_id", required=False),
        text=body.get("text"),
    )


@router.post("/questions/{query_id}/reject")
async def api_reject(request: Request, query_id: str) -> dict[str, Any]:
    agent = await agent_of(request, request.headers.get("x-csrf-token"), check=True)
    body = await _json(request)
    return await console_of(request).act(
        agent,
        query_id,
        action="reject",
        version=_int(body, "version"),
        reason=str(body.get("reason") or ""),
    )


@router.post("/queries/{query_id}/flag")
async def api_flag(request: Request, query_id: str) -> dict[str, Any]:
    agent = await agent_of(request, request.headers.get("x-csrf-token"), check=True)
    body = await _json(request)
    flag_id = await run_in_threadpool(
        actions.flag, console_of(request).engine, agent, query_id, str(body.get("reason") or "")
    )
    return {"flag_id": flag_id, "query_id": query_id}


@router.get("/audit")
async def api_audit(
    request: Request,
    day_from: str | None = Query(None, alias="from"),
    day_to: str | None = Query(None, alias="to"),
    decision: str | None = "answer",
) -> dict[str, Any]:
    await agent_of(request)
    items = await run_in_threadpool(
        audit.audit,
        console_of(request).engine,
        day_from=audit.parse_day(day_from, "from"),
        day_to=audit.parse_day(day_to, "to"),
        decision=decision or None,
    )
    return {"queries": _jsonable([asdict(i) for i in items])}


@router.get("/unanswered")
async def api_unanswered(request: Request) -> dict[str, Any]:
    await agent_of(request)
    console = console_of(request)
    found = await run_in_threadpool(
        clusters.unanswered_clusters,
        console.engine,
        console.encode,
        console.settings.console_cluster_threshold,
    )
    return {"clusters": _jsonable([asdict(c) for c in found])}


@router.post("/drafts", status_code=201)
async def api_draft(request: Request) -> dict[str, Any]:
    agent = await agent_of(request, request.headers.get("x-csrf-token"), check=True)
    body = await _json(request)
    console = console_of(request)
    examples = body.get("examples") or []
    query_ids = body.get("query_ids") or []
    if not isinstance(examples, list) or not isinstance(query_ids, list):
        raise InputError("examples and query_ids must be lists")
    record = await run_in_threadpool(
        clusters.draft_entry,
        console.engine,
        console.drafts_path,
        agent,
        faq_id=str(body.get("id") or ""),
        question=str(body.get("question") or ""),
        answer=str(body.get("answer") or ""),
        examples=[str(e) for e in examples],
        lang=str(body.get("lang") or "en"),
        query_ids=[str(q) for q in query_ids],
        existing_ids=console.faq.entries,
    )
    return {"draft": record, "file": str(console.drafts_path)}


@router.get("/numbers")
async def api_numbers(request: Request, days: int = Query(14, ge=1, le=366)) -> dict[str, Any]:
    await agent_of(request)
    n = await run_in_threadpool(compute_numbers, console_of(request).engine, days)

    def day(d: Any) -> dict[str, Any]:
        return {
            "day": d.day.isoformat(),
            "queries": d.queries,
            "handoffs": d.handoffs,
            "decided": d.decided,
            "accepted": d.accepted,
            "edited": d.edited,
            "top1": d.top1,
            "acceptance_rate": d.acceptance,
            "edit_rate": d.edit_rate,
            "top1_rate": d.top1_rate,
            "handoff_rate": d.handoff_rate,
        }

    return {
        "days": [day(d) for d in n.days],
        "total": day(n.total),
        "entries": [asdict(e) for e in n.entries],
    }
