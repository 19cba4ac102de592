"""Telling a database outage from a bug, for the HTTP routes and the console's pages.

While the database cannot be used (stopped, restarting, out of connections, a file that
cannot be opened) a request gets 503 with ``Retry-After`` and a detail that names no server:
the driver's text holds the server's address, which strangers need not see (the log has it).
A schema that does not match the code ("no such table") is a bug, not an outage: it stays
an error to fix, not a "try again".
"""

from __future__ import annotations

import re

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from ..errors import LogBehind, StoreError

__all__ = ["DATABASE_DOWN", "RETRY_AFTER_S", "UNREACHABLE", "is_outage", "summary"]

DATABASE_DOWN = "the database cannot be used right now; try again shortly"
RETRY_AFTER_S = 5
# what SQLAlchemy raises when the database cannot be reached or used
UNREACHABLE = (OperationalError, InterfaceError, PoolTimeout)
_SCHEMA_PROBLEM = re.compile(r"no such (table|column)|has no column|syntax error", re.I)


def summary(exc: BaseException) -> str:
    """The error's kind and the first line of the driver's message, for the log."""
    text = str(getattr(exc, "orig", None) or exc).splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` says the database cannot be used right now. The query log's own
    refusal (:class:`LogBehind`) is not one: its message is safe and says what happened."""
    if isinstance(exc, LogBehind):
        return False
    if isinstance(exc, StoreError):
        return True
    if isinstance(exc, OperationalError):
        return not _SCHEMA_PROBLEM.search(str(getattr(exc, "orig", exc)))
    return isinstance(exc, UNREACHABLE)
