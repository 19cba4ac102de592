"""The lexical index: BM25 (``bm25s``) over shop text, keyed like
:class:`~retrieval.index.VectorIndex`, saved in an index version beside the HNSW graph.

Index (:class:`LexicalIndex`): rows ``(item_id, variant, text)``, searched best-per-item like
the vector index. BM25 statistics (document frequencies, average length) are global, so no
document can be added or removed in place: an update re-builds the BM25 matrix from the
stored token ids (tokenising, the costly part, happens once per row). In an index version
folder it is a folder of its own: ``lexical.json`` (keys, tokeniser, parameters),
``tokens.npz`` (token ids per row) and ``bm25/`` (bm25s' matrix and vocabulary).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IndexError_, IndexMismatch
from .bm25 import DEFAULT_PARAMS, BM25Params, bm25_model
from .tokens import DEFAULT_TOKENIZER, Tokenizer

__all__ = ["LexicalIndex", "QueryScores"]

FORMAT_VERSION = 1
META_FILE = "lexical.json"
TOKENS_FILE = "tokens.npz"
BM25_DIR = "bm25"


@dataclass(frozen=True)
class _State:
    """One consistent view of the index, never changed once made: an update swaps in a new
    one, so a search running meanwhile sees the old or the new index, never a mix."""

    keys: list[tuple[str, str]]  # row -> (item_id, variant)
    ids: np.ndarray  # int32: the rows' token ids, one row after another
    lengths: np.ndarray  # int64: tokens per row
    vocab: list[str]  # token id -> token (a token no row holds any more stays until compacted)
    lookup: dict[str, int]  # token -> token id
    bm25: Any  # bm25s.BM25; None while no row holds a token
    items: list[str]  # item index -> item id, in the order of their first rows
    item_index: dict[str, int]
    owner: np.ndarray  # int64: row -> item index
    one_row_per_item: bool


_EMPTY = _State(
    [],
    np.zeros(0, np.int32),
    np.zeros(0, np.int64),
    [],
    {},
    None,
    [],
    {},
    np.zeros(0, np.int64),
    True,
)


def _state(
    keys: list[tuple[str, str]],
    ids: np.ndarray,
    lengths: np.ndarray,
    vocab: list[str],
    lookup: dict[str, int],
    params: BM25Params,
    bm25: Any = None,
) -> _State:
    """A state over these rows: the vocabulary compacted when a quarter of it is dead, and the
    BM25 matrix built (or ``bm25`` adopted, as loaded)."""
    ids = np.asarray(ids, dtype=np.int32)
    lengths = np.asarray(lengths, dtype=np.int64)
    if bm25 is None and vocab:
        live = np.bincount(ids, minlength=len(vocab)) > 0
        dead = len(vocab) - int(live.sum())
        if dead and dead * 4 >= len(vocab):
            new_id = np.cumsum(live) - 1
            ids = new_id[ids].astype(np.int32)
            vocab = [vocab[i] for i in np.flatnonzero(live).tolist()]
            lookup = {t: i for i, t in enumerate(vocab)}
        if vocab:
            bm25 = bm25_model(ids, lengths, lookup, params)
    item_index: dict[str, int] = {}
    owner = np.fromiter(
        (item_index.setdefault(item, len(item_index)) for item, _ in keys), np.int64, len(keys)
    )
    return _State(
        keys,
        ids,
        lengths,
        vocab,
        lookup,
        bm25,
        list(item_index),
        item_index,
        owner,
        len(item_index) == len(keys),
    )


@dataclass(frozen=True)
class QueryScores:
    """One query's BM25 score of every item of one index state (``values[i]``: item
    ``items[i]``'s best row); read-only."""

    items: list[str]
    item_index: dict[str, int]
    values: np.ndarray

    def top(
        self, k: int, *, exclude: Iterable[str] = (), allowed: Collection[str] | None = None
    ) -> list[tuple[str, float]]:
        """The ``k`` best items that share a token with the query, best first (ties: the item
        added first); with ``allowed``, only those items."""
        k = int(k)
        if k <= 0:
            return []
        scores = self.values.copy()
        for item in exclude:
            i = self.item_index.get(item)
            if i is not None:
                scores[i] = 0.0
        if allowed is not None:
            keep = np.fromiter((item in allowed for item in self.items), bool, len(self.items))
            scores[~keep] = 0.0
        hits = np.flatnonzero(scores > 0)  # ascending: the order items were added in
        if len(hits) > k:
            kth = scores[hits[np.argpartition(-scores[hits], k - 1)[k - 1]]]
            above, tied = hits[scores[hits] > kth], hits[scores[hits] == kth]
            hits = np.concatenate([above, tied[: k - len(above)]])
        order = hits[np.lexsort((hits, -scores[hits]))]
        return [(self.items[i], float(scores[i])) for i in order.tolist()]

    def of(self, item_ids: Iterable[str]) -> dict[str, float]:
        """The score of each of these items (0.0: no shared token; unknown ids left out)."""
        out = {}
        for item in item_ids:
            i = self.item_index.get(item)
            if i is not None:
                out[item] = float(self.values[i])
        return out


