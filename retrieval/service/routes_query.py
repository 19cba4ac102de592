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
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from ..apidoc import error_responses, form_body, json_body
from ..errors import Forbidden, ImageError, InputError
from ..httplimits import form_text, read_form
from ..results import QueryResult
from ..retriever import Retriever
from .keys import has_secret
from .schemas import (
    PHOTO_TYPES,
    ProductGateOut,
    ProductOut,
    QueryForm,
    QueryIn,
    QueryOut,
    ReplyOut,
)

__all__ = ["MAX_JSON_BYTES", "live_context", "result_out", "router"]

MAX_JSON_BYTES = 1024 * 1024  # a JSON query holds text only; 1 MB is far above max_query_chars
MAX_TEXT_FIELD = 64 * 1024  # a form's text fields: the question (max_query_chars) and numbers
MAX_FIELDS = 8  # text, k_products, k_faq, conversation_id, channel, filter and some slack

router = APIRouter(tags=["query"])


def result_out(result: QueryResult, request: Request, *, all_products: bool = False) -> QueryOut:
    """The API's answer; products are those past the product gate unless ``all_products``."""

    def image_url(product_id: str, has_image: bool) -> str | None:
        return str(request.url_for("product_image", product_id=product_id)) if has_image else None

    gate = result.product_gate

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
            for m in (result.products if all_products else result.shown_products)
        ],
        product_gate=None if gate is None else ProductGateOut(**gate.describe()),
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


def live_context(r: Retriever) -> dict[str, Any]:
    """What request bodies are checked against: the running service's limits and categories."""
    return {"limits": r.limits, "categories": r.snapshot.catalog_columns.category_names}


def _valid(model: type[QueryIn], data: Any, context: dict[str, Any], *, json: bool) -> QueryIn:
    try:
        if json:
            return model.model_validate_json(data, context=context)
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


_BODY = json_body(QueryIn, "The question as JSON, or as a form with a photo.")
_BODY["requestBody"]["content"].update(
    form_body(
        {"$ref": "#/components/schemas/QueryForm"},
        {"image": {"contentType": PHOTO_TYPES}, "filter": {"contentType": "application/json"}},
    )
)


@router.post(
    "/v1/query",
    response_model=QueryOut,
    responses=error_responses(403, 413, 422, 503),
    openapi_extra=_BODY,
)
async def query(
    request: Request,
    all_products: bool = Query(
        False,
        alias="all",
        description="return every ranked product match, also those below the product gate",
    ),
) -> QueryOut:
    """Ask with JSON (`{"text": ...}`) or a multipart form (`text`, `image` file,
    `k_products`, ...). Products are the matches that pass the product gate
    (`product_gate` says whether the question is about products); `?all=true` returns every
    ranked match. A `conversation_id` needs the API key (`Authorization: Bearer ...`).
    Errors: 403 (conversation_id without the key), 413 (body or photo over the limit), 422
    (a field, the photo or the filter; `detail` names it), 503 (overloaded, with
    `Retry-After`)."""
    ctype = request.headers.get("content-type", "")
    r: Retriever = request.app.state.retriever
    if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        return result_out(await _form_query(request, r), request, all_products=all_products)
    raw = await request.body()  # bounded by the body-limit middleware (MAX_JSON_BYTES)
    body = _valid(QueryIn, raw, live_context(r), json=True)
    _check_conversation(request, body.conversation_id)
    result = await request.app.state.query_gate.run(
        r.query,
        body.text,
        k_products=body.k_products,
        k_faq=body.k_faq,
        conversation_id=body.conversation_id,
        channel=body.channel or "api",
        product_filter=r.product_filter(_filter_obj(body)),
    )
    return result_out(result, request, all_products=all_products)


def _filter_obj(body: QueryIn) -> dict[str, Any] | None:
    return None if body.filter is None else body.filter.model_dump(exclude_none=True)


async def _form_query(request: Request, r: Retriever) -> QueryResult:
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
    fields: dict[str, Any] = {}
    for name in form:
        if name == "image":
            continue
        value = form_text(form, name)
        if value is None:
            raise InputError(f"{name} must be a text field, not a file")
        if value != "" or name == "text":
            fields[name] = value  # an empty field is left out (text: blank with a photo)
    if "filter" in fields:
        try:
            fields["filter"] = json.loads(fields["filter"])
        except ValueError:
            fields["filter"] = None
        if not isinstance(fields["filter"], dict):
            raise InputError('filter must be a JSON object, e.g. {"in_stock": true}')
    body = _valid(QueryForm, fields, live_context(r), json=False)
    _check_conversation(request, body.conversation_id)
    result = await request.app.state.query_gate.run(
        r.query,
        body.text,
        data,
        k_products=body.k_products,
        k_faq=body.k_faq,
        conversation_id=body.conversation_id,
        channel=body.channel or "api",
        image_ref=image_ref,
        product_filter=r.product_filter(_filter_obj(body)),
    )
    return result
