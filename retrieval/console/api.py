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
import re
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool

from ..apidoc import Whole, error_responses, json_body, live
from ..errors import InputError, TooLarge
from . import actions, audit, auth, clusters, tasks
from .numbers import numbers as compute_numbers
from .web import agent_of, console_of, log_in, set_session_cookie

__all__ = [
    "BODY_MODELS",
    "DraftIn",
    "FlagIn",
    "LoginIn",
    "RejectIn",
    "ReplyIn",
    "SECURITY_SCHEMES",
    "router",
]

router = APIRouter(prefix="/agent/api", tags=["agent console"])

MAX_BODY = 256 * 1024
_FAQ_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,79}$")
_REASON = Field(
    "",
    description="Why (up to 2,000 characters; longer is 413).",
    json_schema_extra={"maxLength": 2000},
)


# The request bodies. They are read after the session (and CSRF) check, so they are checked
# here rather than by FastAPI; strict: a number is not accepted as text, nor the reverse.
# What the actions check themselves (an empty reply, a reply over the limit: 413) is shown
# in the schema and left to them.
class LoginIn(BaseModel):
    model_config = ConfigDict(strict=True)

    name: str = Field(..., description="The agent's login name.")
    password: str


class ReplyIn(BaseModel):
    model_config = ConfigDict(strict=True)

    action: str = Field(
        ...,
        description="accept the suggestion candidate_id, edit it (text), or write a reply "
        "(text). To reject the suggestions, POST .../reject.",
        json_schema_extra={"enum": ["accept", "edit", "write"]},
    )
    version: Whole = Field(..., description="The question's version when it was opened.")
    candidate_id: Whole | None = Field(None, description="The suggestion (accept, edit).")
    text: str | None = Field(
        None,
        description="The reply (edit, write): not blank, up to console_max_reply_chars "
        "characters (longer is 413).",
        json_schema_extra=live(pattern="reply_text", maxLength="console_max_reply_chars"),
    )

    @field_validator("action")
    @classmethod
    def _action(cls, value: str) -> str:
        if value == "reject":
            raise ValueError("use POST .../reject to reject the suggestions")
        if value not in ("accept", "edit", "write"):
            raise ValueError(f"unknown action {value[:20]!r}: use accept, edit or write")
        return value


class RejectIn(BaseModel):
    model_config = ConfigDict(strict=True)

    version: Whole = Field(..., description="The question's version when it was opened.")
    reason: str = _REASON


class FlagIn(BaseModel):
    model_config = ConfigDict(strict=True)

    reason: str = _REASON


class DraftIn(BaseModel):
    model_config = ConfigDict(strict=True)

    id: str = Field(
        ...,
        description="The new entry's id: lower-case letters, digits and '-'.",
        json_schema_extra={"pattern": _FAQ_ID.pattern},
    )
    question: str = Field(..., max_length=2000, json_schema_extra=live(pattern="not_blank"))
    answer: str = Field(..., max_length=4000, json_schema_extra=live(pattern="not_blank"))
    examples: list[str] = Field([], description="Other wordings of the question.")
    lang: str = Field("en", json_schema_extra={"enum": ["en", "zh"]})
    query_ids: list[str] = Field([], description="The logged questions it answers.")

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _FAQ_ID.search(value):
            raise ValueError(
                f"the entry id {value[:80]!r} is not valid: use lower-case letters, digits and '-'"
            )
        return value


BODY_MODELS = (LoginIn, ReplyIn, RejectIn, FlagIn, DraftIn)
_NEEDS_SESSION = (401,)
_CHANGES = (401, 403)  # a POST: the session and its CSRF token (X-CSRF-Token)
SECURITY_SCHEMES = {
    "agentSession": {
        "type": "apiKey",
        "in": "cookie",
        "name": "agent_session",
        "description": "The agent's session, set by POST /agent/api/login (or the login page).",
    },
    "csrfToken": {
        "type": "apiKey",
        "in": "header",
        "name": "X-CSRF-Token",
        "description": "The session's CSRF token (`csrf_token` of the login answer), on every POST.",
    },
}
_SESSION: dict[str, Any] = {"security": [{"agentSession": []}]}
_SESSION_CSRF: dict[str, Any] = {"security": [{"agentSession": [], "csrfToken": []}]}


async def _json(request: Request, model: type[Any]) -> Any:
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
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str, ensure_ascii=False))


_DATE = {"format": "date"}
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _day(value: str | None, name: str) -> Any:
    """A day as YYYY-MM-DD (None: none)."""
    if value is not None and not _DAY.fullmatch(value):
        raise InputError(f"{name} must be a date like 2026-11-30, not {value[:40]!r}")
    return audit.parse_day(value, name)


@router.post(
    "/login", responses=error_responses(401, 413, 422, 429), openapi_extra=json_body(LoginIn)
)
async def api_login(request: Request) -> JSONResponse:
    """Log in: sets the session cookie (`agent_session`) and returns the CSRF token that
    every POST sends as `X-CSRF-Token`. 429: too many attempts from this address."""
    body: LoginIn = await _json(request, LoginIn)
    token, session = await log_in(request, body.name, body.password)
    response = JSONResponse(
        {
            "agent": session.name,
            "csrf_token": session.csrf,
            "expires_at": session.expires_at.isoformat(),
        }
    )
    set_session_cookie(response, token, request)
    return response


