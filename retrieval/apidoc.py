"""The OpenAPI side of the HTTP edge, shared by the service and the console.

- :class:`ErrorOut`, the body of every error response (``{"error", "detail"}``) and
  :func:`error_responses`, which documents a route's error statuses with it;
- :func:`json_body` / :func:`form_body`: the request body of a route that reads its body
  itself (after its checks: the console checks the session before it reads a byte);
- limits that come from settings (``max_k``, ``max_query_chars``, ...): a schema names one
  with :func:`live`, and :func:`apply_live` writes the running service's values into the
  document, so ``/openapi.json`` never promises more than the service accepts;
- :func:`not_blank` / :func:`visible_text`: the patterns of a text that is not blank once
  stripped or cleaned.
"""

from __future__ import annotations

import copy
import functools
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field
from pydantic.json_schema import models_json_schema

__all__ = [
    "ErrorOut",
    "Whole",
    "add_models",
    "apply_live",
    "error_responses",
    "form_body",
    "json_body",
    "live",
    "not_blank",
    "tidy",
    "visible_text",
    "whole",
    "without_null",
]

LIVE_KEY = "x-live"


def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def whole(**constraints: Any) -> Any:
    """An integer as JSON Schema means it, in a strict model: 75 and 75.0, not "75" or true
    (``constraints``: ``ge``, ``le``, ... of :func:`pydantic.Field`)."""
    return Annotated[int, Field(**constraints), BeforeValidator(_whole)]


Whole = whole()
_REF = "#/components/schemas/{model}"

_STATUS_TEXT = {
    400: "The request could not be used.",
    401: "Not logged in, or the session expired (the console).",
    403: "Not allowed: a missing or wrong CSRF token, or a field that needs the API key.",
    404: "No such item.",
    409: "Another agent acted first, the request was made from an old state, or the "
    "question is not waiting for an agent.",
    413: "The request body, an upload, or a text (message, reply, reason) is over its limit.",
    422: "A field is missing, of the wrong type or out of range; `detail` names it.",
    429: "Too many requests at once (one conversation's messages, or logins).",
    503: "A service this one relies on (the database, the bot, the encoders) is down or "
    "overloaded; try again later (`Retry-After` says when, where known).",
}


class ErrorOut(BaseModel):
    """The body of every error response: what went wrong, in one line."""

    error: str = Field(
        ..., description="The kind of error (InputError, NotFound, TooLarge, ...).", min_length=1
    )
    detail: str = Field(..., description="What went wrong and how to fix it, for a person.")


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that can answer with these error statuses. 503 is always
    among them: any route may find the database or another service it relies on down."""
    return {
        code: {"model": ErrorOut, "description": _STATUS_TEXT[code]}
        for code in sorted({*codes, 503})
    }


def json_body(model: type[BaseModel], description: str = "") -> dict[str, Any]:
    """``openapi_extra`` of a route that reads a JSON body of ``model`` itself."""
    body: dict[str, Any] = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}},
    }
    if description:
        body["description"] = description
    return {"requestBody": body}


def form_body(schema: Mapping[str, Any], encoding: Mapping[str, Any]) -> dict[str, Any]:
    """The ``multipart/form-data`` content of a route's request body (merge it into the
    ``content`` of :func:`json_body` to accept both)."""
    return {"multipart/form-data": {"schema": dict(schema), "encoding": dict(encoding)}}


def live(**fields: str) -> dict[str, Any]:
    """``json_schema_extra`` of a field whose schema keywords come from the running service:
    ``live(maximum="max_k")`` sets ``maximum`` to the ``max_k`` value given to
    :func:`apply_live`."""
    return {LIVE_KEY: dict(fields)}


def add_models(document: dict[str, Any], models: Sequence[type[BaseModel]]) -> None:
    """Put ``models`` (and the models they hold) into the document's components."""
    _, defs = models_json_schema(
        [(m, "validation") for m in models], ref_template=_REF, title="models"
    )
    document.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))


def without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` for a value that cannot be null (a query parameter, a form field): an
    ``anyOf`` of one type and null becomes that type, and a null default goes."""
    variants = schema.get("anyOf")
    if not variants or {"type": "null"} not in variants or len(variants) != 2:
        return schema
    out = {k: v for k, v in schema.items() if k != "anyOf"}
    if out.get("default", "") is None:
        del out["default"]
    return {**next(v for v in variants if v != {"type": "null"}), **out}


def tidy(document: dict[str, Any]) -> None:
    """Make FastAPI's document say what this API does: every 422 is an :class:`ErrorOut`
    (the app's handler turns validation errors into one), and a query or path parameter is
    never null (absent is how a client leaves one out)."""
    schemas = document.get("components", {}).get("schemas", {})
    for methods in document.get("paths", {}).values():
        for operation in methods.values():
            for parameter in operation.get("parameters", ()):
                parameter["schema"] = without_null(parameter["schema"])
            invalid = operation.get("responses", {}).get("422")
            if invalid is not None and "HTTPValidationError" in str(invalid):
                operation["responses"]["422"] = {
                    "description": _STATUS_TEXT[422],
                    "content": {
                        "application/json": {"schema": {"$ref": _REF.format(model="ErrorOut")}}
                    },
                }
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas.setdefault("ErrorOut", ErrorOut.model_json_schema(ref_template=_REF))


def apply_live(document: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``document`` with every :func:`live` keyword set from ``values``."""
    out = copy.deepcopy(document)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            fields = node.pop(LIVE_KEY, None)
            for keyword, name in (fields or {}).items():
                node[keyword] = values[name]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(out)
    return out


_INVISIBLE = ("Cc", "Cf", "Co", "Zl", "Zp")  # what querytext.clean_query blanks out (and Cs)


def _pattern_char(cp: int) -> str:
    return f"\\u{cp:04x}" if cp <= 0xFFFF else chr(cp)  # Python reads no \u{...}


def _none_of(excluded: Callable[[str], bool], below: int = 0x110000) -> str:
    """A pattern matching one character for which ``excluded`` is false (surrogates, which
    no UTF-8 request can carry, left aside); BMP characters as ``\\uXXXX`` and the others as
    themselves, which ECMA 262 (with the u flag), Rust's regex (the validators) and Python
    all read the same."""
    ranges: list[list[int]] = []
    for cp in range(below):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        if excluded(chr(cp)):
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1][1] = cp
            else:
                ranges.append([cp, cp])
    parts = (
        _pattern_char(a) if a == b else f"{_pattern_char(a)}-{_pattern_char(b)}" for a, b in ranges
    )
    return "[^" + "".join(parts) + "]"


@functools.cache
def not_blank(removed: str = "") -> str:
    """A pattern that a text matches when ``str.strip()`` leaves something of it (after
    the characters in ``removed`` are taken out)."""
    return _none_of(lambda ch: ch.isspace() or ch in removed)


@functools.cache
def visible_text() -> str:
    """A pattern that a text matches when :func:`~retrieval.querytext.clean_query` leaves
    something of it: one character that is neither white space (``str.isspace``) nor a
    control, format, private-use or line/paragraph separator. Built from this Python's
    Unicode tables, as the cleaning is.

    One exception: the supplementary private-use planes (U+F0000 and up) are not in the
    pattern. The cleaning blanks them too, so a question of nothing but such characters is
    refused (422) although the pattern lets it through; listing those 131,068 characters
    makes test-data generators (Hypothesis) about fifty times slower."""
    invisible = frozenset(_INVISIBLE)
    category = unicodedata.category
    return _none_of(lambda ch: ch.isspace() or category(ch) in invisible, below=0xF0000)
