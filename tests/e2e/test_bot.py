"""The Rasa bot: data validation, test stories, and conversations through a real Rasa server
talking to a real retrieval service (its custom actions at /webhook)."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from retrieval.store import QueryRow

from stack import RASA, ROOT, Stack
from stack import RASA_ENV as ENV

pytestmark = [pytest.mark.slow, pytest.mark.models]

BOT = ROOT / "bot"


def test_bot_data_is_valid() -> None:
    out = subprocess.run(
        [str(RASA), "data", "validate"],
        cwd=BOT,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def test_test_stories_pass(stack: Stack) -> None:
    """Every test story in bot/tests, through Rasa's own end-to-end story evaluation
    (``rasa.core.test.test`` with e2e: what ``rasa test --stories tests`` runs before its NLU
    report) against the model the running demo serves: each user message gets the story's
    intent and each turn the story's next action. Asked of the running Rasa server
    (``POST /model/test/stories?e2e=true``), which has the trained bot loaded already: a
    ``rasa test`` process would spend most of a minute loading it again."""
    files = sorted((BOT / "tests").glob("test_*.yml"))  # Rasa's prefix for test stories
    assert files
    token = stack.rasa_token()
    for path in files:
        text = path.read_text(encoding="utf-8")
        r = httpx.post(
            f"{stack.rasa}/model/test/stories",
            params={"e2e": "true", "token": token},
            content=text.encode(),
            headers={"Content-Type": "application/x-yaml"},
            timeout=600,
        )
        assert r.status_code == 200, r.text[-2000:]
        evaluation = r.json()
        assert evaluation["is_end_to_end_evaluation"] is True
        steps = [step for story in yaml.safe_load(text)["stories"] for step in story["steps"]]
        # every story was evaluated: each of its bot actions was predicted once ...
        actions = [a for a in evaluation["actions"] if a["action"] != "action_listen"]
        assert sorted(a["action"] for a in actions) == sorted(
            step["action"] for step in steps if "action" in step
        ), path.name
        # ... and each of its intents was checked (the report's labels are actions and intents)
        assert {step["intent"] for step in steps if "intent" in step} <= set(
            evaluation["report"]
        ), path.name
        # None of the test stories failed: no wrong action, no wrong intent
        wrong = [a for a in evaluation["actions"] if a["action"] != a["predicted"]]
        misses = {
            label: row
            for label, row in evaluation["report"].items()
            if isinstance(row, dict) and not label.endswith(" avg") and row["f1-score"] < 1.0
        }
        assert not wrong and not misses and evaluation["accuracy"] == 1.0, (
            path.name,
            wrong,
            misses,
        )


def test_conversations_through_rasa(stack: Stack) -> None:
    say, data_dir = stack.say, stack.data_dir
    hello = say("e2e-en", "hello")
    assert hello["text"].startswith("Hi! I'm the Fresh Basket assistant")
    answer = say("e2e-en", "how long does delivery take?")
    assert answer["text"].startswith("Orders placed before 2 pm are delivered the next working day")
    assert answer["custom"]["faq_id"] == "delivery-time" and answer["custom"]["score"] > 0.9
    cards = say("e2e-en", "do you have organic bananas")
    assert cards["text"] == "Here is what I found:"
    assert (
        cards["custom"]["products"][0]["id"] == "banana"
        and cards["custom"]["products"][0]["score"] > 0.5
    )
    handoff = say("e2e-en", "purple monkey dishwasher quantum")
    assert handoff["text"] == "Thanks for your question. A support agent will reply here shortly."
    assert handoff["custom"]["handoff"] is True
    human = say("e2e-en", "I want to talk to a real person")
    assert human["text"] == "Of course. A support agent will reply here shortly."

    ni_hao = say("e2e-zh", "你好")
    assert ni_hao["text"].startswith("您好")
    zh_human = say("e2e-zh", "转人工客服")
    assert zh_human["text"] == "好的，客服人员会尽快在这里回复您。"

    # every retrieval query is on record under its conversation, with all its candidates
    time.sleep(1.5)  # the service batches its log writes
    engine = create_engine(f"sqlite:///{data_dir / 'retrieval.db'}")
    with Session(engine) as s:
        rows = s.scalars(
            select(QueryRow)
            .where(QueryRow.conversation_id == "e2e-en")
            .order_by(QueryRow.created_at)
        ).all()
        assert [r.text for r in rows] == [
            "how long does delivery take?",
            "do you have organic bananas",
            "purple monkey dishwasher quantum",
            "I want to talk to a real person",
        ]
        assert rows[0].id == answer["custom"]["query_id"] and rows[0].decision == "answer"
        assert rows[1].decision == "answer"  # answered with product cards: not for the agents
        assert rows[2].decision == handoff["custom"]["decision"] and rows[2].decision in (
            "handoff",
            "suggest",
        )
        assert all(r.channel == "rasa" and len(r.candidates) == 3 + 4 for r in rows[:3])
        assert (
            rows[3].decision == "handoff" and rows[3].candidates == []
        )  # "talk to a person" queues too
    engine.dispose()


def test_a_question_the_demo_cannot_answer_goes_to_an_agent(stack: Stack) -> None:
    """Near the shop's topics (delivery) but answered by no entry: handed to an agent, not
    answered with the nearest entry."""
    reply = stack.say("e2e-gotland", "do you deliver to Gotland island on sundays?")
    assert reply["custom"]["handoff"] is True, reply
    assert reply["custom"]["decision"] in ("handoff", "suggest"), reply
    assert reply["text"] == "Thanks for your question. A support agent will reply here shortly."
