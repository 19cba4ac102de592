"""The chat window's relay to Rasa: message checks, one-at-a-time per conversation, clear
errors when Rasa is down. Rasa is stood in for by an httpx transport here (pure relay
logic); the real Rasa server is exercised in test_bot.py and test_shop_page.py."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from retrieval.errors import Busy, InputError, TooLarge, Unavailable
from retrieval.service.chat import ChatRelay, check_message
from retrieval.service.keys import ConversationIds


def test_conversation_ids_are_random_signed_and_checked() -> None:
    ids = ConversationIds(b"k" * 32)
    issued = {ids.new() for _ in range(100)}
    assert len(issued) == 100 and all(ids.valid(i) for i in issued)
    other = ConversationIds(b"o" * 32)
    assert not any(other.valid(i) for i in issued)  # another key: another server's ids
    one = next(iter(issued))
    nonce, sig = one.split(".")
    for bad in (
        None,
        7,
        "",
        "short",
        "a" * 65,
        "has space in it 123",
        "../../../etc/passwd00",
        one + "\n",  # re.match with $ accepted a trailing newline
        one + "x",
        nonce + "." + sig[::-1],
        nonce[::-1] + "." + sig,
        "ü" * 24 + "." + sig,
    ):
        assert not ids.valid(bad), bad


def test_message_checks() -> None:
    assert check_message("  where is my order?  ", 100) == "where is my order?"
    assert check_message("🍌🍌🍌", 100) == "🍌🍌🍌"
    assert check_message("有 organic 香蕉 吗", 100) == "有 organic 香蕉 吗"
    # a typed '/intent' never reaches Rasa as a command
    assert not check_message('/send_photo{"photo_id": "x"}', 100).startswith("/")
    for empty in ("", "   \n\t "):
        with pytest.raises(InputError, match="empty"):
            check_message(empty, 100)
    with pytest.raises(InputError, match="text"):
        check_message(["not", "text"], 100)
    with pytest.raises(TooLarge, match="20,480 characters long; please keep it under 2,000"):
        check_message("x" * 20480, 2000)


def relay_with(handler, **kwargs) -> ChatRelay:  # noqa: ANN001
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return ChatRelay("http://rasa:5005/", client=client, **kwargs)


def test_messages_reach_rasa_as_the_conversation_and_come_back() -> None:
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), json.loads(request.content)))
        return httpx.Response(
            200,
            json=[
                {"recipient_id": "c", "text": "Hello"},
                {"recipient_id": "c", "custom": {"type": "answer", "score": 0.9}},
            ],
        )

    out = asyncio.run(relay_with(handler).send("conv-1", "hi"))
    assert seen == [
        ("http://rasa:5005/webhooks/rest/webhook", {"sender": "conv-1", "message": "hi"})
    ]
    assert out == [{"text": "Hello"}, {"custom": {"type": "answer", "score": 0.9}}]


def test_one_conversation_is_served_in_order_and_a_burst_is_bounded() -> None:
    order = []

    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        order.append(("start", body["message"]))
        await asyncio.sleep(0.05)
        order.append(("end", body["message"]))
        return httpx.Response(200, json=[{"text": body["message"].upper()}])

    async def burst() -> list:
        relay = relay_with(handler, max_pending=3)
        results = await asyncio.gather(
            *(relay.send("same", f"m{i}") for i in range(6)),
            relay.send("other", "x"),
            return_exceptions=True,
        )
        again = await relay.send("same", "later")  # the conversation is usable afterwards
        assert relay._pending == {} and relay._locks == {}  # nothing retained per conversation
        return [*results, again]

    results = asyncio.run(burst())
    answered = [r for r in results[:6] if isinstance(r, list)]
    refused = [r for r in results[:6] if isinstance(r, Busy)]
    assert answered == [[{"text": "M0"}], [{"text": "M1"}], [{"text": "M2"}]]
    assert len(refused) == 3 and "wait for the reply" in str(refused[0])
    assert results[6] == [{"text": "X"}] and results[7] == [{"text": "LATER"}]
    same = [m for _, m in order if m.startswith("m")]
    assert same == ["m0", "m0", "m1", "m1", "m2", "m2"]  # never two at once


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        (lambda r: (_ for _ in ()).throw(httpx.ConnectError("refused")), "not available"),
        (lambda r: (_ for _ in ()).throw(httpx.ReadTimeout("slow")), "too long"),
        (lambda r: httpx.Response(500, text="boom"), "could not answer"),
        (lambda r: httpx.Response(200, text="<html>"), "unreadable"),
    ],
)
def test_rasa_trouble_is_a_clear_unavailable(handler, message: str) -> None:  # noqa: ANN001
    with pytest.raises(Unavailable, match=message):
        asyncio.run(relay_with(handler).send("c" * 20, "hi"))
