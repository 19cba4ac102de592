"""A shopper's stated preferences ("I'm vegan", "no lactose", 我不吃乳制品, "organic only"),
read from their words and kept for the conversation as product-attribute constraints.

:func:`read_preferences` is pure. A preference is ``+attr`` (only products with the catalog
attribute ``attr``) or ``-attr`` (none with it). Common dietary phrasings map to the
attribute words of the catalog format (``vegan``, ``organic``, ``lactose``, ``dairy``,
``gluten``, ``meat``, ``nuts``), and any attribute the catalog uses can be named directly:
"no X", "without X", "X-free" (drop X), "only X", "X only" (keep X). A preference whose
attribute the catalog does not use is reported as unknown, never applied silently: the
catalog cannot say which products have it.

:func:`merge` adds new preferences to the kept ones: a later preference on the same
attribute replaces the earlier one ("vegan" then "not vegan"), the list is capped at
:data:`MAX_PREFERENCES` (the oldest go first).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from ..filters import ProductFilter
from .followup import read_followup

__all__ = [
    "MAX_PREFERENCES",
    "PreferenceTurn",
    "StatedPreferences",
    "as_filter",
    "describe",
    "merge",
    "preference_turn",
    "read_preferences",
    "say",
    "violated",
]

MAX_PREFERENCES = 10

# (pattern, preference) for the common dietary phrasings, English and Chinese
_PHRASES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b(?:i'?m|i am|we'?re|we are|am)\s+(?:a\s+)?vegan\b|\bvegan\s+(?:only|please|products|food|options?)\b|\bonly\s+vegan\b|\bi eat vegan\b", re.I), "+vegan"),
    (re.compile(r"\blactose[- ]intolerant\b|\blactose[- ]free\b|\b(?:no|without|avoid)\s+lactose\b|\bcan'?t\s+(?:have|eat|drink|digest)\s+lactose\b", re.I), "-lactose"),
    (re.compile(r"\bdairy[- ]free\b|\b(?:no|without|avoid)\s+dairy\b|\bdon'?t\s+(?:eat|have|want)\s+dairy\b|\ballergic\s+to\s+(?:milk|dairy)\b", re.I), "-dairy"),
    (re.compile(r"\borganic\s+only\b|\bonly\s+organic\b|\b(?:i\s+)?(?:prefer|want|buy)\s+(?:only\s+)?organic\b", re.I), "+organic"),
    (re.compile(r"\bgluten[- ]free\b|\b(?:no|without)\s+gluten\b|\b(?:coeliac|celiac)\b", re.I), "-gluten"),
    (re.compile(r"\b(?:i'?m|i am)\s+(?:a\s+)?vegetarian\b", re.I), "-meat"),
    (re.compile(r"\bnut[- ]free\b|\ballergic\s+to\s+nuts\b|\b(?:no|without)\s+nuts\b", re.I), "-nuts"),
    (re.compile(r"我(?:是)?(?:吃)?(?:纯)?素(?:食主义者)?|我吃全素|只要纯素|素食者"), "+vegan"),
    (re.compile(r"(?:有)?乳糖不耐(?:受|症)?|不(?:含|要|能吃|能喝)乳糖|无乳糖"), "-lactose"),
    (re.compile(r"不(?:吃|要|能吃|喝)(?:乳制品|奶制品)|无(?:乳制品|奶制品)|对(?:牛奶|乳制品)过敏"), "-dairy"),
    (re.compile(r"只(?:要|买|吃)有机|有机的就行|只要有机的"), "+organic"),
    (re.compile(r"无麸质|不(?:含|要|吃)麸质"), "-gluten"),
    (re.compile(r"对坚果过敏|不(?:吃|要)坚果"), "-nuts"),
]  # fmt: skip
_EN_EXCLUDE = re.compile(
    r"\b(?:no|without|free of|avoid)\s+([a-z][a-z-]{1,39})\b|\b([a-z][a-z]{1,38})-free\b", re.I
)
_EN_ONLY = re.compile(r"\bonly\s+([a-z][a-z-]{1,39})\b|\b([a-z][a-z-]{1,39})\s+only\b", re.I)
_FORGET = re.compile(
    r"\b(?:forget|clear|reset|remove|delete|drop)\s+(?:all\s+)?(?:my|the|those|these)?\s*"
    r"(?:preferences|diet|restrictions)\b|\bforget what i (?:said|told you)\b|"
    r"(?:忘(?:记|掉)|清除|清空|删除)(?:我的)?(?:偏好|饮食要求|要求)",
    re.I,
)
_SHOW = re.compile(
    r"\bmy\s+(?:preferences|restrictions|dietary needs)\b|"
    r"\bwhat (?:preferences|restrictions) do (?:i|you) have\b|"
    r"\bwhat do you (?:know|remember) about me\b|我的(?:偏好|饮食要求)|我有(?:哪些|什么)偏好",
    re.I,
)
# the shopper speaks of themselves (anywhere in the message): "I'm ...", "we ...", 我...
_SAID_OF_ONESELF = re.compile(
    r"\b(?:i|i'?m|we|we'?re|am|my|only|please|intolerant|allergic|don'?t|can'?t)\b|我|只|不吃|不要",
    re.I,
)
_ZH_NAMES = {"organic": "有机", "vegan": "纯素", "lactose": "乳糖", "dairy": "乳制品",
             "gluten": "麸质", "meat": "肉类", "nuts": "坚果"}  # fmt: skip


@dataclass(frozen=True)
class StatedPreferences:
    """What one message says about preferences: new ones (``+attr`` / ``-attr``), ones the
    catalog cannot apply, a request to forget them or to show them, and the message's text
    without the preference words (what it asks besides)."""

    found: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()
    forget: bool = False
    show: bool = False
    rest: str = ""
    # said of the shopper ("I'm vegan", "only organic", 我不吃乳制品): kept for the
    # conversation; an adjective inside a question ("lactose-free milk?") is for that one
    lasting: bool = False

    @property
    def any(self) -> bool:
        return bool(self.found or self.unknown or self.forget or self.show)


def read_preferences(text: str, known: Collection[str]) -> StatedPreferences:
    """The preferences ``text`` states, against the catalog's attribute words ``known``."""
    text = " ".join((text or "").split())
    spans: list[tuple[int, int]] = []
    found: list[str] = []

    lasting = False

    def add(pref: str, span: tuple[int, int]) -> None:
        nonlocal lasting
        if not any(a < span[1] and span[0] < b for a, b in spans):
            spans.append(span)
            if pref not in found:
                found.append(pref)
            lasting = lasting or bool(_SAID_OF_ONESELF.search(text))

    for pattern, pref in _PHRASES:
        for m in pattern.finditer(text):
            add(pref, m.span())
    known_words = {k.casefold() for k in known}
    for m in _EN_EXCLUDE.finditer(text):
        word = (m.group(1) or m.group(2)).casefold()
        if word in known_words:
            add(f"-{word}", m.span())
    for m in _EN_ONLY.finditer(text):
        word = (m.group(1) or m.group(2)).casefold()
        if word in known_words:
            add(f"+{word}", m.span())
    forget = _FORGET.search(text)
    show = None if forget else _SHOW.search(text)
    for said in (forget, show):
        if said is not None:
            spans.append(said.span())
    usable = tuple(p for p in found if p[1:] in known_words)
    unknown = tuple(p for p in found if p[1:] not in known_words)
    rest = text
    for a, b in sorted(spans, reverse=True):
        rest = rest[:a] + " " + rest[b:]
    rest = " ".join(rest.split())
    # a message that says nothing else ("no dairy please") is a statement too
    lasting = bool(found) and (lasting or not read_followup(rest).has_subject)
    return StatedPreferences(usable, unknown, bool(forget), bool(show), rest, lasting)


