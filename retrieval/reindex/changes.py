"""What changed between the current index version and the sources, and what a re-index run
reports: the content-hash diff (``Changes``, ``diff_items``) and the per-kind and whole-run
reports (``KindReport``, ``ReindexSummary``)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Changes", "KindReport", "ReindexSummary", "diff_items"]


@dataclass(frozen=True)
class Changes:
    added: list[str]
    updated: list[str]
    deleted: list[str]
    unchanged: int

    @property
    def any(self) -> bool:
        return bool(self.added or self.updated or self.deleted)


def diff_items(old: dict[str, str], new: dict[str, str]) -> Changes:
    """Compare id -> content hash maps: what to encode (added, updated) and remove (updated, deleted)."""
    added = sorted(k for k in new if k not in old)
    updated = sorted(k for k in new if k in old and old[k] != new[k])
    deleted = sorted(k for k in old if k not in new)
    return Changes(added, updated, deleted, len(new) - len(added) - len(updated))


@dataclass
class KindReport:
    kind: str
    mode: str  # "unchanged" | "incremental" | "full" | "compacted"
    reason: str
    added: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    encoded: int = 0  # entries (FAQ) or products whose vectors were computed
    version: str | None = None
    seconds: float = 0.0

    def line(self) -> str:
        what = (
            f"{self.added} added, {self.updated} updated, {self.deleted} deleted, "
            f"{self.unchanged} unchanged; {self.encoded} encoded"
        )
        published = f" -> {self.version}" if self.version else " (nothing published)"
        return (
            f"{self.kind}: {self.mode} ({self.reason}): {what}{published} in {self.seconds:.1f} s"
        )


@dataclass
class ReindexSummary:
    reports: list[KindReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def published(self) -> dict[str, str]:
        return {r.kind: r.version for r in self.reports if r.version}
