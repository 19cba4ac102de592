"""Schemathesis hooks for tests/test_openapi_contract.py, loaded by ``st run`` through
``SCHEMATHESIS_HOOKS=openapi_hooks``; they read what the test set up from ``OPENAPI_*``
environment variables.

They give the fuzzer what a JSON Schema cannot say, never a way round a check:

- the console's session: the test's agent session (cookie and CSRF header) on every
  ``/agent/api/`` route but login; after a generated ``POST /agent/api/logout`` ends it (the
  next call gets 401), a new session is made with the console's own login function;
- real photos for the image media types the photo fields list (a schema can say
  "image/png", not "a PNG that decodes");
- no valid filter with ``price_min`` above ``price_max`` (documented in words: a schema
  cannot compare two fields).
"""

from __future__ import annotations

import io
import os
from typing import Any

import schemathesis
from hypothesis import strategies as st


def _photo(fmt: str) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (48, 32), (200, 180, 40)).save(out, format=fmt)
    return out.getvalue()


# The photo fields' encoding lists these media types: a generated "valid" photo is a real one
for _media, _fmt in (
    ("image/jpeg", "JPEG"),
    ("image/png", "PNG"),
    ("image/webp", "WEBP"),
    ("image/gif", "GIF"),
    ("image/bmp", "BMP"),
):
    schemathesis.openapi.media_type(_media, st.just(_photo(_fmt)))


def _log_in() -> tuple[str, str]:
    """A new session of the test's agent, made with the console's login function."""
    from retrieval.console.auth import login
    from retrieval.store import make_engine

    engine = make_engine(os.environ["OPENAPI_DATABASE_URL"])
    try:
        token, session = login(
            engine, os.environ["OPENAPI_AGENT"], os.environ["OPENAPI_PASSWORD"], 3600.0
        )
    finally:
        engine.dispose()
    return token, session.csrf


class _Session:
    """A session cookie and CSRF token, set on a request; made anew once it has ended."""

    current: tuple[str, str] | None = None

    def get(self, case: Any, context: Any) -> tuple[str, str]:
        if self.current is None:
            type(self).current = self.first()
        assert self.current is not None
        return self.current

    def first(self) -> tuple[str, str]:
        return _log_in()

    def set(self, case: Any, data: tuple[str, str], context: Any) -> None:
        token, csrf = data
        case.cookies = {**(case.cookies or {}), "agent_session": token}
        case.headers = {**(case.headers or {}), "X-CSRF-Token": csrf}


# Schemathesis's own caching is off: these classes keep the session until it ends.
@schemathesis.auth(refresh_interval=None, retry_on=[]).apply_to(
    path_regex="^/agent/api/(?!login$|logout$)"
)
class AgentSession(_Session):
    """The test's agent, logged in over HTTP by the test, on every console route."""

    def first(self) -> tuple[str, str]:
        return os.environ["OPENAPI_SESSION"], os.environ["OPENAPI_CSRF"]


@schemathesis.auth(refresh_interval=None, retry_on=[]).apply_to(path="/agent/api/logout")
class LogoutSession(_Session):
    """A session of its own for logout, so logging out ends no other route's session."""


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    if case.operation.path == "/agent/api/logout" and response.status_code == 200:
        LogoutSession.current = None


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    if case.operation.path != "/v1/query" or not isinstance(case.body, dict):
        return True
    f = case.body.get("filter")
    if not isinstance(f, dict):
        return True
    low, high = f.get("price_min"), f.get("price_max")
    return not (isinstance(low, (int, float)) and isinstance(high, (int, float)) and low > high)
