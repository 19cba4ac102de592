"""``GET /health`` and ``GET /ready``.

``/health`` tells anyone whether the service works: index versions, counts, encoders, and
for the query log only ``database: ok|down`` and ``writer: running|stopped``. The log's
numbers and its last error text (which can name hosts, users and tables) are shown only to
a trusted caller: one that sends the ``api_key`` (``Authorization: Bearer <key>``) or
connects from a loopback address. A stopped log writer makes the service unhealthy (503);
a database that is down does not (queries are answered and their records spooled), but it
shows as ``status: degraded``. On the pgvector store, ``vector_store`` says whether the
store answers; one that does not makes the service unhealthy (503: queries fail until it
is back, and the next query after that reconnects).
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..errors import RetrievalError
from ..indexstore import current_version
from .keys import has_secret
from .schemas import Health, ReadyOut

__all__ = ["router", "trusted"]

router = APIRouter(tags=["operations"])

PROBE_TTL_S = 2.0  # how long /health trusts its last look at the vector store


def trusted(request: Request) -> bool:
    """Whether the caller may see operational details (API key, or a loopback client)."""
    if has_secret(request, request.app.state.settings.api_key):
        return True
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@router.get(
    "/health",
    response_model=Health,
    responses={
        503: {
            "model": Health,
            "description": "The query log's writer has stopped, or the vector store is lost.",
        }
    },
)
async def health(request: Request) -> JSONResponse:
    r = request.app.state.retriever
    snap = r.snapshot
    qlog = r.query_log
    status, code, log_view = "ok", 200, None
    stats = getattr(qlog, "stats", None)
    if stats is not None:
        full = stats()
        db_ok, alive = full.get("database_ok", True), full.get("writer_alive", True)
        log_view = {
            "database": "ok" if db_ok else "down",
            "writer": "running" if alive else "stopped",
        }
        if trusted(request):
            log_view.update(full)
        if not alive:
            status, code = "failing", 503
        elif not db_ok:
            status = "degraded"
    settings = request.app.state.settings
    store: dict[str, Any] = {"backend": settings.vector_store}
    if settings.vector_store == "pgvector":
        reachable, error = await _probe_store(request)
        store["reachable"] = reachable
        if not reachable:
            if trusted(request):
                store["error"] = error
            status, code = "failing", 503
    body = Health(
        status=status,
        index_versions={"faq": snap.faq_version, "products": snap.product_version},
        counts={"faq_entries": len(snap.faq), "products": len(snap.catalog)},
        encoders={"text": r.text_encoder.id, "image": r.image_encoder.id},
        query_log=log_view,
        vector_store=store,
        query_gate=_gate_view(request) if trusted(request) else None,
    )
    return JSONResponse(body.model_dump(), status_code=code)


def _gate_view(request: Request) -> dict[str, int] | None:
    gate = getattr(request.app.state, "query_gate", None)
    if gate is None:
        return None
    stats = gate.stats()
    return {
        "running": stats.running,
        "waiting": stats.waiting,
        "concurrency": gate.concurrency,
        "max_waiting": gate.max_waiting,
        "admitted": stats.admitted,
        "refused": stats.refused,
    }


async def _probe_store(request: Request) -> tuple[bool, str]:
    """Whether the vector store answers (one indexed-row read), remembered for
    ``PROBE_TTL_S``: anyone may call /health, and each probe takes a pooled connection."""
    state = request.app.state
    cached = getattr(state, "store_probe", None)
    now = time.monotonic()
    if cached is not None and now - cached[0] < PROBE_TTL_S:
        return cached[1], cached[2]
    try:
        await run_in_threadpool(current_version, state.settings, "faq")
        probe = (now, True, "")
    except RetrievalError as exc:
        probe = (now, False, str(exc))
    state.store_probe = probe
    return probe[1], probe[2]


@router.get(
    "/ready",
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "Starting or stopping."}},
)
async def ready(request: Request) -> JSONResponse:
    ok = bool(getattr(request.app.state, "ready", False))
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)
