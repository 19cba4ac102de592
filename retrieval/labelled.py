"""Labelled query files: ``{"query"?: str, "image"?: path, "relevant": [id, ...]}`` per line
(product queries may also carry a ``"filter"`` object, see docs/filters.md).

An empty ``relevant`` list marks an out-of-scope query (the right behaviour is to hand
off). Image paths are relative to the file. Errors name the file, line and field.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError, SourceError
from .filters import ProductFilter, parse_filter
from .querytext import clean_query
from .sources import read_records

__all__ = ["LabelledQuery", "read_labelled", "read_pairs", "read_unlabelled"]

MAX_QUERY_CHARS = 2000


@dataclass(frozen=True)
class LabelledQuery:
    line: int
    relevant: frozenset[str]
    text: str | None = None
    image: Path | None = None
    filter: ProductFilter | None = None  # product queries: only products it keeps count


def _relevant(
    path: Path, line: int, rec: dict[str, Any], known: Collection[str] | None, what: str
) -> frozenset[str]:
    relevant = rec.get("relevant")
    if relevant is None:
        raise SourceError(path, "missing (use [] for an out-of-scope query)", line, "relevant")
    if not isinstance(relevant, list) or not all(isinstance(r, (str, int)) for r in relevant):
        raise SourceError(path, "expected a list of ids", line, "relevant")
    ids = frozenset(str(r) for r in relevant)
    unknown = sorted(ids - set(known)) if known is not None else []
    if unknown:
        raise SourceError(path, f"unknown id '{unknown[0]}' (not in the {what})", line, "relevant")
    return ids


def read_labelled(
    path: Path,
    *,
    known_ids: Collection[str] | None,
    images: bool,
    what: str = "bank",
    allow_empty: bool = False,
) -> list[LabelledQuery]:
    """Read and validate a labelled query file; ``images`` allows (and resolves) ``image``.
    An id not in ``known_ids`` is an error naming the file and line (None: not checked)."""
    path = Path(path)
    out = []
    for line, rec in read_records(path):
        text = rec.get("query")
        if text is not None:
            if not isinstance(text, str):
                raise SourceError(path, f"expected text, got {type(text).__name__}", line, "query")
            try:
                text = clean_query(text, max_chars=MAX_QUERY_CHARS)
            except InputError as exc:
                raise SourceError(path, str(exc), line, "query") from None
        image = None
        if rec.get("image") is not None:
            if not images:
                raise SourceError(path, "images are not supported for FAQ queries", line, "image")
            ref = rec["image"]
            if not isinstance(ref, str) or not ref.strip():
                raise SourceError(path, "expected a file path", line, "image")
            image = (path.parent / ref).resolve()
            if not image.is_file():
                raise SourceError(path, f"image file '{ref}' not found", line, "image")
        if text is None and image is None:
            need = "'query' or 'image'" if images else "'query'"
            raise SourceError(path, f"a labelled query needs {need}", line, "query")
        product_filter = None
        if rec.get("filter") is not None:
            if not images:
                raise SourceError(path, "filters are for product queries", line, "filter")
            try:
                product_filter = parse_filter(rec["filter"])
            except InputError as exc:
                raise SourceError(path, str(exc), line, "filter") from None
            product_filter = None if product_filter.empty else product_filter
        out.append(
            LabelledQuery(
                line, _relevant(path, line, rec, known_ids, what), text, image, product_filter
            )
        )
    if not out and not allow_empty:
        raise SourceError(path, "the file holds no queries")
    return out


def read_pairs(path: Path, known_ids: Collection[str] | None) -> list[tuple[str, set[str]]]:
    """A labelled question file as (text, relevant ids) pairs: the shop's calibration file
    as ingest and re-index read it (text questions only; an empty file: no labels)."""
    return [
        (q.text or "", set(q.relevant))
        for q in read_labelled(path, known_ids=known_ids, images=False, allow_empty=True)
    ]


def read_unlabelled(path: Path) -> list[str]:
    """Questions from traffic without labels: a ``{"query": ...}`` file (JSONL, CSV, YAML; any
    ``relevant`` is ignored) or a ``.txt`` file with one question per line. Errors name the
    file and line."""
    path = Path(path)
    out: list[str] = []
    records: Iterator[tuple[int, dict[str, Any]]]
    if path.suffix.lower() == ".txt":
        if not path.is_file():
            raise SourceError(path, "file not found")
        rows = enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        records = ((line, {"query": text}) for line, text in rows if text.strip())
    else:
        records = read_records(path)
    for line, rec in records:
        text = rec.get("query")
        if not isinstance(text, str):
            raise SourceError(path, "expected the question's text", line, "query")
        try:
            out.append(clean_query(text, max_chars=MAX_QUERY_CHARS))
        except InputError as exc:
            raise SourceError(path, str(exc), line, "query") from None
    if not out:
        raise SourceError(path, "the file holds no questions")
    return out
