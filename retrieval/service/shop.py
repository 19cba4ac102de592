"""The demo shop page with its chat window, served at ``/shop/`` by the retrieval service.

The page (static HTML, CSS and a small script in ``static/shop/``) lists products and
holds the chat window. Its API, under ``/shop/api/``:

- ``GET products``: the catalog for the page;
- ``POST chat`` ``{"message": ...}``: relayed to Rasa as the conversation in the page's
  cookie (issued here, HttpOnly); returns the bot's messages;
- ``POST photo`` (multipart ``image``): the photo is checked and stored, and Rasa gets the
  message ``/send_photo{"photo_id": ...}``, which the bot answers with product matches;
- ``GET updates?after=N``: agents' replies (from the console at ``/agent/``) to the cookie's
  conversation with an id above N; the page polls it. No other conversation can be named.
  Replies are signed "Support", never with the agent's login name.

The conversation id in the cookie is issued and signed by this server
(:class:`~retrieval.service.keys.ConversationIds`); a cookie holding anything else starts a
new conversation. Request bodies are bounded by the app's body-limit middleware; the photo
form is parsed with one file and two small text fields at most.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from ..apidoc import error_responses, json_body
from ..errors import Conflict, ImageError, InputError, TooLarge
from ..httplimits import read_form
from .chat import ChatRelay, check_message
from .keys import ConversationIds
from .schemas import PHOTO_FIELD, PHOTO_TYPES, ChatIn, ChatOut, ShopProductsOut, ShopUpdatesOut

__all__ = ["AGENT_LABEL", "COOKIE", "router"]

STATIC = Path(__file__).parent / "static" / "shop"
COOKIE = "shop_conversation"
AGENT_LABEL = "Support"  # who an agent's reply is from, as the shopper sees it
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

router = APIRouter(tags=["shop"])


def _ids(request: Request) -> ConversationIds:
    return request.app.state.conversations


def conversation_of(request: Request) -> tuple[str, bool]:
    """The page's conversation id, and whether it was just issued."""
    cid = request.cookies.get(COOKIE)
    if _ids(request).valid(cid):
        return cid, False
    return _ids(request).new(), True


def _reply(messages: list[dict[str, Any]], cid: str, new: bool) -> JSONResponse:
    response = JSONResponse({"conversation_id": cid, "messages": messages})
    if new:
        response.set_cookie(COOKIE, cid, max_age=30 * 24 * 3600, httponly=True, samesite="strict")
    return response


def _relay(request: Request) -> ChatRelay:
    return request.app.state.chat


@router.get("/", include_in_schema=False)
async def home() -> RedirectResponse:
    return RedirectResponse("/shop/")


@router.get("/shop/", include_in_schema=False)
async def shop_page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers=_SECURITY_HEADERS)


@router.get("/shop/static/{name}", include_in_schema=False)
async def shop_static(name: str) -> Response:
    files = {p.name: p for p in STATIC.iterdir() if p.suffix in (".css", ".js", ".svg")}
    if name not in files:  # a fixed set of files: no path is ever built from the request
        return JSONResponse({"error": "NotFound", "detail": "no such file"}, status_code=404)
    return FileResponse(files[name], headers={"Cache-Control": "no-cache", **_SECURITY_HEADERS})


@router.get("/shop/api/products", response_model=ShopProductsOut, responses=error_responses(422))
async def shop_products(
    request: Request, limit: Annotated[int, Query(ge=1, le=200)] = 24
) -> dict[str, Any]:
    catalog = request.app.state.retriever.snapshot.catalog
    return {"products": [p.card() for p in catalog.first(limit)], "total": len(catalog)}


_PHOTO_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"image": PHOTO_FIELD},
                    "required": ["image"],
                    "additionalProperties": False,
                },
                "encoding": {"image": {"contentType": PHOTO_TYPES}},
            }
        },
    }
}


@router.post(
    "/shop/api/chat",
    response_model=ChatOut,
    responses=error_responses(413, 422, 429, 503),
    openapi_extra=json_body(ChatIn),
)
async def shop_chat(request: Request) -> JSONResponse:
    """Relay the shopper's message to the bot; sets the conversation cookie on the first.
    413: over max_query_chars; 429: several messages of this conversation still waiting;
    503: the bot is not available."""
    limits = request.app.state.retriever.limits
    raw = await request.body()  # bounded by the body-limit middleware
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        raise InputError('send JSON: {"message": "..."}') from None
    if not isinstance(body, dict):
        raise InputError('send JSON: {"message": "..."}')
    message = check_message(body.get("message"), limits.max_query_chars)
    cid, new = conversation_of(request)
    return _reply(await _relay(request).send(cid, message), cid, new)


@router.post(
    "/shop/api/photo",
    response_model=ChatOut,
    responses=error_responses(413, 422, 429, 503),
    openapi_extra=_PHOTO_BODY,
)
async def shop_photo(request: Request) -> JSONResponse:
    """Send the shopper's photo to the bot, which answers with product matches."""
    uploads = request.app.state.uploads
    limit = uploads.max_bytes
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InputError("send the photo as multipart/form-data in a field named 'image'")
    form = await read_form(request, max_fields=2, max_files=1, max_part_size=4096)
    image = form.get("image")
    if image is None or isinstance(image, str):
        raise InputError("no photo attached: send it in a field named 'image'")
    unknown = sorted(name[:40] for name in form if name != "image")
    if unknown:
        raise InputError(f"{unknown[0]}: unknown field; send only the photo, as 'image'")
    data = await image.read(limit + 1)
    if not data:
        raise ImageError("the photo is empty")
    if len(data) > limit:
        raise TooLarge(f"the photo is over {limit / 1e6:.1f} MB; please send a smaller one")
    photo_id = await run_in_threadpool(uploads.save, data)
    cid, new = conversation_of(request)
    messages = await _relay(request).send(cid, f'/send_photo{{"photo_id": "{photo_id}"}}')
    response = _reply(messages, cid, new)
    return response


@router.post(
    "/shop/api/person", response_model=ChatOut, responses=error_responses(409, 413, 429, 503)
)
async def shop_person(request: Request) -> JSONResponse:
    """The shopper asks for a person, e.g. with "none of these" under a photo's uncertain
    matches: the bot records a hand-off for this conversation (its earlier questions, the
    photo included, are in the agents' queue) and says a colleague will answer. No body."""
    cid, new = conversation_of(request)
    if new:  # a stranger's click starts no conversation: nothing to hand over
        raise Conflict("there is no conversation to hand over yet: send a message first")
    return _reply(await _relay(request).send(cid, "/request_human"), cid, new)


@router.get("/shop/api/updates", response_model=ShopUpdatesOut, responses=error_responses(422))
async def shop_updates(
    request: Request, after: Annotated[int, Query(ge=0, le=2**62)] = 0
) -> dict[str, Any]:
    """Agents' replies to this page's conversation (the cookie's; nobody else's)."""
    cid = request.cookies.get(COOKIE)
    console = getattr(request.app.state, "console", None)
    if not _ids(request).valid(cid) or console is None:
        return {"messages": [], "last": after}
    from ..console.replies import replies_for

    replies = await run_in_threadpool(replies_for, console.engine, cid, after)
    messages = [{**m, "agent": AGENT_LABEL} for m in replies]
    return {"messages": messages, "last": messages[-1]["id"] if messages else after}
