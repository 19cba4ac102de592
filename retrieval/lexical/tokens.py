"""The tokeniser of the lexical index: shop text to BM25 tokens.

Tokeniser (:class:`Tokenizer`: deterministic, no model, no dependency): NFKC, case-folded;
codes and numbers stay whole and also give their letter and number parts ("UE55NU7100" ->
``ue55nu7100 ue 55 nu 7100``, "64GB" -> ``64gb 64 gb``, so a query "64 gb" still matches);
two neighbouring words glue when they form a code ("tzaa 10" -> also ``tzaa10``). Chinese runs
become character bigrams (jieba's search mode is an option, measured worse); mixed text
("能用paypal付款吗") is cut into its Chinese and Latin runs first. The tokeniser's
:attr:`Tokenizer.spec` is stored with an index, and loading refuses tokens made by another.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import unicodedata
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["CHINESE_MODES", "DEFAULT_TOKENIZER", "Tokenizer", "TokenizerConfig", "tokenize"]

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
    demo FAQ (``data/eval/faq-zh.jsonl``; jieba is a dependency of the project)."""

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
