"""The HTTP service: FastAPI app factory.

``create_app(settings)`` loads encoders, indexes and the query log once, at start-up,
before the server accepts requests; ``GET /health`` answers only when that is done.
"""

from __future__ import annotations

import gc
import logging
import time
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from ..console import open_console
from ..console import router as console_router
from ..errors import ImageError, InputError, NotFound, RetrievalError, TooLarge
from ..retriever import QueryResult, Retriever
from ..settings import Settings
from ..uploads import UploadStore
from .chat import ChatRelay
from .schemas import Health, ProductOut, QueryIn, QueryOut, ReplyOut, SimilarOut
from .shop import router as shop_router

__all__ = ["create_app"]

log = logging.getLogger(__name__)

MAX_JSON_BYTES = 1024 * 1024  # a JSON query holds text only; 1 MB is far above max_query_chars


def _result_out(result: QueryResult, request: Request) -> QueryOut:
    def image_url(product_id: str, has_image: bool) -> str | None:
        return str(request.url_for("product_image", product_id=product_id)) if has_image else None

    return QueryOut(
        query_id=result.query_id,
        decision=result.decision.value,
        reason=result.verdict.reason,
        top_score=result.verdict.top_score,
        margin=result.verdict.margin,
        thresholds={
            "answer": result.policy.answer_threshold,
            "suggest": result.policy.suggest_threshold,
            "margin": result.policy.margin,
        },
        replies=[ReplyOut(**c.public()) for c in result.replies],
        products=[
            ProductOut(**m.public(image_url(m.product.id, bool(m.product.images))))
            for m in result.products
        ],
        index_versions={"faq": result.faq_version, "products": result.product_version},
        timings_ms={k: round(v, 3) for k, v in result.timings_ms.items()},
    )


def _action_executor(retriever: Any, uploads: Any) -> Any:
    from rasa_sdk.executor import ActionExecutor

    from .actions import ActionAnswerPhoto, ActionAnswerQuestion, ActionSmallTalk

    executor = ActionExecutor()
    executor.register_action(ActionSmallTalk(retriever))
    executor.register_action(ActionAnswerQuestion(retriever))
    executor.register_action(ActionAnswerPhoto(retriever, uploads))
    return executor