@router.post("/logout", responses=error_responses(*_CHANGES), openapi_extra=_SESSION_CSRF)
async def api_logout(request: Request) -> JSONResponse:
    await agent_of(request, request.headers.get("x-csrf-token"), check=True)
    await run_in_threadpool(
        auth.end_session, console_of(request).engine, request.cookies.get(auth.COOKIE)
    )
    response = JSONResponse({"logged_out": True})
    response.delete_cookie(auth.COOKIE, path="/agent")
    return response


@router.get("/queue", responses=error_responses(*_NEEDS_SESSION), openapi_extra=_SESSION)
async def api_queue(request: Request) -> dict[str, Any]:
    await agent_of(request)
    items = await run_in_threadpool(tasks.queue, console_of(request).engine)
    return {"questions": _jsonable([asdict(i) for i in items])}


@router.get(
    "/questions/{query_id}",
    responses=error_responses(*_NEEDS_SESSION, 404),
    openapi_extra=_SESSION,
)
async def api_question(request: Request, query_id: str) -> dict[str, Any]:
    """The question as it stands; reading it changes nothing (claim with POST .../claim)."""
    await agent_of(request)
    console = console_of(request)
    q = await run_in_threadpool(
        tasks.question, console.engine, query_id, console.faq, console.catalog
    )
    return _jsonable(asdict(q))


@router.post(
    "/questions/{query_id}/claim",
    responses=error_responses(*_CHANGES, 404),
    openapi_extra=_SESSION_CSRF,
)
async def api_claim(request: Request, query_id: str) -> dict[str, Any]:
    """Reserve the question for this agent (`console_claim_ttl_s`); returns it, with
    `claimed: false` when another agent holds it."""
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


@router.post(
    "/questions/{query_id}/reply",
    responses=error_responses(*_CHANGES, 404, 409, 413, 422),
    openapi_extra={**json_body(ReplyIn), **_SESSION_CSRF},
)
async def api_reply(request: Request, query_id: str) -> dict[str, Any]:
    """Answer the shopper; 409 when another agent acted first or the version is old."""
    agent = await agent_of(request, request.headers.get("x-csrf-token"), check=True)
    body: ReplyIn = await _json(request, ReplyIn)
    return await console_of(request).act(
        agent,
        query_id,
        action=body.action,
        version=body.version,
        candidate_id=body.candidate_id,
        text=body.text,
    )


@router.post(
    "/questions/{query_id}/reject",
    responses=error_responses(*_CHANGES, 404, 409, 413, 422),
    openapi_extra={**json_body(RejectIn), **_SESSION_CSRF},
)
async def api_reject(request: Request, query_id: str) -> dict[str, Any]:
    agent = await agent_of(request, request.headers.get("x-csrf-token"), check=True)
    body: RejectIn = await _json(request, RejectIn)
    return await console_of(request).act(
        agent, query_id, action="reject", version=body.version, reason=body.reason
    )


@router.post(
    "/queries/{query_id}/flag",
    responses=error_responses(*_CHANGES, 404, 409, 413, 422),
    openapi_extra={**json_body(FlagIn), **_SESSION_CSRF},
)
async def api_flag(request: Request, query_id: str) -> dict[str, Any]:
    """Flag an automatic answer as bad (409: this agent flagged it already)."""
    agent = await agent_of(request, request.headers.get("x-csrf-token"), check=True)
    body: FlagIn = await _json(request, FlagIn)
    flag_id = await run_in_threadpool(
        actions.flag, console_of(request).engine, agent, query_id, body.reason
    )
    return {"flag_id": flag_id, "query_id": query_id}


@router.get("/audit", responses=error_responses(*_NEEDS_SESSION, 422), openapi_extra=_SESSION)
async def api_audit(
    request: Request,
    day_from: Annotated[
        str | None, Query(alias="from", description="First day (UTC).", json_schema_extra=_DATE)
    ] = None,
    day_to: Annotated[
        str | None, Query(alias="to", description="Last day (UTC).", json_schema_extra=_DATE)
    ] = None,
    decision: Annotated[
        Literal["answer", "suggest", "handoff", ""],
        Query(description="Only queries with this decision; empty: every decision."),
    ] = "answer",
) -> dict[str, Any]:
    """Logged queries, newest first (200 at most)."""
    await agent_of(request)
    items = await run_in_threadpool(
        audit.audit,
        console_of(request).engine,
        day_from=_day(day_from, "from"),
        day_to=_day(day_to, "to"),
        decision=decision or None,
    )
    return {"queries": _jsonable([asdict(i) for i in items])}


@router.get("/unanswered", responses=error_responses(*_NEEDS_SESSION), openapi_extra=_SESSION)
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


@router.post(
    "/drafts",
    status_code=201,
    responses=error_responses(*_CHANGES, 409, 413, 422),
    openapi_extra={**json_body(DraftIn), **_SESSION_CSRF},
)
async def api_draft(request: Request) -> dict[str, Any]:
    """A draft FAQ entry for the next reindex (409: the id is taken)."""
    agent = await agent_of(request, request.headers.get("x-csrf-token"), check=True)
    body: DraftIn = await _json(request, DraftIn)
    console = console_of(request)
    record = await run_in_threadpool(
        clusters.draft_entry,
        console.engine,
        console.drafts_path,
        agent,
        faq_id=body.id,
        question=body.question,
        answer=body.answer,
        examples=body.examples,
        lang=body.lang,
        query_ids=body.query_ids,
        existing_ids=console.faq,
    )
    return {"draft": record, "file": str(console.drafts_path)}


@router.get("/numbers", responses=error_responses(*_NEEDS_SESSION, 422), openapi_extra=_SESSION)
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
