"""``retrieval eval dialogues``: written multi-turn dialogues replayed against the running
stack, through the shop page's chat relay (``POST /shop/api/chat``, with the page's
conversation cookie), exactly as a shopper's browser talks to the bot.

The file holds one dialogue per line (docs/conversation.md)::

    {"id": "en-oat-price", "lang": "en", "turns": [
      {"user": "do you have oat milk?", "expect": {"products": ["oatly-oat-milk"]}},
      {"user": "how much is it?", "expect": {"products": ["oatly-oat-milk"], "says": ["2.44"]}}]}

``expect`` per turn (all given keys must hold):

- ``products``: ids, one of which must be the **first** card shown; ``"#N"`` stands for the
  N-th card of the latest earlier turn that showed cards;
- ``faq``: the FAQ entry answered (compared by answer group, so an English id also matches
  its Chinese version);
- ``clarify`` / ``handoff``: true when the bot must ask back / hand the question to a person;
- ``says``: substrings the turn's text must contain (case ignored);
- ``lang``: ``zh`` or ``en``, the language of the reply (Chinese characters or not).

A dialogue is right when every turn is. Each dialogue runs in a new conversation (a fresh
cookie). Turn latency is the wall time of the HTTP call: relay, Rasa, actions, retrieval.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, RetrievalError
from ..querytext import has_han

__all__ = ["Dialogue", "TurnOutcome", "check_turn", "load_dialogues", "replay", "summarise"]

EXPECT_KEYS = ("products", "faq", "clarify", "handoff", "says", "lang")
MAX_DIALOGUES = 10_000
MAX_TURNS = 20


@dataclass(frozen=True)
class Dialogue:
    id: str
    lang: str
    turns: tuple[tuple[str, dict[str, Any]], ...]  # (shopper message, expectation)
    note: str = ""


@dataclass
class TurnOutcome:
    """What the bot did on one turn, and whether that was what the file expects."""

    dialogue: str
    turn: int
    user: str
    expect: dict[str, Any]
    products: list[str] = field(default_factory=list)
    faq: str | None = None
    clarify: bool = False
    handoff: bool = False
    text: str = ""
    ms: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def right(self) -> bool:
        return not self.problems


def load_dialogues(path: Path) -> list[Dialogue]:
    """Read and check a dialogue file; every mistake names the line."""
    out: list[Dialogue] = []
    seen: set[str] = set()
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the dialogues: {exc}") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            rec = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise InputError(f"{where}: expected an object with id and turns")
        did = rec.get("id")
        if not isinstance(did, str) or not did.strip() or did in seen:
            raise InputError(f"{where}: 'id' must be a unique, non-empty text")
        seen.add(did)
        turns = rec.get("turns")
        if not isinstance(turns, list) or not 1 <= len(turns) <= MAX_TURNS:
            raise InputError(f"{where}: 'turns' must be a list of 1 to {MAX_TURNS} turns")
        parsed = []
        for i, turn in enumerate(turns, start=1):
            if not isinstance(turn, dict) or not isinstance(turn.get("user"), str):
                raise InputError(f"{where}: turn {i} needs 'user' (the shopper's message)")
            expect = turn.get("expect")
            if not isinstance(expect, dict) or not expect:
                raise InputError(f"{where}: turn {i} needs 'expect' with at least one key")
            unknown = sorted(set(expect) - set(EXPECT_KEYS))
            if unknown:
                raise InputError(
                    f"{where}: turn {i}: unknown expect key {unknown[0]!r}; "
                    f"the keys are {', '.join(EXPECT_KEYS)}"
                )
            for key in ("products", "says"):
                value = expect.get(key)
                if value is not None and (
                    not isinstance(value, list) or not all(isinstance(v, str) for v in value)
                ):
                    raise InputError(f"{where}: turn {i}: {key} must be a list of texts")
            parsed.append((turn["user"], expect))
        out.append(
            Dialogue(did, str(rec.get("lang") or ""), tuple(parsed), str(rec.get("note") or ""))
        )
        if len(out) > MAX_DIALOGUES:
            raise InputError(f"{path}: more than {MAX_DIALOGUES} dialogues")
    if not out:
        raise InputError(f"{path}: no dialogues")
    return out


def read_reply(messages: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The bot's messages of one turn, as the evaluation sees them."""
    products: list[str] = []
    faq = None
    clarify = handoff = False
    texts = []
    for m in messages:
        if isinstance(m.get("text"), str):
            texts.append(m["text"])
        custom = m.get("custom")
        if not isinstance(custom, dict):
            continue
        if custom.get("handoff"):
            handoff = True
        kind = custom.get("type")
        if kind == "products" and not products:
            products = [
                str(c.get("id")) for c in custom.get("products") or () if isinstance(c, dict)
            ]
        elif kind == "answer" and faq is None:
            faq = custom.get("faq_id")
        elif kind == "clarify":
            clarify = True
    return {
        "products": products,
        "faq": faq,
        "clarify": clarify,
        "handoff": handoff,
        "text": "\n".join(texts),
    }