class LexicalIndex:
    """BM25 over rows ``(item_id, variant, text)``; searches return the best row per item.

    Thread-safe: updates run one at a time, and each search reads one unchanging state."""

    def __init__(
        self,
        tokenizer: Tokenizer | None = None,
        params: BM25Params = DEFAULT_PARAMS,
        *,
        meta: dict | None = None,
    ):
        self.tokenizer = tokenizer or DEFAULT_TOKENIZER
        self.params = params
        self.meta: dict[str, Any] = dict(meta or {})
        self._state = _EMPTY
        self._write = threading.Lock()

    @classmethod
    def build(
        cls,
        rows: Iterable[tuple[str, str, str]],
        tokenizer: Tokenizer | None = None,
        params: BM25Params = DEFAULT_PARAMS,
        *,
        meta: dict | None = None,
    ) -> LexicalIndex:
        """An index of these rows ``(item_id, variant, text)``."""
        index = cls(tokenizer, params, meta=meta)
        index.update(rows)
        return index

    def copy(self) -> LexicalIndex:
        """An independent index with the same rows (cheap: states are never changed)."""
        twin = LexicalIndex(self.tokenizer, self.params, meta=self.meta)
        twin._state = self._state
        return twin

    # ---- size ---------------------------------------------------------------------------
    def __len__(self) -> int:
        """Rows."""
        return len(self._state.keys)

    @property
    def item_count(self) -> int:
        return len(self._state.items)

    def item_ids(self) -> list[str]:
        return list(self._state.items)

    def keys(self) -> list[tuple[str, str]]:
        return list(self._state.keys)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._state.item_index

    def row_tokens(self, item_id: str, variant: str) -> list[str]:
        """The stored tokens of one row (KeyError when there is no such row)."""
        s = self._state
        try:
            row = s.keys.index((item_id, variant))
        except ValueError:
            raise KeyError((item_id, variant)) from None
        start = int(s.lengths[:row].sum())
        return [s.vocab[t] for t in s.ids[start : start + int(s.lengths[row])].tolist()]

    # ---- writes -------------------------------------------------------------------------
    def add(self, rows: Iterable[tuple[str, str, str]]) -> None:
        """Add rows, replacing any row with the same (item_id, variant)."""
        self.update(rows)

    def remove(self, item_ids: Iterable[str]) -> int:
        """Remove every row of these items; returns the rows removed."""
        before = len(self)
        self.update((), remove=item_ids)
        return before - len(self)

    def update(
        self, rows: Iterable[tuple[str, str, str]] = (), *, remove: Iterable[str] = ()
    ) -> bool:
        """Remove every row of the items in ``remove``, then add ``rows`` (replacing a row with
        the same key): one re-build of the BM25 matrix from the stored token ids; only the new
        rows are tokenised. False (and nothing done) when nothing changes."""
        rows = [(str(i), str(v), t) for i, v, t in rows]
        keys_new = [(i, v) for i, v, _ in rows]
        if len(set(keys_new)) != len(keys_new):
            raise ValueError("duplicate (item_id, variant) keys in one update")
        with self._write:
            old = self._state
            index = old.item_index
            drop = np.zeros(len(old.keys), dtype=bool)
            gone = {index[i] for i in set(remove) if i in index}
            if gone:
                drop |= np.isin(old.owner, np.fromiter(gone, np.int64, len(gone)))
            touched = {index[i] for i, _ in keys_new if i in index} - gone
            if touched:
                replaced = set(keys_new)
                mine = np.flatnonzero(np.isin(old.owner, np.fromiter(touched, np.int64)))
                for r in mine.tolist():
                    drop[r] = old.keys[r] in replaced
            if not rows and not drop.any():
                return False
            vocab, lookup = old.vocab, old.lookup
            new_ids: list[int] = []
            lengths_new = []
            for tokens in self.tokenizer.many(t for _, _, t in rows):
                for t in tokens:
                    tid = lookup.get(t)
                    if tid is None:
                        if lookup is old.lookup:  # copy on first write: old states stay intact
                            vocab, lookup = list(vocab), dict(lookup)
                        tid = lookup[t] = len(vocab)
                        vocab.append(t)
                    new_ids.append(tid)
                lengths_new.append(len(tokens))
            if drop.any():
                keep = ~drop
                ids = old.ids[np.repeat(keep, old.lengths)]
                lengths = old.lengths[keep]
                keys = [k for k, kept in zip(old.keys, keep.tolist(), strict=True) if kept]
            else:
                ids, lengths, keys = old.ids, old.lengths, list(old.keys)
            self._state = _state(
                keys + keys_new,
                np.concatenate([ids, np.asarray(new_ids, np.int32)]),
                np.concatenate([lengths, np.asarray(lengths_new, np.int64)]),
                vocab,
                lookup,
                self.params,
            )
        return True

    # ---- reads --------------------------------------------------------------------------
    def _item_scores(self, s: _State, query: str | Sequence[str]) -> np.ndarray | None:
        """Every item's best row score (a new array), or None when no query token is known."""
        if s.bm25 is None:
            return None
        tokens = self.tokenizer(query) if isinstance(query, str) else query
        ids = [s.lookup[t] for t in tokens if t in s.lookup]
        if not ids:
            return None
        rows = np.asarray(s.bm25.get_scores_from_ids(ids), dtype=np.float32)
        if s.one_row_per_item:
            return rows
        best = np.zeros(len(s.items), dtype=np.float32)
        np.maximum.at(best, s.owner, rows)
        return best

    def scores(self, query: str | Sequence[str]) -> QueryScores | None:
        """Every item's BM25 score for this query (its best row's), computed once: rank them
        with :meth:`QueryScores.top` and read any item's with :meth:`QueryScores.of` (a
        hybrid ranking needs both, for one tokenising and one scoring pass). None when no
        query token is known. ``query`` is text, or tokens made by this index's tokeniser."""
        s = self._state
        values = self._item_scores(s, query)
        return None if values is None else QueryScores(s.items, s.item_index, values)

    def search(
        self,
        query: str | Sequence[str],
        k: int,
        *,
        exclude: Iterable[str] = (),
        allowed: Collection[str] | None = None,
    ) -> list[tuple[str, float]]:
        """The ``k`` best items that share a token with the query (see
        :meth:`QueryScores.top`)."""
        scores = self.scores(query)
        return [] if scores is None else scores.top(k, exclude=exclude, allowed=allowed)

    def score_items(self, query: str | Sequence[str], item_ids: Iterable[str]) -> dict[str, float]:
        """The BM25 score of each of these items (0.0: no shared token; unknown ids left out),
        e.g. for the dense candidates of a hybrid ranking."""
        scores = self.scores(query)
        if scores is None:
            s = self._state
            return {item: 0.0 for item in item_ids if item in s.item_index}
        return scores.of(item_ids)

    # ---- persistence --------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write the index into ``folder`` (created; files flushed to disk). The caller
        publishes it atomically with the version folder that holds it."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        s = self._state
        written = []
        if s.bm25 is not None:
            s.bm25.save(folder / BM25_DIR, show_progress=False)
            written += sorted(p for p in (folder / BM25_DIR).iterdir() if p.is_file())
        tmp = folder / (TOKENS_FILE + ".tmp")
        with tmp.open("wb") as f:
            np.savez(f, ids=s.ids, lengths=s.lengths)
        os.replace(tmp, folder / TOKENS_FILE)
        meta = {
            "format": FORMAT_VERSION,
            "tokenizer": self.tokenizer.spec,
            "k1": self.params.k1,
            "b": self.params.b,
            "method": self.params.method,
            "bm25": s.bm25 is not None,
            "items": [k[0] for k in s.keys],
            "variants": [k[1] for k in s.keys],
            **self.meta,
        }
        tmp = folder / (META_FILE + ".tmp")
        # json.dumps runs the C encoder (json.dump would iterate in Python)
        tmp.write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, folder / META_FILE)
        for path in [*written, folder / TOKENS_FILE, folder / META_FILE]:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    @classmethod
    def load(
        cls,
        folder: Path,
        *,
        tokenizer: Tokenizer | None = None,
        expect: dict[str, Any] | None = None,
    ) -> LexicalIndex:
        """Load a folder written by :meth:`save`. ``tokenizer`` (default: the default one) must
        be the one the index was built with; ``expect`` maps metadata keys to required values."""
        folder = Path(folder)
        tokenizer = tokenizer or DEFAULT_TOKENIZER
        try:
            meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise IndexError_(f"no lexical index at {folder}") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise IndexError_(
                f"lexical index metadata {folder / META_FILE} is unreadable: {exc}"
            ) from None
        if meta.get("format") != FORMAT_VERSION:
            raise IndexError_(
                f"lexical index at {folder} has format {meta.get('format')}; "
                f"this version reads {FORMAT_VERSION}"
            )
        for key, want in {"tokenizer": tokenizer.spec, **(expect or {})}.items():
            if meta.get(key) != want:
                raise IndexMismatch(
                    f"lexical index at {folder} was built with {key}={meta.get(key)!r} but "
                    f"{want!r} is configured; rebuild it"
                )
        own = {"format", "tokenizer", "k1", "b", "method", "bm25", "items", "variants"}
        try:
            params = BM25Params(k1=meta["k1"], b=meta["b"], method=meta["method"])
            keys = list(zip(meta["items"], meta["variants"], strict=True))
            with np.load(folder / TOKENS_FILE, allow_pickle=False) as saved:
                ids, lengths = saved["ids"], saved["lengths"]
            bm25, vocab, lookup = None, [], {}
            if meta["bm25"]:
                import bm25s

                logging.getLogger("bm25s").setLevel(logging.WARNING)
                bm25 = bm25s.BM25.load(folder / BM25_DIR, show_progress=False)
                lookup = bm25.vocab_dict
                vocab = [""] * len(lookup)
                for token, i in lookup.items():
                    vocab[i] = token
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise IndexError_(f"lexical index at {folder} is unreadable: {exc}") from None
        if (
            len(lengths) != len(keys)
            or int(lengths.sum()) != len(ids)
            or (bm25 is None) != (len(ids) == 0)
            or (bm25 is not None and bm25.scores["num_docs"] != len(keys))
            or (len(ids) and int(ids.max()) >= len(vocab))
        ):
            raise IndexError_(f"lexical index at {folder} is inconsistent; rebuild it")
        index = cls(tokenizer, params, meta={k: v for k, v in meta.items() if k not in own})
        index._state = _state(keys, ids, lengths, vocab, lookup, params, bm25)
        return index
