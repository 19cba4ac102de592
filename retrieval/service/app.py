"""The HTTP service: FastAPI app factory.

``create_app(settings)`` loads encoders, indexes and the query log once, at start-up,
before the server accepts requests; ``GET /health`` answers only when that is done.

The routes live in one module each: ``routes_query`` (``/v1/query``), ``routes_products``
(``/v1/products/...``), ``routes_ops`` (``/health``, ``/ready``), ``webhook`` (Rasa's action
endpoint), ``shop`` (the demo shop page) and the console package (``/agent/``). Every request
body is bounded as it arrives (``limits.BodyLimit``, docs/security.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from ..apidoc import ErrorOut, add_models, apply_live, not_blank, tidy, visible_text
from ..console import open_console
from ..console import router as console_router
from ..console.api import BODY_MODELS as CONSOLE_BODY_MODELS
from ..console.api import SECURITY_SCHEMES as CONSOLE_SECURITY
from ..conversation.context import ConversationStore
from ..errors import RetrievalError, VectorStoreError
from ..httplimits import BodyLimit, Limit, NoStore
from ..retriever import Retriever
from ..settings import Settings
from ..store.events import Interests
from ..store.outage import DATABASE_DOWN, RETRY_AFTER_S, UNREACHABLE, is_outage, summary
from ..uploads import UploadStore
from .admission import QueryGate
from .chat import ChatRelay
from .keys import ConversationIds
from .routes_ops import router as ops_router
from .routes_products import router as products_router
from .routes_query import MAX_JSON_BYTES
from .routes_query import router as query_router
from .routes_recommend import ClickLimiter
from .routes_recommend import router as recommend_router
from .schemas import BODY_MODELS
from .shop import router as shop_router
from .webhook import MAX_BODY as WEBHOOK_MAX_BODY
from .webhook import executor as action_executor
from .webhook import router as webhook_router

__all__ = ["create_app"]

VECTOR_STORE_DOWN = "the vector store cannot be reached right now; try again shortly"

log = logging.getLogger(__name__)


FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the small text fields beside a photo
CONSOLE_MAX_BODY = 256 * 1024  # console forms and JSON: replies and drafts are far shorter
LOGIN_MAX_BODY = 16 * 1024
OTHER_MAX_BODY = 64 * 1024  # routes that read no body
PURGE_INTERVAL_S = 3600.0


def _body_limits(app: FastAPI, settings: Settings):  # noqa: ANN202 - the middleware's callback
    def limit_for(scope: Scope) -> Limit:
        path = scope["path"]
        r = getattr(app.state, "retriever", None)
        image = r.limits.max_image_bytes if r is not None else settings.max_image_bytes
        chars = r.limits.max_query_chars if r is not None else settings.max_query_chars
        if path == "/v1/query":
            ctype = next(
                (v for k, v in scope.get("headers", ()) if k.lower() == b"content-type"), b""
            )
            if ctype.startswith((b"multipart/form-data", b"application/x-www-form-urlencoded")):
                return Limit(
                    image + FORM_OVERHEAD, f"the limit is {image / 1e6:.1f} MB for an image"
                )
            return Limit(
                MAX_JSON_BYTES, f"a JSON query must not be over {MAX_JSON_BYTES // 1024} KB"
            )
        if path == "/shop/api/photo":
            return Limit(image + FORM_OVERHEAD, f"photos up to {image / 1e6:.1f} MB are accepted")
        if path == "/shop/api/chat":
            # a message of `chars` characters, each up to 12 bytes as JSON ("\\ud83c\\udf4c")
            return Limit(12 * chars + 1024, f"please keep it under {chars:,} characters")
        if path == "/webhook":
            return Limit(WEBHOOK_MAX_BODY)
        if path in ("/agent/login", "/agent/api/login"):
            return Limit(LOGIN_MAX_BODY)
        if path.startswith("/agent/"):
            return Limit(CONSOLE_MAX_BODY, "replies are much shorter")
        return Limit(OTHER_MAX_BODY)

    return limit_for


async def _purge_expired(app: FastAPI, interval_s: float) -> None:
    """The retention job: delete expired photos and conversation contexts now and then
    every ``interval_s``."""
    while True:
        jobs = [("photos", app.state.uploads.purge)]
        if app.state.contexts is not None:
            jobs.append(("conversation contexts", app.state.contexts.purge))
        for what, purge in jobs:
            try:
                await run_in_threadpool(purge)
            except Exception as exc:  # noqa: BLE001 - the job must outlive a bad disk moment
                log.error("deleting expired %s failed: %s", what, exc)
        await asyncio.sleep(interval_s)


_TYPE_TAGS = {"str", "int", "float", "bool", "none", "list", "dict", "body"}
_WHOLE = {"int_parsing", "int_type", "int_from_float"}


def _is_field(part: object) -> bool:
    """Whether a part of a validation error's location names a field (or a list index),
    not the body or the branch of a union that was tried."""
    return isinstance(part, int) or (
        isinstance(part, str) and part not in _TYPE_TAGS and not any(c in part for c in "[(")
    )


def _message(error: Mapping[str, Any]) -> str:
    if error.get("type") in _WHOLE:
        return "must be a whole number"
    msg = str(error.get("msg", "invalid"))
    return msg.removeprefix("Value error, ")


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi``: the document FastAPI makes from the routes, with the request bodies
    the routes read themselves, and the running service's limits and categories."""
    base: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not base:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            add_models(document, [*BODY_MODELS, *CONSOLE_BODY_MODELS])
            document["components"]["securitySchemes"] = CONSOLE_SECURITY
            tidy(document)
            base.update(document)
        settings: Settings = app.state.settings
        r = getattr(app.state, "retriever", None)
        limits = r.limits if r is not None else settings
        return apply_live(
            base,
            {
                "max_k": limits.max_k,
                "max_query_chars": limits.max_query_chars,
                "console_max_reply_chars": settings.console_max_reply_chars,
                "categories": r.snapshot.categories if r is not None else [],
                "visible_text": visible_text(),
                "not_blank": not_blank(),
                "reply_text": not_blank("\x00"),
            },
        )

    return openapi


