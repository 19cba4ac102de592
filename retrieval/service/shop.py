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
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from ..errors import ImageError, InputError, TooLarge
from .chat import ChatRelay, check_message, is_conversation_id, new_conversation_id

__all__ = ["COOKIE", "router"]

STATIC = Path(__file__).parent / "static" / "shop"
COOKIE = "shop_conversation"
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

router = APIRouter(tags=["shop"])


def _conversation(request: Request) -> tuple[str, bool]:
    """The page's conversation id, and whether it was just issued."""
    cid = request.cookies.get(COOKIE)
    if is_conversation_id(cid):
        return cid, False
    return new_conversation_id(), True


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


@router.get("/shop/api/products")
async def shop_products(
    request: Request, limit: Annotated[int, Query(ge=1, le=200)] = 24
) -> dict[str, Any]:
    catalog = request.app.state.retriever.snapshot.catalog
    out = []
    for p in list(catalog)[:limit]:
        out.append(
            {
                "id": p.id,
                "title": p.title,
                "price": p.price,
                "currency": p.currency,
                "stock": p.stock,
                "image_url": f"/v1/products/{p.id}/image" if p.images else None,
                "similar_url": f"/v1/products/{p.id}/similar",
            }
        )
    return {"products": out, "total": len(catalog)}


@router.post("/shop/api/chat")
async def shop_chat(request: Request) -> JSONResponse:
    limits = request.app.state.retriever.limits
    raw = await request.body()
    if len(raw) > 8 * limits.max_query_chars + 1024:
        raise TooLarge(
            f"the message is too long; please keep it under {limits.max_query_chars:,} characters"
        )
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        raise InputError('send JSON: {"message": "..."}') from None
    if not isinstance(body, dict):
        raise InputError('send JSON: {"message": "..."}')
    message = check_message(body.get("message"), limits.max_query_chars)
    cid, new = _conversation(request)
    return _reply(await _relay(request).send(cid, message), cid, new)


@router.post("/shop/api/photo")
async def shop_photo(request: Request) -> JSONResponse:
    uploads = request.app.state.uploads
    limit = uploads.max_bytes
    length = int(request.headers.get("content-length") or 0)
    if length > limit + 64 * 1024:
        raise TooLarge(
            f"the photo is {length / 1e6:.1f} MB; photos up to {limit / 1e6:.1f} MB are accepted"
        )
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InputError("send the photo as multipart/form-data in a field named 'image'")
    form = await request.form(max_part_size=limit + 1)
    image = form.get("image")
    if image is None or isinstance(image, str):
        raise InputError("no photo attached: send it in a field named 'image'")
    data = await image.read(limit + 1)
    if not data:
        raise ImageError("the photo is empty")
    if len(data) > limit:
        raise TooLarge(f"the photo is over {limit / 1e6:.1f} MB; please send a smaller one")
    photo_id = await run_in_threadpool(uploads.save, data)
    cid, new = _conversation(request)
    messages = await _relay(request).send(cid, f'/send_photo{{"photo_id": "{photo_id}"}}')
    response = _reply(messages, cid, new)
    return response


@router.get("/shop/api/updates")
async def shop_updates(
    request: Request, after: Annotated[int, Query(ge=0, le=2**62)] = 0
) -> dict[str, Any]:
    """Agents' replies to this page's conversation (the cookie's; nobody else's)."""
    cid = request.cookies.get(COOKIE)
    console = getattr(request.app.state, "console", None)
    if not is_conversation_id(cid) or console is None:
        return {"messages": [], "last": after}
    from ..console.queue import replies_for

    messages = await run_in_threadpool(replies_for, console.engine, cid, after)
    return {"messages": messages, "last": messages[-1]["id"] if messages else after}
