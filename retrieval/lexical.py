"""The lexical half of hybrid ranking: a tokeniser for shop text, a BM25 index (``bm25s``)
keyed like :class:`~retrieval.index.VectorIndex`, and the fusion of dense and lexical scores.

Why: dense MiniLM vectors blur model numbers ("ue55nu7100" and "ue55nu7400" are near
neighbours) while shoppers and merchants name products by them. On PriceRunner (offer title
-> product) BM25 alone beats the dense system by far, and the two fused beat both
(``benchmarks/lexical_tokenizer.py``).

Tokeniser (:class:`Tokenizer`: deterministic, no model, no dependency): NFKC, case-folded;
codes and numbers stay whole and also give their letter and number parts ("UE55NU7100" ->
``ue55nu7100 ue 55 nu 7100``, "64GB" -> ``64gb 64 gb``, so a query "64 gb" still matches);
two neighbouring words glue when they form a code ("tzaa 10" -> also ``tzaa10``). Chinese runs
become character bigrams (jieba's search mode is an option, measured worse); mixed text
("能用paypal付款吗") is cut into its Chinese and Latin runs first. The tokeniser's
:attr:`Tokenizer.spec` is stored with an index, and loading refuses tokens made by another.

Index (:class:`LexicalIndex`): rows ``(item_id, variant, text)``, searched best-per-item like
the vector index. BM25 statistics (document frequencies, average length) are global, so no
document can be added or removed in place: an update re-builds the BM25 matrix from the
stored token ids (tokenising, the costly part, happens once per row). In an index version
folder it is a folder of its own: ``lexical.json`` (keys, tokeniser, parameters),
``tokens.npz`` (token ids per row) and ``bm25/`` (bm25s' matrix and vocabulary).

Fusion (pure functions): :func:`rrf` (reciprocal rank fusion), :func:`weighted`
(``(1 - w) * dense cosine + w * BM25 / the query's best BM25``) and :func:`choose_weight`
(``w`` by k-fold cross-validation on labelled queries).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import threading
import unicodedata
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IndexError_, IndexMismatch

__all__ = [
    "BM25Params",
    "DEFAULT_TOKENIZER",
    "LexicalIndex",
    "Tokenizer",
    "TokenizerConfig",
    "WeightChoice",
    "choose_weight",
    "hit_at_1",
    "max_normalized",
    "rrf",
    "tokenize",
    "weighted",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_FILE = "lexical.json"
TOKENS_FILE = "tokens.npz"
BM25_DIR = "bm25"

# ---- tokeniser ----------------------------------------------------------------------------

# Chinese ideographs (with extension A and compatibility forms), as in querytext.py
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# kana and hangul: character bigrams too (jieba is for Chinese only)
_KANA_HANGUL = "\u3040-\u30ff\uac00-\ud7af"
# a word character that is not CJK (letters of any other script, digits)
_WORD = rf"[^\W_{_HAN}{_KANA_HANGUL}]"
# characters that join the pieces of one code: "mq8n2b/a", "rx-v685", "3.5", "i5-8400"
_JOIN = r"[-/.+]"
_SEGMENT = re.compile(rf"([{_HAN}]+)|([{_KANA_HANGUL}]+)|({_WORD}+(?:{_JOIN}{_WORD}+)*)")
_JOIN_RE = re.compile(_JOIN)
_PARTS = re.compile(r"\d+|[^\W\d_]+")
_DIGIT = re.compile(r"\d")

# English stop words: bm25s' (Lucene's list) and the frame of a shopper's question
# (pronouns, auxiliaries, question words, "please", "want", "buy"...), which would otherwise
# match product descriptions ("do you have avocados" matching a text with "have"); only
# pure words are dropped, never a code
_STOPWORDS_EN = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their "
    "then there these they this to was will with "
    "i me my mine we us our you your yours he him his she her its them what which who whom "
    "whose when where why how do does did doing done have has had having can could would "
    "should shall may might must am been being get got any some much many please hi hello "
    "hey thanks thank want wants wanted need needs like looking look find buy sell sells "
    "selling stock got here also just so very too about from".split()
)

CHINESE_MODES = ("bigram", "unibigram", "jieba", "jieba+bigram")


@dataclass(frozen=True)
class TokenizerConfig:
    """What the tokeniser emits. The defaults are the choice made on PriceRunner TRAIN offers
    (``benchmarks/lexical_tokenizer.py``) and, for Chinese, on the Chinese questions of the
    demo FAQ (``data/eval/faq-zh.jsonl``; jieba needs ``pip install jieba``)."""

    parts: bool = True  # letter and number parts of a mixed piece: "ue55nu7100" -> ue 55 nu 7100
    whole: bool = False  # a code with joiners also as one token: "mq8n2b/a"
    joined: bool = False  # a code with joiners also without them: "mq8n2ba"
    # two words a space apart also glued, when one is a number or at most 3 characters long
    # and together they mix letters and digits: "tzaa 10" -> tzaa10, "x t2" -> xt2 (a stop
    # word never glues when stop words are dropped)
    glue: bool = True
    stopwords: bool = True  # drop English stop words (pure words only)
    min_word: int = 1  # drop pure-letter tokens shorter than this (numbers always stay)
    chinese: str = "bigram"  # one of CHINESE_MODES

    def __post_init__(self) -> None:
        if self.chinese not in CHINESE_MODES:
            raise ValueError(f"chinese must be one of {CHINESE_MODES}, got {self.chinese!r}")

    @property
    def spec(self) -> str:
        """A stable name of exactly what is emitted (stored with an index)."""
        flags = [
            name
            for name, on in (
                ("parts", self.parts),
                ("whole", self.whole),
                ("joined", self.joined),
                ("glue", self.glue),
                ("stop", self.stopwords),
            )
            if on
        ]
        return f"lex1:{'+'.join(flags) or 'words'}:min{self.min_word}:zh={self.chinese}"


_jieba_lock = threading.Lock()
_jieba_tokenizer: Any = None


def _jieba() -> Any:
    """This process's own jieba tokeniser (its dictionary loads once, ~1 s; log silenced)."""
    global _jieba_tokenizer
    if _jieba_tokenizer is None:
        with _jieba_lock:
            if _jieba_tokenizer is None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # jieba imports pkg_resources where it exists
                    import jieba
                jieba.setLogLevel(logging.WARNING)
                tok = jieba.Tokenizer()
                tok.initialize()
                _jieba_tokenizer = tok
    return _jieba_tokenizer