def check_turn(
    expect: dict[str, Any],
    got: dict[str, Any],
    previous_cards: list[str],
    group: Callable[[str], str],
) -> list[str]:
    """What is wrong with one turn (empty: right). ``previous_cards``: the cards of the
    latest earlier turn that showed some (for ``#N``); ``group(faq_id)`` the answer group."""
    problems = []
    if "products" in expect:
        wanted = set()
        for ref in expect["products"]:
            if ref.startswith("#") and ref[1:].isdigit():
                i = int(ref[1:]) - 1
                if 0 <= i < len(previous_cards):
                    wanted.add(previous_cards[i])
            else:
                wanted.add(ref)
        first = got["products"][0] if got["products"] else None
        if first is None or first not in wanted:
            problems.append(f"first card {first} not in {sorted(wanted)}")
    if "faq" in expect:
        if got["faq"] is None or group(got["faq"]) != group(str(expect["faq"])):
            problems.append(f"answered {got['faq']}, expected {expect['faq']}")
    if "clarify" in expect and bool(expect["clarify"]) != got["clarify"]:
        problems.append("expected a clarifying question" if expect["clarify"] else "asked back")
    if "handoff" in expect and bool(expect["handoff"]) != got["handoff"]:
        problems.append("expected a hand-off" if expect["handoff"] else "handed off")
    text = got["text"].casefold()
    for part in expect.get("says") or ():
        if part.casefold() not in text:
            problems.append(f"reply does not say {part!r}")
    if "lang" in expect:
        lang = "zh" if has_han(got["text"]) else "en"
        if lang != expect["lang"]:
            problems.append(f"reply in {lang}, expected {expect['lang']}")
    return problems


def replay(
    dialogues: list[Dialogue],
    url: str,
    group: Callable[[str], str],
    *,
    timeout_s: float = 30.0,
    progress: bool = True,
) -> list[TurnOutcome]:
    """Play every dialogue against the shop page at ``url``, one new conversation each."""
    import httpx
    from tqdm import tqdm

    chat = url.rstrip("/") + "/shop/api/chat"
    outcomes = []
    for d in tqdm(dialogues, desc="dialogues", unit="dialogue", disable=not progress):
        with httpx.Client(timeout=timeout_s) as client:  # a new cookie: a new conversation
            cards: list[str] = []
            for n, (user, expect) in enumerate(d.turns, start=1):
                t0 = time.perf_counter()
                try:
                    r = client.post(chat, json={"message": user})
                except httpx.HTTPError as exc:
                    raise RetrievalError(f"cannot reach the shop page at {chat}: {exc}") from None
                ms = (time.perf_counter() - t0) * 1e3
                if r.status_code == 503:  # no bot to judge: stop rather than score outages
                    raise RetrievalError(
                        f"the bot behind {chat} is not available ({r.text[:200]}); is Rasa "
                        "running and ready?"
                    )
                if r.status_code != 200:
                    got = {
                        "products": [],
                        "faq": None,
                        "clarify": False,
                        "handoff": False,
                        "text": "",
                    }
                    problems = [f"HTTP {r.status_code}: {r.text[:200]}"]
                else:
                    got = read_reply(r.json().get("messages") or [])
                    problems = check_turn(expect, got, cards, group)
                outcomes.append(TurnOutcome(d.id, n, user, expect, ms=ms, problems=problems, **got))
                if got["products"]:
                    cards = got["products"]
    return outcomes


def summarise(outcomes: list[TurnOutcome]) -> dict[str, Any]:
    """Shares of dialogues and turns right, turn latency, and the wrong turns."""
    by_dialogue: dict[str, bool] = {}
    for o in outcomes:
        by_dialogue[o.dialogue] = by_dialogue.get(o.dialogue, True) and o.right
    ms = np.array([o.ms for o in outcomes]) if outcomes else np.zeros(1)
    return {
        "dialogues": len(by_dialogue),
        "dialogues_right": sum(by_dialogue.values()),
        "dialogue_accuracy": round(sum(by_dialogue.values()) / max(1, len(by_dialogue)), 4),
        "turns": len(outcomes),
        "turns_right": sum(o.right for o in outcomes),
        "turn_accuracy": round(sum(o.right for o in outcomes) / max(1, len(outcomes)), 4),
        "turn_ms_p50": round(float(np.percentile(ms, 50)), 1),
        "turn_ms_p95": round(float(np.percentile(ms, 95)), 1),
        "wrong": [
            {"dialogue": o.dialogue, "turn": o.turn, "user": o.user, "problems": o.problems}
            for o in outcomes
            if not o.right
        ],
    }
