"""Request-size limits that hold for any body: declared, chunked, or many small parts.

:class:`BodyLimit` is an ASGI middleware that counts the bytes of a request body as they
arrive and stops at the route's limit (413), whether or not the client sent
``Content-Length``. A body is therefore never held, parsed or spooled past its limit: the
route (or the form parser) sees :class:`BodyTooLarge` from ``receive`` and the app turns it
into the usual 413 JSON (or the console's 413 page).

:func:`read_form` parses a form with bounds on fields, files and text-part size, and turns
the parser's refusals into :class:`~retrieval.errors.InputError` / ``TooLarge`` with the
service's JSON body instead of Starlette's bare 400.

:class:`NoStore` marks every console response (pages, JSON, errors) ``Cache-Control:
no-store``, so no agent data stays in a browser or proxy cache.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import InputError, TooLarge

__all__ = ["BodyLimit", "BodyTooLarge", "Limit", "NoStore", "form_text", "read_form"]


@dataclass(frozen=True)
class Limit:
    """A route's body limit and what to tell a client that goes over it."""

    max_bytes: int
    hint: str = ""


class BodyTooLarge(TooLarge):
    """A request body over its route's limit (declared, or counted as it arrived)."""

    def __init__(self, limit: Limit, declared: int | None = None):
        what = (
            f"the request is {_size(declared)}"
            if declared is not None
            else f"the request is over {_size(limit.max_bytes)}"
        )
        super().__init__(f"{what}; {limit.hint or f'the limit is {_size(limit.max_bytes)}'}")
        self.limit = limit


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1_000_000 else f"{n // 1024} KB"


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit_for(scope)`` with 413.

    A declared ``Content-Length`` over the limit is refused before the app runs; otherwise
    every ``http.request`` message is counted and the one that crosses the limit raises
    :class:`BodyTooLarge` in the app (which answers 413). If the app swallowed the exception
    and sent nothing, this middleware answers 413 itself."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], Limit]):
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit():
            if int(declared) > limit.max_bytes:
                await _send_413(send, BodyTooLarge(limit, int(declared)))
                return
        received = 0
        started = False
        # a body the app did not read to its end: the connection is closed after the answer,
        # or the server would go on reading (and discarding) the rest to keep it alive
        unread = bool(declared and declared.strip() not in ("", "0")) or (
            _header(scope, b"transfer-encoding") is not None
        )

        async def counted() -> Message:
            nonlocal received, unread
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if not message.get("more_body", False):
                    unread = False
                if received > limit.max_bytes:
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if unread:
                    headers = [
                        (k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"
                    ]
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, counted, watched_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await _send_413(send, exc)


class NoStore:
    """ASGI middleware: ``Cache-Control: no-store`` on every response under ``prefix``."""

    def __init__(self, app: ASGIApp, prefix: str = "/agent"):
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"
                ]
                headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_no_store)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _send_413(send: Send, exc: BodyTooLarge) -> None:
    body = json.dumps({"error": "TooLarge", "detail": str(exc)}, ensure_ascii=False).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def read_form(
    request: Request, *, max_fields: int, max_files: int, max_part_size: int
) -> FormData:
    """The request's form, parsed within bounds; a form over them is an :class:`InputError`
    (``TooLarge`` for a text part over ``max_part_size``) that names the bound."""
    try:
        return await request.form(
            max_fields=max_fields, max_files=max_files, max_part_size=max_part_size
        )
    except HTTPException as exc:  # Starlette's refusal of a form over a bound, or malformed
        detail = str(exc.detail)
        if "maximum size" in detail:
            raise TooLarge(
                f"a form field is over {_size(max_part_size)}; only a file part may be larger"
            ) from None
        if "Too many files" in detail:
            raise InputError(
                f"the form holds too many files: {max_files} at most"
                if max_files
                else "this form takes no files"
            ) from None
        if "Too many fields" in detail:
            raise InputError(f"the form holds too many fields: {max_fields} at most") from None
        raise InputError(f"the form could not be read: {detail}") from None


def form_text(form: FormData, name: str) -> Any:
    """A text field of ``form`` (None when missing or a file)."""
    value = form.get(name)
    return value if isinstance(value, str) else None
