"""The BM25 model of the lexical index: bm25s' scoring, with its sparse matrix assembled
from token ids in one pass (bm25s' own indexing loops over documents in Python)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BM25_METHODS", "DEFAULT_PARAMS", "BM25Params", "bm25_model"]

BM25_METHODS = ("lucene", "robertson", "atire")


@dataclass(frozen=True)
class BM25Params:
    """bm25s' parameters. k1 and b: a grid on PriceRunner TRAIN (k1 0.6-2.0, b 0.5-1.0) was
    flat within 0.003 hit@1 around these, the usual defaults."""

    k1: float = 1.2
    b: float = 0.75
    method: str = "lucene"  # bm25s' scoring variant (those without a non-occurrence term)

    def __post_init__(self) -> None:
        if self.method not in BM25_METHODS:
            raise ValueError(f"method must be one of {BM25_METHODS}, got {self.method!r}")


DEFAULT_PARAMS = BM25Params()


def bm25_model(
    ids: np.ndarray, lengths: np.ndarray, lookup: dict[str, int], params: BM25Params
) -> Any:
    """A ``bm25s.BM25`` over these rows: ``lengths[r]`` token ids each, one after another in
    ``ids``; ``lookup`` maps each token to its id (ids ``0..len(lookup)-1``; a token no row
    holds any more has an empty column).

    The BM25 terms are bm25s' own scoring functions (the idf and term-frequency components of
    ``params.method``); only its sparse matrix is assembled here, with numpy over all rows at
    once: ``BM25.index`` loops over documents in Python (an update of 2 products took 17 s
    at 100k products on the shared machine, against ~1 s this way).
    ``tests/test_lexical.py`` checks the scores against ``BM25.index`` on the same tokens."""
    import bm25s
    from bm25s import scoring

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every index at DEBUG
    model = bm25s.BM25(k1=params.k1, b=params.b, method=params.method)
    n_docs, n_vocab = len(lengths), len(lookup)
    dtype = np.dtype(model.dtype)
    doc = np.repeat(np.arange(n_docs, dtype=np.int64), lengths)
    pairs, tf = np.unique(doc * n_vocab + ids.astype(np.int64), return_counts=True)
    pair_doc, pair_token = np.divmod(pairs, n_vocab)
    df = np.bincount(pair_token, minlength=n_vocab)
    # idf depends on (df, N) alone: bm25s' function once per distinct df (0 for an empty column)
    idf_of = scoring._select_idf_scorer(model.idf_method)
    distinct, inverse = np.unique(df, return_inverse=True)
    idf = np.array(
        [idf_of(int(d), N=n_docs) if d else 0.0 for d in distinct.tolist()], dtype=dtype
    )[inverse]
    tfc = scoring._select_tfc_scorer(model.method)(
        tf_array=tf.astype(dtype),
        l_d=lengths[pair_doc],
        l_avg=lengths.mean() if n_docs else 1.0,
        k1=model.k1,
        b=model.b,
        delta=model.delta,
    )
    data = (idf[pair_token] * tfc).astype(dtype)
    order = np.lexsort((pair_doc, pair_token))  # by token (column), then row
    indptr = np.zeros(n_vocab + 1, dtype=np.int64)
    np.cumsum(df, out=indptr[1:])
    model.scores = {
        "data": data[order],
        "indices": pair_doc[order].astype(np.dtype(model.int_dtype)),
        "indptr": indptr,
        "num_docs": n_docs,
    }
    model.vocab_dict = lookup
    model.unique_token_ids_set = set(lookup.values())
    model.nonoccurrence_array = None
    return model