def _bigrams(run: str) -> list[str]:
    if len(run) == 1:
        return [run]
    return [run[i : i + 2] for i in range(len(run) - 1)]


@functools.lru_cache(maxsize=1 << 16)
def _word_tokens(
    chunk: str, parts: bool, whole: bool, joined: bool
) -> tuple[tuple[str, ...], str, str]:
    """A word chunk's tokens, its first and its last piece (cached: product texts repeat
    their words)."""
    pieces = _JOIN_RE.split(chunk)
    out = []
    if len(pieces) > 1 and _DIGIT.search(chunk):
        if whole:
            out.append(chunk)
        if joined:
            out.append("".join(pieces))
    for piece in pieces:
        out.append(piece)
        if parts and not piece.isdigit() and _DIGIT.search(piece):
            split = _PARTS.findall(piece)
            if len(split) > 1:
                out.extend(split)
    return tuple(out), pieces[0], pieces[-1]


def _glued(a: str, b: str) -> str | None:
    if not (a.isdigit() or b.isdigit() or len(a) <= 3 or len(b) <= 3):
        return None
    both = a + b
    return both if _DIGIT.search(both) and not both.isdigit() else None


class Tokenizer:
    """Text -> tokens for BM25 (see the module docstring); callable, thread-safe."""

    def __init__(self, config: TokenizerConfig | None = None):
        self.config = config or TokenizerConfig()
        self.spec = self.config.spec

    def __repr__(self) -> str:
        return f"Tokenizer({self.spec!r})"

    def __call__(self, text: str) -> list[str]:
        c = self.config
        text = text.lower() if text.isascii() else unicodedata.normalize("NFKC", text).casefold()
        out: list[str] = []
        last, last_end = "", 0  # the previous word chunk's last piece, where that chunk ended
        for m in _SEGMENT.finditer(text):
            han, other_cjk, word = m.groups()
            if word is not None:
                tokens, first, end_piece = _word_tokens(word, c.parts, c.whole, c.joined)
                out.extend(tokens)
                if (
                    c.glue
                    and last
                    and text[last_end : m.start()].isspace()
                    and not (c.stopwords and (last in _STOPWORDS_EN or first in _STOPWORDS_EN))
                ):
                    both = _glued(last, first)
                    if both:
                        out.append(both)
                last, last_end = end_piece, m.end()
                continue
            last = ""
            out.extend(self._chinese(han) if han is not None else _bigrams(other_cjk))
        if c.stopwords or c.min_word > 1:
            out = [t for t in out if self._keep(t)]
        return out

    def _keep(self, token: str) -> bool:
        c = self.config
        if not token.isalpha() or not token.isascii():
            return True  # codes, numbers and other scripts stay
        if c.stopwords and token in _STOPWORDS_EN:
            return False
        return len(token) >= c.min_word

    def _chinese(self, run: str) -> list[str]:
        mode = self.config.chinese
        if mode == "bigram":
            return _bigrams(run)
        if mode == "unibigram":
            return (list(run) + _bigrams(run)) if len(run) > 1 else [run]
        words = [w for w in _jieba().cut_for_search(run, HMM=True) if w.strip()]
        if mode == "jieba+bigram" and len(run) > 1:
            words += _bigrams(run)
        return words

    def many(self, texts: Iterable[str]) -> list[list[str]]:
        return [self(t) for t in texts]


