"""Reading record files (JSONL, JSON, CSV, YAML) with the line number of every record."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from .errors import SourceError

__all__ = ["read_records", "SUPPORTED_SUFFIXES"]

SUPPORTED_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".yaml", ".yml")


def read_records(
    path: Path, *, list_keys: tuple[str, ...] = ()
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line, record) for each record in ``path``.

    CSV cells of the columns in ``list_keys`` hold lists separated by ``|``. YAML and JSON
    files hold a list of records, or a mapping with one list (e.g. ``entries:``).
    """
    path = Path(path)
    if not path.is_file():
        raise SourceError(path, "file not found")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise SourceError(
            path, f"unsupported file type '{suffix}'; use one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if suffix in (".jsonl", ".ndjson"):
        yield from _jsonl(path, text)
    elif suffix == ".csv":
        yield from _csv(path, text, list_keys)
    else:
        yield from _tree(path, text, suffix)


def _jsonl(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SourceError(
                path, f"invalid JSON ({exc.msg}, column {exc.colno})", line=n
            ) from None
        if not isinstance(record, dict):
            raise SourceError(path, f"expected a JSON object, got {type(record).__name__}", line=n)
        yield n, record


def _csv(path: Path, text: str, list_keys: tuple[str, ...]) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames:
        return
    for row in reader:
        n = reader.line_num
        if None in row:
            raise SourceError(path, "more cells than header columns", line=n)
        record: dict[str, Any] = {}
        for key, value in row.items():
            key = key.strip()
            value = (value or "").strip()
            if value == "":
                continue
            record[key] = (
                [v.strip() for v in value.split("|") if v.strip()] if key in list_keys else value
            )
        yield n, record


def _tree(path: Path, text: str, suffix: str) -> Iterator[tuple[int, dict[str, Any]]]:
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SourceError(path, f"invalid JSON ({exc.msg})", line=exc.lineno) from None
        lines: list[int] | None = None
    else:
        try:
            # libyaml's loader when present: the pure-Python one takes seconds per 1,000 entries
            # (one parse: the node tree gives line numbers, then becomes the data)
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
            try:
                node = loader.get_single_node()
                data = loader.construct_document(node) if node is not None else None
            finally:
                loader.dispose()
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise SourceError(
                path,
                f"invalid YAML ({getattr(exc, 'problem', exc)})",
                line=mark.line + 1 if mark else None,
            ) from None
        lines = _item_lines(node)
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise SourceError(
                path, "expected a list of records, or a mapping holding one list (e.g. 'entries:')"
            )
        data = lists[0]
    if data is None:
        return
    if not isinstance(data, list):
        raise SourceError(path, "expected a list of records")
    for i, record in enumerate(data):
        n = lines[i] if lines and i < len(lines) else i + 1
        if not isinstance(record, dict):
            raise SourceError(path, f"expected a mapping, got {type(record).__name__}", line=n)
        yield n, record


def _item_lines(node: Any) -> list[int]:
    if isinstance(node, yaml.MappingNode):
        seqs = [v for _, v in node.value if isinstance(v, yaml.SequenceNode)]
        node = seqs[0] if len(seqs) == 1 else None
    if isinstance(node, yaml.SequenceNode):
        return [item.start_mark.line + 1 for item in node.value]
    return []
