"""What an evaluation run produced: one result per system (the product first, then
baselines), each with its per-query outcomes, metrics and threshold."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .metrics import Outcome, summarize

__all__ = ["Evaluation", "SystemResult"]


@dataclass(frozen=True)
class SystemResult:
    name: str  # "system", or a baseline: "exact", "bm25", "rasa"
    outcomes: tuple[Outcome, ...]
    abstention: bool
    threshold: float | None = None
    threshold_source: str = ""
    build_s: float = 0.0  # building the index or training the model

    @property
    def metrics(self) -> dict[str, Any]:
        return {
            **summarize(self.outcomes, abstention=self.abstention),
            **(
                {"threshold": self.threshold, "threshold_source": self.threshold_source}
                if self.abstention
                else {}
            ),
            "build_s": round(self.build_s, 3),
        }

    def outcome_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "ranked": list(o.ranked),
                "relevant": sorted(o.relevant),
                "top_score": o.top_score,
                "answered": o.answered,
                "query_ms": None if o.query_ms is None else round(o.query_ms, 3),
                "encode_ms": None if o.encode_ms is None else round(o.encode_ms, 3),
            }
            for o in self.outcomes
        ]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SystemResult:
        outcomes = tuple(
            Outcome(
                tuple(r["ranked"]),
                frozenset(r["relevant"]),
                r["top_score"],
                r["answered"],
                r["query_ms"],
                r["encode_ms"],
            )
            for r in data["outcomes"]
        )
        return cls(
            data["name"],
            outcomes,
            data["abstention"],
            data.get("threshold"),
            data.get("threshold_source", ""),
            data.get("build_s", 0.0),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "abstention": self.abstention,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "build_s": self.build_s,
            "outcomes": self.outcome_rows(),
        }


@dataclass(frozen=True)
class Evaluation:
    kind: str  # "faq" or "products"
    dataset: str
    results: tuple[SystemResult, ...]  # the system first
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def system(self) -> SystemResult:
        return self.results[0]

    def summary(self) -> dict[str, Any]:
        """The JSON printed by ``retrieval eval``: the system's metrics at the top level."""
        return {
            "kind": self.kind,
            "dataset": self.dataset,
            **self.system.metrics,
            **self.info,
            "baselines": {r.name: r.metrics for r in self.results[1:]},
        }

    def to_json(self) -> dict[str, Any]:
        """Everything, per-query outcomes included (what a report is drawn from)."""
        return {
            "kind": self.kind,
            "dataset": self.dataset,
            "info": self.info,
            "results": [r.to_json() for r in self.results],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evaluation:
        return cls(
            data["kind"],
            data["dataset"],
            tuple(SystemResult.from_json(r) for r in data["results"]),
            data.get("info", {}),
        )
