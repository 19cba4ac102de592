"""``GET /health`` and ``GET /ready``.

``/health`` tells anyone whether the service works: index versions, counts, encoders, and
for the query log only ``database: ok|down`` and ``writer: running|stopped``. The log's
numbers and its last error text (which can name hosts, users and tables) are shown only to
a trusted caller: one that sends the ``api_key`` (``Authorization: Bearer <key>``) or
connects from a loopback address. A stopped log writer makes the service unhealthy (503);
a database that is down does not (queries are answered and their records spooled), but it
shows as ``status: degraded``.
"""

from __future__ import annotations

import ipaddress

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .keys import has_secret
from .schemas import Health, ReadyOut

__all__ = ["router", "trusted"]

router = APIRouter(tags=["operations"])


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
    responses={503: {"model": Health, "description": "The query log's writer has stopped."}},
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
    body = Health(
        status=status,
        index_versions={"faq": snap.faq_version, "products": snap.product_version},
        counts={"faq_entries": len(snap.faq), "products": len(snap.catalog)},
        encoders={"text": r.text_encoder.id, "image": r.image_encoder.id},
        query_log=log_view,
    )
    return JSONResponse(body.model_dump(), status_code=code)


@router.get(
    "/ready",
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "Starting or stopping."}},
)
async def ready(request: Request) -> JSONResponse:
    ok = bool(getattr(request.app.state, "ready", False))
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)
