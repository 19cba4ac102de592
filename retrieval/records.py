"""Validation helpers shared by the catalog and FAQ loaders."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from .errors import SourceError

__all__ = ["content_hash", "get_float", "get_id", "get_int", "get_str", "get_str_list"]

_ID = re.compile(r"^[^\s\x00-\x1f]{1,200}$")


def get_id(path: Path, line: int, record: dict[str, Any]) -> str:
    value = record.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise SourceError(path, "missing or empty", line=line, field="id")
    value = value.strip()
    if not _ID.match(value):
        raise SourceError(
            path,
            f"invalid id {value[:40]!r}: 1-200 characters, no spaces or control characters",
            line=line,
            field="id",
        )
    return value


def get_str(
    path: Path,
    line: int,
    record: dict[str, Any],
    key: str,
    *,
    required: bool = False,
    max_len: int = 20_000,
) -> str:
    value = record.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise SourceError(path, "missing or empty", line=line, field=key)
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise SourceError(path, f"expected text, got {type(value).__name__}", line=line, field=key)
    value = value.strip()
    if len(value) > max_len:
        raise SourceError(
            path, f"{len(value)} characters; the limit is {max_len}", line=line, field=key
        )
    return value


def get_str_list(path: Path, line: int, record: dict[str, Any], key: str) -> tuple[str, ...]:
    value = record.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise SourceError(path, "expected a list of texts", line=line, field=key)
    return tuple(str(v).strip() for v in value if str(v).strip())


def get_float(path: Path, line: int, record: dict[str, Any], key: str) -> float | None:
    value = record.get(key)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SourceError(path, f"expected a number, got {value!r}", line=line, field=key) from None
    if not number >= 0 or number == float("inf"):
        raise SourceError(path, f"must be a number >= 0, got {value!r}", line=line, field=key)
    return number


def get_int(path: Path, line: int, record: dict[str, Any], key: str) -> int | None:
    value = record.get(key)
    if value is None or value == "":
        return None
    try:
        number = int(str(value))
    except ValueError:
        raise SourceError(
            path, f"expected a whole number, got {value!r}", line=line, field=key
        ) from None
    if number < 0:
        raise SourceError(path, f"must be >= 0, got {number}", line=line, field=key)
    return number


def content_hash(*parts: Any) -> str:
    """Stable hash of a record's indexed content (changes exactly when re-encoding is needed)."""
    return hashlib.sha256(
        json.dumps(parts, ensure_ascii=False, sort_keys=True, default=str).encode()
    ).hexdigest()[:16]
