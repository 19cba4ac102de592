"""The FAQ answer bank: typed entries loaded from JSONL, CSV or YAML and validated."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SourceError
from .records import content_hash, get_id, get_str, get_str_list
from .sources import read_records

__all__ = ["FAQBank", "FAQEntry", "load_faq", "normalize_text"]

_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """How two phrasings are compared for being the same question."""
    return _SPACE.sub(" ", text).strip().casefold()


@dataclass(frozen=True)
class FAQEntry:
    id: str
    answer: str
    question: str = ""
    examples: tuple[str, ...] = ()
    lang: str = "en"
    tags: tuple[str, ...] = ()
    group: str = ""  # entries sharing a group are language versions of one answer

    def phrasings(self) -> list[tuple[str, str]]:
        """(variant, text) pairs that get their own vector: question, examples, answer."""
        out = []
        if self.question:
            out.append(("question", self.question))
        out.extend((f"example{i}", text) for i, text in enumerate(self.examples))
        out.append(("answer", self.answer))
        return out

    def content_hash(self) -> str:
        return content_hash(self.phrasings())

    def to_record(self) -> dict:
        return {
            "id": self.id,
            "answer": self.answer,
            "question": self.question,
            "examples": list(self.examples),
            "lang": self.lang,
            "tags": list(self.tags),
            "group": self.group,
        }

    @classmethod
    def from_record(cls, rec: dict) -> FAQEntry:
        return cls(
            **{
                **rec,
                "examples": tuple(rec.get("examples", ())),
                "tags": tuple(rec.get("tags", ())),
            }
        )

    def public(self) -> dict:
        return {
            "id": self.id,
            "question": self.question,
            "answer": self.answer,
            "lang": self.lang,
            "tags": list(self.tags),
            "group": self.group or self.id,
        }


@dataclass(frozen=True)
class FAQBank:
    entries: dict[str, FAQEntry] = field(default_factory=dict)
    source: Path | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[FAQEntry]:
        return iter(self.entries.values())

    def __contains__(self, entry_id: object) -> bool:
        return isinstance(entry_id, str) and self.get(entry_id) is not None

    def get(self, entry_id: str) -> FAQEntry | None:
        return self.entries.get(entry_id)

    def get_many(self, entry_ids: Iterable[str]) -> dict[str, FAQEntry]:
        """The entries of these ids that the bank has."""
        return {i: self.entries[i] for i in entry_ids if i in self.entries}

    def language_versions(self) -> dict[tuple[str, str], str]:
        """(answer group, language) -> the id of the entry written in that language."""
        return {(e.group or e.id, e.lang): e.id for e in self}


def load_faq(path: Path) -> FAQBank:
    """Load and validate an FAQ bank; errors name the file, line and field."""
    path = Path(path)
    entries: dict[str, FAQEntry] = {}
    lines: dict[str, int] = {}
    for line, rec in read_records(path, list_keys=("examples", "tags")):
        eid = get_id(path, line, rec)
        if eid in entries:
            raise SourceError(
                path, f"duplicate id '{eid}' (first on line {lines[eid]})", line=line, field="id"
            )
        entries[eid] = FAQEntry(
            id=eid,
            answer=get_str(path, line, rec, "answer", required=True),
            question=get_str(path, line, rec, "question", max_len=2000),
            examples=tuple(e[:2000] for e in get_str_list(path, line, rec, "examples")),
            lang=get_str(path, line, rec, "lang", max_len=16) or "en",
            tags=get_str_list(path, line, rec, "tags"),
            group=get_str(path, line, rec, "group", max_len=200) or eid,
        )
        lines[eid] = line
    if not entries:
        raise SourceError(path, "the FAQ bank holds no entries")
    return FAQBank(entries, path)
