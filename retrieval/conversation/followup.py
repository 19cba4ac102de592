"""What a follow-up message asks about the products the bot just showed, in English and Chinese.

:func:`read_followup` is pure (regular expressions and small word lists; no model, no state):
it finds

- a **reference** to something shown: a pronoun ("it", "that one", "them", 这个, 它) or a
  position ("the second one", "number 3", "the last one", 第二个, 最后一个);
- an **aspect** asked about it: ``price`` ("how much", 多少钱), ``stock`` ("in stock",
  有货吗), ``cheaper`` ("anything cheaper", 便宜一点), ``similar`` ("something similar",
  类似的), ``other_brands`` ("another brand", 其他牌子) or ``details`` ("tell me more", 介绍);
- a **language** request ("in Chinese please", 用英文);
- what is **left**: the message minus those words and minus function words. Content left
  ("how much does *delivery* cost?", "is the *kiwi* in stock?") means the message names its
  own subject, so it is a new question, not a follow-up.

Whether the message is then answered as a follow-up depends on what the conversation holds
(:mod:`retrieval.conversation.turns`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..querytext import has_han

__all__ = ["ASPECTS", "FollowUp", "read_followup"]

ASPECTS = (
    "price", "stock", "cheaper", "similar", "other_brands", "details", "together", "popular",
    "bigger", "smaller",
)  # fmt: skip

_ORDINALS_EN = {
    "first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4,
    "fifth": 5, "5th": 5, "last": -1, "bottom": -1, "top": 1,
}  # fmt: skip
_ZH_DIGITS = {
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}

_EN_POSITION = re.compile(
    r"\b(?:the\s+)?(first|second|third|fourth|fifth|last|bottom|top|1st|2nd|3rd|4th|5th)"
    r"(?:\s+(?:one|ones|item|product|option|card|result)s?\b|(?=\s*(?:[?!.,]|$))|"
    r"(?=\s+(?:cost|costs|is|in|please|available)\b))"
    r"|\b(?:number|no\.?|option|item|#)\s*([1-9])\b",
    re.I,
)
_ZH_POSITION = re.compile(
    r"第\s*([一二两三四五六七八九1-9])\s*(?:个|款|种|项|瓶|盒|件|样)?|最后(?:一个|那个|一款|一种)?"
)
_EN_PRONOUN = re.compile(
    r"\b(?:it|its|it's|that one|this one|those ones|these ones|that|this|them|they|those|"
    r"these|the same|one of them|any of them)\b",
    re.I,
)
_ZH_PRONOUN = re.compile(r"这个|那个|这款|那款|这种|那种|它们|它|这些|那些|这样的|那样的")

_ASPECT_PATTERNS: dict[str, list[re.Pattern[str]]] = {
    "popular": [
        re.compile(
            r"\b(?:popular|best[- ]?sell(?:ers?|ing)|top[- ]sell(?:ers?|ing)|trending|"
            r"most (?:bought|ordered|asked about|wanted)|what do (?:people|others) buy)\b",
            re.I,
        ),
        re.compile(r"热销|热门|最受欢迎|卖得(?:最)?好|畅销|大家都(?:在)?买|人气"),
    ],
    "together": [
        re.compile(
            r"\b(?:go(?:es)? (?:well |nicely )?with|pairs? (?:well )?with|combine[sd]? with|"
            r"to have with|also (?:asked about|bought|buy|ordered)|bought together)\b",
            re.I,
        ),
        re.compile(r"搭配|配什么|一起买|配着|和什么一起|一块买"),
    ],
    "bigger": [
        re.compile(
            r"\b(?:bigger|larger|big)(?:\s+(?:ones?|packs?|sizes?|bottles?|packages?|cartons?|"
            r"box(?:es)?))?\b(?<!\bbig)|\bfamily[- ]size\b",
            re.I,
        ),
        re.compile(r"大一点|大一些|更大|大包装|大瓶|大号|大份|大盒|大容量"),
    ],
    "smaller": [
        re.compile(
            r"\b(?:smaller|small)(?:\s+(?:ones?|packs?|sizes?|bottles?|packages?|cartons?|"
            r"box(?:es)?))?\b(?<!\bsmall)|\bmini\b",
            re.I,
        ),
        re.compile(r"小一点|小一些|更小|小包装|小瓶|小号|小份|小盒|小容量"),
    ],
    "cheaper": [
        re.compile(
            r"\b(?:cheaper|cheapest|less expensive|lower price[sd]?|more affordable|"
            r"budget option)\b",
            re.I,
        ),
        re.compile(r"便宜|实惠|低价|价格低|更划算|省钱"),
    ],
    "other_brands": [
        re.compile(r"\b(?:other|another|different|else|any other)\s+brands?\b|\bbrands?\b", re.I),
        re.compile(r"(?:其他|别的|其它|另外的|换个|换一个|不同的?)(?:牌子|品牌)|牌子|品牌"),
    ],
    "similar": [
        re.compile(
            r"\b(?:similar|alternatives?|(?:anything|something|more|others?|any more)\s+like\s+"
            r"(?:it|that|this|them|those|these)|like that|like this|comparable)\b",
            re.I,
        ),
        re.compile(r"类似|相似|差不多的|同类|一样的|像这样|替代"),
    ],
    "price": [
        re.compile(
            r"\b(?:how much|price[sd]?|cost|costs|costing|expensive|pricey)\b|what does .* cost",
            re.I,
        ),
        re.compile(r"多少钱|价格|价钱|几块|几元|什么价|贵不贵|贵吗|多贵|售价"),
    ],
    "stock": [
        re.compile(
            r"\b(?:in[- ]stock|out of stock|sold out|available|availability|any left|"
            r"have (?:it|them|any)(?: left| in)?|left in stock|still have|do you stock)\b",
            re.I,
        ),
        re.compile(r"有货|现货|有库存|库存|还有吗|还有没有|卖完|缺货|有没有货|能买到|可以买"),
    ],
    "details": [
        re.compile(
            r"\b(?:tell me (?:more )?about|more (?:about|info|information|details)|details?|"
            r"describe|what is (?:it|that|this)|what's (?:it|that|this)|what kind)\b",
            re.I,
        ),
        re.compile(r"介绍|详细|详情|具体|说说|讲讲|是什么"),
    ],
}
_LANGUAGE = [
    ("zh", re.compile(r"\b(?:in|into|to)\s+chinese\b|\bchinese,? please\b|\bmandarin\b", re.I)),
    ("zh", re.compile(r"(?:用|说|讲|换成|翻译成)\s*(?:中文|汉语|普通话)|中文(?:回答|回复)?吧?")),
    ("en", re.compile(r"\b(?:in|into|to)\s+english\b|\benglish,? please\b", re.I)),
    ("en", re.compile(r"(?:用|说|讲|换成|翻译成)\s*(?:英文|英语)|英文(?:回答|回复)?吧?")),
]

# Function words and chat filler: what is left after removing them is the message's own
# subject. Generic English and Chinese words, not any shop's vocabulary.
_EN_FUNCTION = frozenset(
    """a an the is are was were be been am do does did you your yours have has had any anything
    something some what what's whats which how about please pls and or but ok okay so then
    one ones much many can could would will should i i'm im me my we us our show see get got
    give there of for in on at to with also too more else other others again just really
    still now here thanks thank yes no not don't dont tell let know want like need looking
    look it its it's that this them they those these same well hmm oh hey hi nice great
    cool sure number option item product products thing things one's left kind sort type
    say said answer reply language from by into than as if when where who why because
    right now today currently moment actually maybe perhaps exactly yet already ever very
    quite sorry excuse wondering wonder curious interested i'd id rather prefer instead
    would""".split()
)
_ZH_FUNCTION = re.compile(
    r"[吗呢吧啊呀哦嘛了的地得么呗]|请问|请|你们|你|我们|我|他们|有没有|有|没有|没|还|也|都|就|"
    r"要|想|能|可以|可不可以|给|看看|看|一下|一点|一些|点|再|又|和|跟|呢|怎么样|如何|"
    r"那|这|些|个|款|种|样|是|不是|不|么|什么|哪|多|少|好|谢谢|好的|嗯|哦|其他|别的|其它|更|最|说|讲|回答|回复"
)
_PUNCT = re.compile(r"[\s\W_]+", re.UNICODE)


@dataclass(frozen=True)
class FollowUp:
    """What a message asks about the conversation so far (see the module)."""

    aspect: str | None = None  # one of ASPECTS, or None
    position: int | None = None  # 1-based card position, -1 for the last; None: none named
    pronoun: bool = False  # "it", "that one", "them", 这个 ...
    plural: bool = False  # "them", "they", "those", 它们, 这些: all the shown products
    language: str | None = None  # "zh" / "en" when the shopper asks for that language
    rest: str = ""  # the message's own content words, if any

    @property
    def refers(self) -> bool:
        """Whether the message points at something shown before."""
        return self.pronoun or self.position is not None

    @property
    def has_subject(self) -> bool:
        """Whether the message names its own subject (then it is a new question)."""
        return bool(self.rest)


def _position(text: str) -> tuple[int | None, list[tuple[int, int]]]:
    m = _EN_POSITION.search(text)
    if m:
        word = (m.group(1) or "").lower()
        return (_ORDINALS_EN[word] if word else int(m.group(2))), [m.span()]
    m = _ZH_POSITION.search(text)
    if m:
        if m.group(0).startswith("最后"):
            return -1, [m.span()]
        g = m.group(1)
        return (int(g) if g.isdigit() else _ZH_DIGITS[g]), [m.span()]
    return None, []


def _rest(text: str, spans: list[tuple[int, int]]) -> str:
    """The message without the matched spans and function words: its own subject."""
    chars = list(text)
    for a, b in spans:
        for i in range(a, b):
            chars[i] = " "
    left = "".join(chars)
    words = []
    for word in _PUNCT.split(left.lower()):
        if not word:
            continue
        if has_han(word):
            core = _ZH_FUNCTION.sub("", word)
            core = "".join(c for c in core if has_han(c) or c.isalnum())
            if core:
                words.append(core)
        elif word not in _EN_FUNCTION and not word.isdigit() and len(word) > 1:
            words.append(word)
    return " ".join(words)


def read_followup(text: str) -> FollowUp:
    """What ``text`` refers to and asks (see the module); an empty :class:`FollowUp` when
    the message has none of the follow-up signs."""
    text = " ".join((text or "").split())
    spans: list[tuple[int, int]] = []
    position, pos_spans = _position(text)
    spans += pos_spans
    aspect = None
    for name, patterns in _ASPECT_PATTERNS.items():  # the order decides: "cheaper brand" is cheaper
        for pattern in patterns:
            found = list(pattern.finditer(text))
            if found:
                aspect = aspect or name
                spans += [m.span() for m in found]
    language = None
    for lang, pattern in _LANGUAGE:
        found = list(pattern.finditer(text))
        if found:
            language = language or lang
            spans += [m.span() for m in found]
    pronouns = list(_EN_PRONOUN.finditer(text)) + list(_ZH_PRONOUN.finditer(text))
    spans += [m.span() for m in pronouns]
    plural = any(
        m.group(0).lower() in ("them", "they", "those", "these", "它们", "这些", "那些")
        for m in pronouns
    )
    return FollowUp(
        aspect=aspect,
        position=position,
        pronoun=bool(pronouns),
        plural=plural,
        language=language,
        rest=_rest(text, spans),
    )