DEFAULT_TOKENIZER = Tokenizer()


def tokenize(text: str) -> list[str]:
    """Tokens of ``text`` with the default tokeniser."""
    return DEFAULT_TOKENIZER(text)


# ---- BM25 ---------------------------------------------------------------------------------

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


def _bm25_model(
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


# ---- index --------------------------------------------------------------------------------


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
            bm25 = _bm25_model(ids, lengths, lookup, params)
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


class LexicalIndex:
    """BM25 over rows ``(item_id, variant, text)``; searches return the best row per item.

    Thread-safe: updates run one at a time, and each search reads one unchanging state."""

    def __init__(
        self,
        tokenizer: Tokenizer | None = None,
        params: BM25Params = BM25Params(),
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
        params: BM25Params = BM25Params(),
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

    def search(
        self, query: str | Sequence[str], k: int, *, exclude: Iterable[str] = ()
    ) -> list[tuple[str, float]]:
        """The ``k`` best items that share a token with the query, each scored by its best
        row's BM25 score, best first (ties: the item added first). ``query`` is text, or
        tokens made by this index's tokeniser."""
        s = self._state
        k = int(k)
        if k <= 0:
            return []
        scores = self._item_scores(s, query)
        if scores is None:
            return []
        for item in exclude:
            i = s.item_index.get(item)
            if i is not None:
                scores[i] = 0.0
        hits = np.flatnonzero(scores > 0)  # ascending: the order items were added in
        if len(hits) > k:
            kth = scores[hits[np.argpartition(-scores[hits], k - 1)[k - 1]]]
            above, tied = hits[scores[hits] > kth], hits[scores[hits] == kth]
            hits = np.concatenate([above, tied[: k - len(above)]])
        order = hits[np.lexsort((hits, -scores[hits]))]
        return [(s.items[i], float(scores[i])) for i in order.tolist()]

    def score_items(self, query: str | Sequence[str], item_ids: Iterable[str]) -> dict[str, float]:
        """The BM25 score of each of these items (0.0: no shared token; unknown ids left out),
        e.g. for the dense candidates of a hybrid ranking."""
        s = self._state
        scores = self._item_scores(s, query)
        out = {}
        for item in item_ids:
            i = s.item_index.get(item)
            if i is not None:
                out[item] = 0.0 if scores is None else float(scores[i])
        return out

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


# ---- fusion -------------------------------------------------------------------------------


def rrf(rankings: Sequence[Sequence[str]], k: int = 60) -> list[tuple[str, float]]:
    """Reciprocal rank fusion: each id scores ``sum over rankings of 1 / (k + rank)`` (rank
    from 1; an id repeated in one ranking counts at its first place). Best first; ties keep
    the order in which ids first appear (first ranking first)."""
    if k < 0:
        raise ValueError("k must be >= 0")
    scores: dict[str, float] = {}
    for ranking in rankings:
        seen = set()
        for rank, item in enumerate(ranking, start=1):
            if item in seen:
                continue
            seen.add(item)
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])


def max_normalized(scores: Mapping[str, float]) -> dict[str, float]:
    """Scores divided by the largest (the query's best BM25 score): the best is 1, an item
    sharing no token 0. Empty or all-zero scores give zeros."""
    top = max(scores.values(), default=0.0)
    if not top > 0:
        return {i: 0.0 for i in scores}
    return {i: max(0.0, s) / top for i, s in scores.items()}


