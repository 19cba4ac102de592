"""The out-of-scope (hand-off) signal of an FAQ bank: is a shopper's message something the
bank answers at all?

A new shop has its bank (entries with phrasings) and a few labelled in-scope questions, but
no labelled out-of-scope ones, so a threshold fitted to maximise accuracy on its labels
answers nearly everything. A signal and a threshold that hand off what the bank does not
cover are fitted (:mod:`retrieval.outofscope_fit`) from three kinds of evidence:

* the shop's own in-scope questions, each scored by a model that never saw it (k-fold);
* *entry holdout*: in each fold a share of the entries is removed from the bank, and their
  questions become pseudo out-of-scope questions against the rest (the protocol of
  open-set intent detection);
* a built-in set of generic off-topic shopper messages (``retrieval/data/offtopic.jsonl``:
  chit-chat, other services, abuse, gibberish, ...), less any that the bank itself covers,
  and, when a shop has them, questions its agents marked as out of scope.

**Signal.** For a question ``q`` and each entry ``e``::

    s(q, e) = max cosine(q, e's phrasings and labelled questions) + blend * P(e | q)

with ``P`` a multinomial logistic regression over the entries fitted on the same vectors
(the answer head's form). The in-scope score is ``max_e s(q, e)``; :meth:`score` returns
its negative, so higher means "more likely out of scope". Measured on the HINT3 shops and
Bitext by nested entry-holdout cross-validation, this one score was as good as any of
Mahalanobis distance, kNN distance, LOF, max-softmax, energy, an out-of-scope class in the
head, a shop-vs-off-topic classifier, or logistic combinations of them.

This module is the query side: the frozen model, its scores and its storage form.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .answer_head import softmax

__all__ = ["ARRAY_NAMES", "OutOfScopeModel", "entry_scores", "vector_rows"]

META_VERSION = 1
DUPLICATE = 0.9999  # cosine above which two vectors are the same text

ARRAY_NAMES = {
    "refs": "oos_refs",
    "owners": "oos_ref_owners",
    "weights": "oos_head_weights",
    "bias": "oos_head_bias",
}


def vector_rows(x: np.ndarray | None, dim: int) -> np.ndarray:
    """``x`` as a (rows, dim) float32 matrix; None or empty gives zero rows."""
    if x is None or np.size(x) == 0:
        return np.zeros((0, dim), dtype=np.float32)
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or (dim and a.shape[1] != dim):
        raise ValueError(f"expected vectors of dimension {dim}, got shape {a.shape}")
    return a


def _json_float(x: float) -> float | str:
    return float(x) if math.isfinite(x) else ("+inf" if x > 0 else "-inf")


def _entry_max(sims: np.ndarray, owners: np.ndarray, n_entries: int) -> np.ndarray:
    """(queries x entries) best similarity per entry; -1 for an entry without vectors.
    ``owners`` must be sorted."""
    out = np.full((sims.shape[0], n_entries), -1.0, dtype=np.float64)
    if sims.shape[1] == 0 or n_entries == 0:
        return out
    present, starts = np.unique(owners, return_index=True)
    out[:, present] = np.maximum.reduceat(sims, starts, axis=1)
    return np.maximum(out, -1.0)


def entry_scores(
    queries: np.ndarray,
    refs: np.ndarray,
    owners: np.ndarray,
    n_entries: int,
    weights: np.ndarray | None,
    bias: np.ndarray | None,
    blend: float,
) -> np.ndarray:
    """(queries x entries) ``cosine to the entry's nearest reference + blend * P(entry)``."""
    s = _entry_max(queries @ refs.T, owners, n_entries)
    if weights is not None and bias is not None and blend:
        s = s + blend * softmax(queries @ weights.T + bias)
    return s


