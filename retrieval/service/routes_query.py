"""``POST /v1/query``: ask with JSON (``{"text": ...}``) or a multipart form (``text``, an
``image`` file, ``k_products``, ...), get the decision, scored replies and products. A
``filter`` (JSON object; in a form, a JSON string) keeps only the products it matches.

A ``conversation_id`` makes a question that the bot does not answer a task in the agents'
queue, so only a trusted caller may send one: the request must carry the ``api_key``
setting as ``Authorization: Bearer <key>``; without it a ``conversation_id`` is refused
(403) rather than silently dropped. Anonymous queries are answered and logged without one.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from ..errors import Forbidden, ImageError, InputError
from ..httplimits import form_text, read_form
from ..results import QueryResult
from ..retriever import Retriever
from .keys import has_secret
from .schemas import ProductOut, QueryIn, QueryOut, ReplyOut

__all__ = ["MAX_JSON_BYTES", "result_out", "router"]

MAX_JSON_BYTES = 1024 * 1024  # a JSON query holds text only; 1 MB is far above max_query_chars
MAX_TEXT_FIELD = 64 * 1024  # a form's text fields: the question (max_query_chars) and numbers
MAX_FIELDS = 8  # text, k_products, k_faq, conversation_id, channel, filter and some slack

router = APIRouter(tags=["query"])


def result_out(result: QueryResult, request: Request) -> QueryOut:
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
        filter=None if result.product_filter is None else result.product_filter.public(),
    )


def _check_conversation(request: Request, conversation_id: str | None) -> None:
    if conversation_id is None:
        return
    if not has_secret(request, request.app.state.settings.api_key):
        raise Forbidden(
            "conversation_id puts unanswered questions into the agents' queue, so it needs the "
            "service's API key (Authorization: Bearer <api_key>); leave it out to just ask"
        )


@router.post("/v1/query", response_model=QueryOut)
async def query(request: Request) -> QueryOut:
    """Ask with JSON (`{"text": ...}`) or multipart form (`text`, `image` file, `k_products`, ...).
    A `conversation_id` needs the API key (`Authorization: Bearer ...`)."""
    ctype = request.headers.get("content-type", "")
    r: Retriever = request.app.state.retriever
    if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        return await _form_query(request, r)
    raw = await request.body()  # bounded by the body-limit middleware (MAX_JSON_BYTES)
    try:
        body = QueryIn.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    _check_conversation(request, body.conversation_id)
    result = await run_in_threadpool(
        r.query,
        body.text,
        k_products=body.k_products,
        k_faq=body.k_faq,
        conversation_id=body.conversation_id,
        channel=body.channel or "api",
        product_filter=r.product_filter(body.filter),
    )
    return result_out(result, request)


async def _form_query(request: Request, r: Retriever) -> QueryOut:
    limit = r.limits.max_image_bytes
    form = await read_form(
        request, max_fields=MAX_FIELDS, max_files=1, max_part_size=MAX_TEXT_FIELD
    )
    image = form.get("image")
    data = None
    image_ref = None
    if image is not None and not isinstance(image, str):
        data = await image.read(limit + 1)
        image_ref = (image.filename or "upload")[:300]
        if not data:
            raise ImageError("the uploaded image is empty")

    def as_int(name: str) -> int | None:
        value = form_text(form, name)
        if value is None or value == "":
            return None
        try:
            return int(value)
        except ValueError:
            raise InputError(f"{name} must be a whole number") from None

    conversation_id = form_text(form, "conversation_id")
    _check_conversation(request, conversation_id)
    raw_filter = form_text(form, "filter")
    try:
        filter_obj = json.loads(raw_filter) if raw_filter else None
    except ValueError:
        raise InputError('filter must be a JSON object, e.g. {"in_stock": true}') from None
    product_filter = r.product_filter(filter_obj)
    result = await run_in_threadpool(
        r.query,
        form_text(form, "text"),
        data,
        k_products=as_int("k_products"),
        k_faq=as_int("k_faq"),
        conversation_id=conversation_id,
        channel=(form_text(form, "channel") or "api")[:32],
        image_ref=image_ref,
        product_filter=product_filter,
    )
    return result_out(result, request)
