"""The agent console in a real headless Chromium beside the shop page: a shopper asks for a
person through the real bot, an agent logs in, finds the hand-off, edits a reply and sends
it, and the shopper's open chat window shows it without a reload. Screenshots in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack import CHROMIUM_FLAGS, PASSWORD, Stack, ask

pytestmark = [pytest.mark.slow, pytest.mark.models]


def test_agent_answers_a_handoff_in_the_shoppers_open_chat(
    stack: Stack,
    agents: list[str],
    chromium: str,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import sync_playwright

    question = "<i>please connect me to a real person</i>"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        errors: list[str] = []
        shop = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        shop.on("pageerror", lambda exc: errors.append(str(exc)))
        shop.goto(f"{stack.base}/shop/")
        ask(shop, question)

        console = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        console.on("pageerror", lambda exc: errors.append(str(exc)))
        console.goto(f"{stack.base}/agent/")
        assert "log in" in console.content().lower()  # no session: no queue
        console.goto(f"{stack.base}/agent/login")
        console.fill("#name", "alice")
        console.fill("#password", PASSWORD)
        console.click("#login")
        console.wait_for_selector("#agent-name")
        row = console.locator("#queue tr", has_text="please connect me to a real person").last
        for _ in range(20):  # the query log writes in batches
            if row.count():
                break
            console.wait_for_timeout(500)
            console.reload()
        assert row.locator("td.text").inner_text().startswith(question)  # shown as text
        console.screenshot(path=str(tmp_path / "queue.png"), full_page=True)
        row.locator("button.open").click()  # claims the question (a form post)
        console.wait_for_selector("#shopper-text")
        assert console.locator("#shopper-text").inner_text() == question
        reply = "Hello, this is Alice from Fresh Basket. I can help you here."
        console.fill("#write-form textarea", reply + "  ")
        console.locator("#write-form button").click()
        console.wait_for_selector("#result")
        assert "Sent to the shopper" in console.locator("#result").inner_text()
        assert "Added to the Rasa tracker" in console.locator("#result").inner_text()
        console.screenshot(path=str(tmp_path / "sent.png"), full_page=True)

        shop.wait_for_selector("#messages .msg.agent", timeout=15_000)
        assert shop.locator("#messages .msg.agent").inner_text() == reply
        # the shopper sees "Support", never the agent's login name
        assert shop.locator("#messages .msg.agent").get_attribute("data-agent") == "Support"
        shop.screenshot(path=str(tmp_path / "shopper.png"), full_page=True)
        shop.wait_for_timeout(4500)  # two more polls: the reply is not shown twice
        assert shop.locator("#messages .msg.agent").count() == 1
        assert errors == [], errors
        browser.close()
    assert (tmp_path / "shopper.png").stat().st_size > 10_000