def merge(kept: Iterable[str], new: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The kept preferences with ``new`` ones added (a later one on the same attribute
    replaces the earlier), capped at :data:`MAX_PREFERENCES`; and the ones replaced."""
    out = list(kept)
    replaced = []
    for pref in new:
        attr = pref[1:]
        for old in [p for p in out if p[1:] == attr]:
            out.remove(old)
            if old != pref:
                replaced.append(old)
        out.append(pref)
    return tuple(out[-MAX_PREFERENCES:]), tuple(replaced)


def as_filter(
    preferences: Iterable[str], base: ProductFilter | None = None
) -> ProductFilter | None:
    """The product filter of ``base`` narrowed by the preferences (None when both are empty)."""
    prefs = list(preferences)
    if not prefs:
        return base
    base = base or ProductFilter()
    return ProductFilter(
        base.categories,
        base.price_min,
        base.price_max,
        base.in_stock,
        base.attributes | {p[1:] for p in prefs if p.startswith("+")},
        base.exclude_attributes | {p[1:] for p in prefs if p.startswith("-")},
    )


def describe(preferences: Iterable[str], lang: str = "en") -> str:
    """The preferences in words: "organic, without lactose" / "有机、不含乳糖"."""
    parts = []
    for p in preferences:
        attr = p[1:]
        if lang == "zh":
            name = _ZH_NAMES.get(attr, attr)
            parts.append(name if p.startswith("+") else f"不含{name}")
        else:
            parts.append(attr if p.startswith("+") else f"without {attr}")
    return ("、" if lang == "zh" else ", ").join(parts)


_SAY = {
    "noted": ("Noted. My product answers will keep to this: {what}.", "好的，之后的商品都会按此筛选：{what}。"),
    "replaced": ("That replaces what you said before ({what}).", "这会取代您之前的要求（{what}）。"),
    "unknown": ("I cannot filter by this ({what}): our catalog does not record it.", "抱歉，我们的商品目录没有记录这一项（{what}），无法按此筛选。"),
    "forgot": ("I have forgotten your preferences.", "好的，我已忘记您的偏好。"),
    "none": ("You have not told me any preferences.", "您还没有告诉我任何偏好。"),
    "list": ("Your preferences: {what}. Say \"forget my preferences\" to clear them.", "您的偏好：{what}。说“忘记我的偏好”即可清除。"),
    "applied": ("Chosen for your preferences: {what}.", "已按您的偏好筛选：{what}。"),
    "dropped": ("{name} does not fit your preferences ({what}). As you asked for it, I no longer keep them.", "{name}不符合您的偏好（{what}）。既然您要这个商品，我已不再按此筛选。"),
}  # fmt: skip


def say(key: str, lang: str, prefs: Iterable[str] = (), name: str = "") -> str:
    """One of the preference messages in ``lang``, naming ``prefs`` (and a product)."""
    en, zh = _SAY[key]
    return (zh if lang == "zh" else en).format(what=describe(prefs, lang) or "-", name=name)


@dataclass(frozen=True)
class PreferenceTurn:
    """What a message's preferences do: the lines to say, the preferences kept afterwards,
    the ones for this question only, and whether the message asks something besides."""

    lines: tuple[str, ...]
    kept: tuple[str, ...]
    one_off: tuple[str, ...]
    asks_more: bool


def preference_turn(
    stated: StatedPreferences, kept: tuple[str, ...], lang: str, content_left: bool
) -> PreferenceTurn:
    """Apply what a message says about preferences to the ``kept`` ones (pure).
    ``content_left``: whether the message asks something besides (its :attr:`rest` has a
    subject of its own)."""
    if stated.forget:
        return PreferenceTurn((say("forgot", lang),), (), (), False)
    if stated.show:
        line = say("list", lang, kept) if kept else say("none", lang)
        return PreferenceTurn((line,), kept, (), False)
    lines: list[str] = []
    one_off: tuple[str, ...] = ()
    if stated.found and (stated.lasting or not content_left):
        kept, replaced = merge(kept, stated.found)
        lines.append(say("noted", lang, kept))
        if replaced:
            lines.append(say("replaced", lang, replaced))
    elif stated.found:
        one_off = stated.found
    if stated.unknown:
        lines.append(say("unknown", lang, stated.unknown))
    return PreferenceTurn(tuple(lines), kept, one_off, content_left)


def violated(preferences: Iterable[str], attributes: Iterable[str]) -> tuple[str, ...]:
    """The preferences a product with ``attributes`` does not meet."""
    has = set(attributes)
    return tuple(
        p for p in preferences if (p.startswith("+") and p[1:] not in has)
        or (p.startswith("-") and p[1:] in has)
    )  # fmt: skip
