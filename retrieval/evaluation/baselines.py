"""Baseline scorers: brute-force cosine over the same embeddings, and BM25 over the same texts.

Both score every document (an FAQ phrasing or a product vector/text) for one query; the
best document of an item gives the item's score (:func:`best_per_item`), as in the index.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ..faq import normalize_text  # re-exported: the baselines compare phrasings by it

__all__ = ["BASELINES", "BM25Scorer", "ExactScorer", "best_per_item", "normalize_text"]

BASELINES = ("exact", "bm25", "rasa")


class ExactScorer:
    """Cosine similarity of a unit query vector with every stored unit vector (numpy)."""

    def __init__(self, vectors: np.ndarray):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)

    def scores(self, query: np.ndarray) -> np.ndarray:
        return self.vectors @ np.asarray(query, dtype=np.float32)


class BM25Scorer:
    """Okapi BM25 (``bm25s``, Lucene variant) with English stop words, no stemming."""

    def __init__(self, texts: Sequence[str]):
        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every index at DEBUG
        self._bm25s = bm25s
        self.n_docs = len(texts)
        self._model = bm25s.BM25()
        self._model.index(self._tokens(texts), show_progress=False)
        self._vocab = self._model.vocab_dict

    def _tokens(self, texts: Sequence[str]) -> list[list[str]]:
        return self._bm25s.tokenize(
            list(texts), stopwords="en", return_ids=False, show_progress=False
        )

    def scores(self, text: str) -> np.ndarray:
        tokens = [t for t in self._tokens([text])[0] if t in self._vocab]
        if not tokens:
            return np.zeros(self.n_docs, dtype=np.float32)
        return np.asarray(self._model.get_scores(tokens), dtype=np.float32)


def best_per_item(
    doc_scores: np.ndarray,
    owners: np.ndarray,
    n_items: int,
    k: int,
    *,
    masked: Sequence[int] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """The k best items (indices, scores), each scored by its best document.

    ``owners[d]`` is the item of document d; ``masked`` documents are left out (e.g. a
    training question's own phrasing when calibrating). Items with no document left are
    not ranked.
    """
    s = np.asarray(doc_scores, dtype=np.float64).copy()
    if len(masked):
        s[np.asarray(masked, dtype=np.int64)] = -np.inf
    best = np.full(n_items, -np.inf)
    np.maximum.at(best, owners, s)
    order = np.argsort(-best, kind="stable")[:k]
    order = order[np.isfinite(best[order])]
    return order, best[order]