@dataclass(frozen=True)
class OutOfScopeModel:
    """Frozen out-of-scope signal: reference vectors (phrasings and labelled in-scope
    questions) with their entry, an optional logistic-regression head over the entries,
    the blend and the threshold. ``meta`` is JSON-able (settings, cross-validation figures,
    where the threshold came from)."""

    refs: np.ndarray  # (n_refs, dim) float32, rows sorted by owner
    owners: np.ndarray  # (n_refs,) int64 entry row of each reference, sorted
    n_entries: int
    weights: np.ndarray | None  # (n_entries, dim) or None: cosine alone
    bias: np.ndarray | None
    blend: float
    threshold: float  # on the in-scope score: answer when in_scope_scores >= threshold
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.refs.ndim != 2 or len(self.owners) != len(self.refs):
            raise ValueError("out-of-scope model: one owner per reference vector expected")
        if len(self.owners) and (
            np.any(np.diff(self.owners) < 0) or self.owners.max() >= self.n_entries
        ):
            raise ValueError("out-of-scope model: owners must be sorted entry rows")
        if (self.weights is None) != (self.bias is None):
            raise ValueError("out-of-scope model: weights and bias go together")
        if self.weights is not None and self.weights.shape != (self.n_entries, self.refs.shape[1]):
            raise ValueError("out-of-scope model: one weight row per entry expected")

    @property
    def dim(self) -> int:
        return int(self.refs.shape[1])

    def entry_scores(self, query_vecs: np.ndarray) -> np.ndarray:
        """(queries x entries) per-entry scores; the in-scope score is their row maximum."""
        q = vector_rows(query_vecs, self.dim)
        return entry_scores(
            q, self.refs, self.owners, self.n_entries, self.weights, self.bias, self.blend
        )

    def in_scope_scores(self, query_vecs: np.ndarray) -> np.ndarray:
        """Best entry score per question (higher = more in scope); -inf for an empty bank."""
        q = vector_rows(query_vecs, self.dim)
        if len(q) == 0:
            return np.zeros(0)
        if self.n_entries == 0 or len(self.refs) == 0:
            return np.full(len(q), -math.inf)
        best: np.ndarray = self.entry_scores(q).max(axis=1)
        return best

    def score(self, query_vecs: np.ndarray) -> np.ndarray:
        """Out-of-scope score per question (batch; higher = more likely out of scope):
        minus the in-scope score. Hand off when it is above :attr:`oos_threshold`."""
        return -self.in_scope_scores(query_vecs)

    @property
    def oos_threshold(self) -> float:
        """The threshold on :meth:`score`'s scale."""
        return -self.threshold

    def is_out_of_scope(self, query_vecs: np.ndarray) -> np.ndarray:
        """True where the question should be handed off."""
        return self.score(query_vecs) > self.oos_threshold

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The model's arrays, named for an index version's ``arrays`` (with :attr:`meta`)."""
        out: dict[str, np.ndarray] = {
            ARRAY_NAMES["refs"]: self.refs.astype(np.float32),
            ARRAY_NAMES["owners"]: self.owners.astype(np.int64),
        }
        if self.weights is not None and self.bias is not None:
            out[ARRAY_NAMES["weights"]] = self.weights.astype(np.float32)
            out[ARRAY_NAMES["bias"]] = self.bias.astype(np.float32)
        return out

    def to_meta(self) -> dict[str, Any]:
        """JSON-able description: everything :meth:`from_arrays` needs besides the arrays."""
        return {
            **self.meta,
            "version": META_VERSION,
            "n_entries": self.n_entries,
            "blend": self.blend,
            "threshold": _json_float(self.threshold),
        }

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
    ) -> OutOfScopeModel:
        """Rebuild from :meth:`to_arrays` and :meth:`to_meta`."""
        if int(meta.get("version", 0)) != META_VERSION:
            raise ValueError(f"out-of-scope model: unknown meta version {meta.get('version')}")
        refs = np.asarray(arrays[ARRAY_NAMES["refs"]], dtype=np.float32)
        weights = arrays.get(ARRAY_NAMES["weights"])
        bias = arrays.get(ARRAY_NAMES["bias"])
        rest = {
            k: v for k, v in meta.items() if k not in ("version", "n_entries", "blend", "threshold")
        }
        return cls(
            refs,
            np.asarray(arrays[ARRAY_NAMES["owners"]], dtype=np.int64),
            int(meta["n_entries"]),
            None if weights is None else np.asarray(weights, dtype=np.float32),
            None if bias is None else np.asarray(bias, dtype=np.float32),
            float(meta["blend"]),
            float(meta["threshold"]),
            json.loads(json.dumps(rest)),
        )

    def describe(self) -> str:
        """The signal and where its threshold came from, in words."""
        m = self.meta
        head = (
            f" + {self.blend:g} x P(entry) of a logistic-regression head over {self.n_entries} entries"
            if self.weights is not None and self.blend
            else " (no head: cosine alone)"
        )
        signal = (
            "in-scope score = cosine to the best entry's nearest phrasing or labelled question"
            + head
        )
        thr = f"answer when it is >= {self.threshold:.4f}, else hand off"
        src = m.get("source", "")
        cv = m.get("cv") or {}
        figures = ""
        if cv:
            parts = [f"answers {cv.get('answered_right', 0):.0%} of in-scope questions rightly"]
            for g, v in (cv.get("handed_off") or {}).items():
                parts.append(f"hands off {v:.0%} of {g}")
            figures = "; cross-validated: " + ", ".join(parts)
        return f"{signal}; {thr}. Threshold: {src}{figures}."