def weighted(
    dense: Mapping[str, float], lexical: Mapping[str, float], weight: float
) -> list[tuple[str, float]]:
    """Weighted score fusion of one query's candidates: ``(1 - weight) * dense + weight *
    lexical / max(lexical)``, best first (ties: dense candidates first, in their order).

    - ``dense``: cosine similarities (comparable across queries already, in [-1, 1]);
    - ``lexical``: raw BM25 scores, normalised per query by the query's largest one. BM25 grows
      with the query's length and rare words, so raw scores are not comparable between
      queries; dividing by the maximum keeps 0 = "no shared token" (a min-max would push the
      weakest candidate to 0 however good it is, and depend on how many candidates came);
    - a candidate missing from ``lexical`` scores 0 there; one missing from ``dense`` gets the
      lowest dense score given (it ranked below every dense candidate; callers that can
      should pass its exact cosine instead).
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError("weight must lie in [0, 1]")
    lex = max_normalized(lexical)
    floor = min(dense.values(), default=0.0)
    ids = list(dict.fromkeys([*dense, *lexical]))
    scored = [
        (i, (1.0 - weight) * float(dense.get(i, floor)) + weight * lex.get(i, 0.0)) for i in ids
    ]
    return sorted(scored, key=lambda kv: -kv[1])


def hit_at_1(ranking: Sequence[tuple[str, float]], relevant: Collection[str]) -> float:
    return 1.0 if ranking and ranking[0][0] in relevant else 0.0


@dataclass(frozen=True)
class WeightChoice:
    """The chosen fusion weight and how it was chosen.

    ``table``: one row per candidate weight: ``weight``, ``mean`` (the metric over all
    queries) and ``folds`` (the metric on each held-out fold). ``cv_score``: the metric on
    each held-out fold with the weight chosen on the other folds, averaged (an honest estimate
    of what choosing does); ``fold_weights``: those per-fold choices."""

    weight: float
    cv_score: float
    table: list[dict] = field(default_factory=list)
    fold_weights: list[float] = field(default_factory=list)


def choose_weight(
    examples: Sequence[tuple[Mapping[str, float], Mapping[str, float], Collection[str]]],
    *,
    weights: Sequence[float] | None = None,
    folds: int = 5,
    seed: int = 0,
    metric: Callable[[Sequence[tuple[str, float]], Collection[str]], float] = hit_at_1,
) -> WeightChoice:
    """Choose the :func:`weighted` fusion weight by k-fold cross-validation.

    ``examples``: per labelled query its dense candidate scores, its lexical candidate scores
    and its relevant ids. The chosen weight is the one with the best mean metric over all
    queries (ties: the smaller weight); the folds (a seeded shuffle) give ``cv_score``.
    Pure: no index or model is touched."""
    if not examples:
        raise ValueError("no labelled queries")
    grid = [float(w) for w in (weights if weights is not None else np.linspace(0, 1, 21))]
    if not grid:
        raise ValueError("no candidate weights")
    n = len(examples)
    folds = max(2, min(int(folds), n))
    values = _metric_table(examples, grid, metric)  # weights x queries
    fold_of = np.empty(n, dtype=np.int64)
    fold_of[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
    per_fold = np.stack([values[:, fold_of == f].mean(axis=1) for f in range(folds)])
    held, fold_weights = [], []
    for f in range(folds):
        best = int(np.argmax(values[:, fold_of != f].mean(axis=1)))  # ties: the smaller weight
        fold_weights.append(grid[best])
        held.append(per_fold[f, best])
    means = values.mean(axis=1)
    table = [
        {"weight": w, "mean": float(means[i]), "folds": [float(x) for x in per_fold[:, i]]}
        for i, w in enumerate(grid)
    ]
    sizes = np.bincount(fold_of, minlength=folds)
    return WeightChoice(
        grid[int(np.argmax(means))],
        float(np.average(held, weights=sizes)),
        table,
        fold_weights,
    )


def _metric_table(
    examples: Sequence[tuple[Mapping[str, float], Mapping[str, float], Collection[str]]],
    grid: Sequence[float],
    metric: Callable[[Sequence[tuple[str, float]], Collection[str]], float],
) -> np.ndarray:
    """The metric of every example at every weight. For hit@1 the fused scores are computed
    as arrays (the top of :func:`weighted`'s ranking is its first maximum); other metrics get
    :func:`weighted`'s ranking."""
    out = np.zeros((len(grid), len(examples)))
    for q, (dense, lexical, relevant) in enumerate(examples):
        if metric is not hit_at_1:
            for j, w in enumerate(grid):
                out[j, q] = metric(weighted(dense, lexical, w), relevant)
            continue
        ids = list(dict.fromkeys([*dense, *lexical]))
        if not ids:
            continue
        lex = max_normalized(lexical)
        floor = min(dense.values(), default=0.0)
        d = np.array([float(dense.get(i, floor)) for i in ids])
        lx = np.array([lex.get(i, 0.0) for i in ids])
        hit = np.array([i in relevant for i in ids])
        for j, w in enumerate(grid):
            out[j, q] = float(hit[int(np.argmax((1.0 - w) * d + w * lx))])
    return out
