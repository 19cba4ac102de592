"""Cleaning shopper text before it is encoded or stored."""

from __future__ import annotations

import re
import unicodedata

from .errors import InputError

__all__ = ["clean_query"]

_SPACE = re.compile(r"\s+")


def clean_query(text: str | None, *, max_chars: int) -> str:
    """NFC-normalise, replace control and format characters by spaces, collapse whitespace.

    Raises :class:`InputError` for a query that is empty afterwards or longer than ``max_chars``.
    """
    if text is None:
        raise InputError("the query is empty")
    if not isinstance(text, str):
        raise InputError(f"the query must be text, got {type(text).__name__}")
    if len(text) > max_chars * 4:  # refuse before doing any work on a huge input
        raise InputError(f"the query is {len(text)} characters long; the limit is {max_chars}")
    text = unicodedata.normalize("NFC", text)
    text = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp") else ch
        for ch in text
    )
    text = _SPACE.sub(" ", text).strip()
    if not text:
        raise InputError("the query is empty (or holds only control characters)")
    if len(text) > max_chars:
        raise InputError(f"the query is {len(text)} characters long; the limit is {max_chars}")
    return text