def create_app(settings: Settings, retriever: Retriever | None = None) -> FastAPI:
    """Build the app. Pass ``retriever`` to serve a ready one (tests); otherwise it is built at start-up."""
    state: dict[str, Any] = {"ready": False}

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
            r = build_retriever(settings, qlog)
            r.query(
                "warm up", k_products=1, k_faq=1
            )  # load the models now, not on the first shopper
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
        )
        app.state.chat = ChatRelay(
            settings.rasa_url,
            timeout_s=settings.chat_timeout_s,
            max_pending=settings.chat_max_pending,
        )
        app.state.console = open_console(
            settings, lambda: app.state.retriever, engine or getattr(r.query_log, "engine", None)
        )
        state["ready"] = True
        try:
            yield
        finally:
            state["ready"] = False
            if reloader is not None:
                reloader.stop()
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

    @app.exception_handler(RetrievalError)
    async def _retrieval_error(_: Request, exc: RetrievalError) -> JSONResponse:
        return JSONResponse(
            {"error": type(exc).__name__, "detail": str(exc)}, status_code=exc.http_status
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse(
            {
                "error": "InputError",
                "detail": f"{where}: {first.get('msg')}" if where else str(first.get("msg")),
            },
            status_code=422,
        )

    def get_retriever(request: Request) -> Retriever:
        return request.app.state.retriever

    executor = _action_executor(lambda: app.state.retriever, lambda: app.state.uploads)
    app.include_router(shop_router)
    app.include_router(console_router)  # /agent/: the agent console

    @app.post("/webhook", tags=["rasa"])
    async def rasa_webhook(request: Request) -> JSONResponse:
        """Rasa's action endpoint: runs the shop's custom actions in this process."""
        from rasa_sdk.interfaces import ActionExecutionRejection, ActionNotFoundException

        try:
            action_call = await request.json()
        except ValueError:
            raise InputError("the action call is not valid JSON") from None
        if not isinstance(action_call, dict):
            raise InputError("the action call must be a JSON object")
        try:
            result = await executor.run(action_call)
        except ActionNotFoundException as exc:
            return JSONResponse(
                {"error": exc.message, "action_name": exc.action_name}, status_code=404
            )
        except ActionExecutionRejection as exc:
            return JSONResponse(
                {"error": exc.message, "action_name": exc.action_name}, status_code=400
            )
        except (KeyError, TypeError) as exc:
            raise InputError(f"malformed action call: {exc}") from None
        return JSONResponse(result.model_dump(by_alias=True) if result else {})

    @app.get("/health", response_model=Health, tags=["operations"])
    async def health(request: Request) -> Health:
        r = get_retriever(request)
        snap = r.snapshot
        qlog = r.query_log
        return Health(
            status="ok",
            index_versions={"faq": snap.faq_version, "products": snap.product_version},
            counts={"faq_entries": len(snap.faq), "products": len(snap.catalog)},
            encoders={"text": r.text_encoder.id, "image": r.image_encoder.id},
            query_log=qlog.stats() if qlog is not None else None,
        )

    @app.get("/ready", tags=["operations"])
    async def ready() -> JSONResponse:
        ok = state["ready"]
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.post("/v1/query", response_model=QueryOut, tags=["query"])
    async def query(request: Request) -> QueryOut:
        """Ask with JSON (`{"text": ...}`) or multipart form (`text`, `image` file, `k_products`, ...)."""
        ctype = request.headers.get("content-type", "")
        r = get_retriever(request)
        if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            return await _multipart_query(request, r)
        if int(request.headers.get("content-length") or 0) > MAX_JSON_BYTES:
            raise TooLarge(f"request body is over {MAX_JSON_BYTES // 1024} KB")
        raw = await request.body()
        if len(raw) > MAX_JSON_BYTES:
            raise TooLarge(f"request body is over {MAX_JSON_BYTES // 1024} KB")
        try:
            body = QueryIn.model_validate_json(raw)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None
        result = await run_in_threadpool(
            r.query,
            body.text,
            k_products=body.k_products,
            k_faq=body.k_faq,
            conversation_id=body.conversation_id,
            channel=body.channel or "api",
        )
        return _result_out(result, request)

    async def _multipart_query(request: Request, r: Retriever) -> QueryOut:
        limit = r.limits.max_image_bytes
        length = int(request.headers.get("content-length") or 0)
        if length > limit + 64 * 1024:
            raise TooLarge(f"upload is {length / 1e6:.1f} MB; the limit is {limit / 1e6:.1f} MB")
        form = await request.form(max_part_size=limit + 1)
        image = form.get("image")
        data = None
        image_ref = None
        if image is not None and not isinstance(image, str):
            data = await image.read(limit + 1)
            image_ref = (image.filename or "upload")[:300]
            if not data:
                raise ImageError("the uploaded image is empty")
        text = form.get("text")
        text = text if isinstance(text, str) else None

        def as_int(name: str) -> int | None:
            value = form.get(name)
            if value is None or value == "":
                return None
            try:
                return int(str(value))
            except ValueError:
                raise InputError(f"{name} must be a whole number") from None

        result = await run_in_threadpool(
            r.query,
            text,
            data,
            k_products=as_int("k_products"),
            k_faq=as_int("k_faq"),
            conversation_id=form.get("conversation_id")
            if isinstance(form.get("conversation_id"), str)
            else None,
            channel=str(form.get("channel") or "api"),
            image_ref=image_ref,
        )
        return _result_out(result, request)

    @app.get("/v1/products/{product_id}/similar", response_model=SimilarOut, tags=["products"])
    async def similar(
        request: Request, product_id: str, k: Annotated[int | None, Query()] = None
    ) -> SimilarOut:
        r = get_retriever(request)
        matches = await run_in_threadpool(r.similar_products, product_id, k)
        return SimilarOut(
            product_id=product_id,
            products=[
                ProductOut(
                    **m.public(
                        str(request.url_for("product_image", product_id=m.product.id))
                        if m.product.images
                        else None
                    )
                )
                for m in matches
            ],
        )

    @app.get("/v1/products/{product_id}", response_model=ProductOut, tags=["products"])
    async def product(request: Request, product_id: str) -> ProductOut:
        p = get_retriever(request).snapshot.catalog.get(product_id)
        if p is None:
            raise NotFound(f"no product with id '{product_id}'")
        url = str(request.url_for("product_image", product_id=p.id)) if p.images else None
        return ProductOut(
            **p.public(url), score=None, text_score=None, image_score=None, matched=None
        )

    @app.get("/v1/products/{product_id}/image", name="product_image", tags=["products"])
    async def product_image(request: Request, product_id: str) -> FileResponse:
        p = get_retriever(request).snapshot.catalog.get(product_id)
        if p is None or not p.images or not p.images[0].is_file():
            raise NotFound(f"no image for product '{product_id}'")
        return FileResponse(p.images[0])

    return app