def create_app(settings: Settings, retriever: Retriever | None = None) -> FastAPI:
    """Build the app. Pass ``retriever`` to serve a ready one (tests); otherwise it is built at start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        from ..runtime import build_retriever, open_store

        engine = qlog = reloader = None
        r = retriever
        if r is None:
            from ..encoders.base import set_model_threads

            t0 = time.perf_counter()
            set_model_threads(settings.torch_threads or 1)
            engine, qlog = open_store(settings)
            r = build_retriever(settings, qlog, batching=True)
            # load the models now, not on the first shopper (not a shopper's question: unlogged)
            r.query("warm up", k_products=1, k_faq=1, log=False)
            # and what the first questions would wait for (later versions: at the swap)
            r.photo_sure()
            r.snapshot.warm()
            qlog.flush(5)
            # The loaded catalog and indexes are millions of long-lived objects; keep them out
            # of the garbage collector's full sweeps, which otherwise pause queries.
            gc.collect()
            gc.freeze()
            log.info("retrieval service ready in %.1f s", time.perf_counter() - t0)
            from ..reloader import SnapshotReloader
            from ..runtime import load_snapshot

            reloader = SnapshotReloader(
                settings,
                r,
                lambda: load_snapshot(settings, r.text_encoder, r.image_encoder, r.fusion),
                interval_s=settings.reload_interval_s,
            )
            reloader.start()
        app.state.retriever = r
        app.state.uploads = UploadStore(
            settings.uploads_dir,
            max_bytes=r.limits.max_image_bytes,
            max_pixels=r.limits.max_image_pixels,
            quota_bytes=settings.uploads_max_bytes,
            retention_s=settings.uploads_retention_days * 86400.0,
        )
        app.state.conversations = ConversationIds.from_settings(
            settings.conversation_secret, settings.secrets_dir / "conversation.key"
        )
        app.state.chat = ChatRelay(
            settings.rasa_url,
            timeout_s=settings.chat_timeout_s,
            max_pending=settings.chat_max_pending,
        )
        store_engine = engine or getattr(r.query_log, "engine", None)
        app.state.console = open_console(settings, lambda: app.state.retriever, store_engine)
        if store_engine is not None:
            app.state.contexts = ConversationStore(
                store_engine, retention_days=settings.conversation_retention_days
            )
            app.state.interests = Interests(store_engine)
        purge = asyncio.create_task(_purge_expired(app, PURGE_INTERVAL_S))
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            purge.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purge
            if reloader is not None:
                reloader.stop()
            if retriever is None and getattr(app.state, "retriever", None) is not None:
                from ..runtime import close_encoders

                close_encoders(app.state.retriever)
            await app.state.console.aclose()
            await app.state.chat.aclose()
            if qlog is not None:
                qlog.close()
            if engine is not None:
                engine.dispose()

    app = FastAPI(
        title="Retrieval service",
        version="0.1.0",
        description="FAQ answers and product matches for shopper questions (text and/or photo), with scores.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.ready = False
    app.state.contexts = None
    app.state.interests = None
    app.state.click_limiter = ClickLimiter()
    app.state.query_gate = QueryGate(settings.query_concurrency, settings.query_max_waiting)
    app.state.executor = action_executor(
        lambda: app.state.retriever,
        lambda: app.state.uploads,
        lambda: app.state.contexts,
        lambda: app.state.interests,
        app.state.query_gate,
    )

    app.openapi = _openapi(app)  # type: ignore[method-assign]

    @app.exception_handler(RetrievalError)
    async def _retrieval_error(request: Request, exc: RetrievalError) -> JSONResponse:
        from ..encoders.batching import Overloaded

        if is_outage(exc):
            return _database_down(request, exc)
        if isinstance(exc, VectorStoreError):
            # the server's address stays in the log; the caller learns only to retry
            log.warning("%s %s: %s", request.method, request.url.path, exc)
            return JSONResponse(
                ErrorOut(error="VectorStoreDown", detail=VECTOR_STORE_DOWN).model_dump(),
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        headers = {"Retry-After": exc.retry_after_header} if isinstance(exc, Overloaded) else None
        return JSONResponse(
            ErrorOut(error=type(exc).__name__, detail=str(exc)).model_dump(),
            status_code=exc.http_status,
            headers=headers,
        )

    def _database_down(request: Request, exc: Exception) -> JSONResponse:
        # the documented 503 with the error body, not a bare 500 (store/outage.py)
        log.warning(
            "%s %s: the database cannot be used: %s", request.method, request.url.path, summary(exc)
        )
        return JSONResponse(
            ErrorOut(error="StoreError", detail=DATABASE_DOWN).model_dump(),
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    async def _unreachable(request: Request, exc: Exception) -> JSONResponse:
        if not is_outage(exc):
            raise exc  # a bug (a missing table or column), not an outage: a 500, logged
        return _database_down(request, exc)

    for unreachable in UNREACHABLE:
        app.add_exception_handler(unreachable, _unreachable)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if _is_field(p))
        detail = f"{where}: {_message(first)}" if where else _message(first)
        return JSONResponse(
            ErrorOut(error="InputError", detail=detail).model_dump(), status_code=422
        )

    app.add_middleware(NoStore, prefix="/agent/")
    app.add_middleware(BodyLimit, limit_for=_body_limits(app, settings))
    app.include_router(shop_router)
    app.include_router(recommend_router)  # /shop/api/click, popular, together
    app.include_router(console_router)  # /agent/: the agent console
    app.include_router(webhook_router)
    app.include_router(ops_router)
    app.include_router(query_router)
    app.include_router(products_router)
    return app
