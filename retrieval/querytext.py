"""Cleaning shopper text before it is encoded or stored."""

from __future__ import annotations

import re
import unicodedata

from .errors import InputError

__all__ = ["clean_query", "has_cjk", "has_han"]

_SPACE = re.compile(r"\s+")
# Chinese ideographs (with extension A and compatibility forms)
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_HAN_RE = re.compile(f"[{_HAN}]")
# CJK: the ideographs, kana and hangul
_CJK_RE = re.compile(f"[\u3040-\u30ff\uac00-\ud7af{_HAN}]")


def has_cjk(text: str) -> bool:
    """True when ``text`` holds a Chinese, Japanese or Korean character: such a question is
    routed to the multilingual views (the English encoder maps it to noise)."""
    return _CJK_RE.search(text) is not None


def has_han(text: str) -> bool:
    """True when ``text`` holds a Chinese character: the shopper writes Chinese."""
    return _HAN_RE.search(text) is not None


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
