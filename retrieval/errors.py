"""Exceptions raised by the retrieval package.

Every error that a user can cause derives from :class:`RetrievalError`, so entry points
turn it into one clear line (CLI) or a 4xx JSON body (HTTP) instead of a traceback::

    RetrievalError
    ├── ConfigError            settings that cannot work (bad path, bad weight, unknown encoder)
    │   └── ModelUnavailable   a model package or weights file that is not installed / not found
    ├── InputError             a bad query: empty, too long, bad k, bad image          -> HTTP 422
    │   ├── ImageError         not an image, truncated, too many pixels                 -> HTTP 422
    │   ├── TooLarge           a request body or upload over the size limit              -> HTTP 413
    │   └── Busy               too many messages waiting in one conversation             -> HTTP 429
    ├── NotFound               an unknown product or FAQ id                             -> HTTP 404
    ├── SourceError            a catalog / FAQ file with a problem (names file, line, field)
    ├── IndexError_            an index that is missing, corrupt, or built with other encoders
    │   ├── IndexMismatch      built with another encoder or fusion than configured
    │   └── VectorStoreError   the pgvector store failed a query (details only in logs)  -> HTTP 503
    │       └── VectorStoreDown  it cannot be reached or was lost: retry shortly
    ├── StoreError             the SQL log cannot be used                               -> HTTP 503
    │   └── LogBehind          the query log's queue is full: the query was not recorded
    ├── Unavailable            a service this one relies on (the Rasa server) is down   -> HTTP 503
    ├── NotLoggedIn            no agent session, or an expired one (console)            -> HTTP 401
    ├── Forbidden              a console form without a valid CSRF token                -> HTTP 403
    └── Conflict               another agent acted first, or the form is stale          -> HTTP 409
"""

from __future__ import annotations

__all__ = [
    "Busy",
    "ConfigError",
    "Conflict",
    "Forbidden",
    "ImageError",
    "IndexError_",
    "IndexMismatch",
    "VectorStoreDown",
    "VectorStoreError",
    "InputError",
    "LogBehind",
    "ModelUnavailable",
    "NotFound",
    "NotLoggedIn",
    "RetrievalError",
    "SourceError",
    "StoreError",
    "TooLarge",
    "Unavailable",
]


class RetrievalError(Exception):
    """Base class: a problem the user can fix, described in one line."""

    http_status = 400


class ConfigError(RetrievalError):
    """Settings that cannot work."""

    http_status = 500


class ModelUnavailable(ConfigError):
    """A model package or weights file is missing."""

    http_status = 503


class InputError(RetrievalError):
    """A query that cannot be answered as given."""

    http_status = 422


class ImageError(InputError):
    """An uploaded or referenced image that cannot be used; ``path``: the file it names,
    when it came from one (kept when the error travels back from a worker process)."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class TooLarge(InputError):
    """A request body or upload over its size limit."""

    http_status = 413


class NotFound(RetrievalError):
    """An id that does not exist."""

    http_status = 404


class SourceError(RetrievalError):
    """A catalog or FAQ source with a problem; the message names file, line and field."""

    def __init__(
        self, path: object, message: str, line: int | None = None, field: str | None = None
    ):
        where = str(path)
        if line is not None:
            where += f":{line}"
        if field is not None:
            where += f": field '{field}'"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line
        self.field = field


class IndexError_(RetrievalError):  # noqa: N801 - avoid shadowing the builtin IndexError
    """An index that cannot be used."""

    http_status = 503


class VectorStoreError(IndexError_):
    """The vector store's database failed a query (a version pruned under a reader, a
    missing extension). The message names the server without its password; HTTP callers get
    a generic 503 with ``Retry-After``, the details go to the log."""


class VectorStoreDown(VectorStoreError):
    """The vector store's database cannot be reached, or was lost mid-query (it may be back
    for the next one)."""


class IndexMismatch(IndexError_):
    """An index built with other encoders or fusion weights than the configured ones."""


class StoreError(RetrievalError):
    """The SQL log cannot be used."""

    http_status = 503


class LogBehind(StoreError):
    """The query log's writer cannot keep up, so a query was refused rather than left
    unrecorded; the message names no server and is safe to show to any caller."""


class Busy(InputError):
    """Too many requests at once from one conversation; the client should wait and retry."""

    http_status = 429


class Unavailable(RetrievalError):
    """A service this one relies on did not answer (down, or slower than its deadline)."""

    http_status = 503


class NotLoggedIn(RetrievalError):
    """A console page or API called without a valid agent session."""

    http_status = 401


class Forbidden(RetrievalError):
    """A console request that is not allowed (a missing or wrong CSRF token)."""

    http_status = 403


class Conflict(RetrievalError):
    """Another agent acted on the question first, or the form was made from an old state."""

    http_status = 409
