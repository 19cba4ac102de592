"""The shop page in a real headless Chromium (Debian's ``chromium`` driven by Playwright):
a shopper types a question, sees the answer and product cards, attaches a photo and sees
matching products. Screenshots go to the test's tmp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack import CHROMIUM_FLAGS, Stack, ask, banana_photo, blurry_banana_photo

pytestmark = [pytest.mark.slow, pytest.mark.models]


@pytest.fixture()
def page(stack: Stack, chromium: str):  # noqa: ANN201
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{stack.base}/shop/")
        yield page
        assert errors == [], errors  # no script errors on the page
        browser.close()


def test_shopper_asks_and_sees_answer_and_cards(page, tmp_path: Path) -> None:  # noqa: ANN001
    page.wait_for_selector("#products .card")  # the product grid loaded
    assert page.locator("#products .card").count() == 24

    ask(page, "how long does delivery take?")
    answer = page.locator("#messages .msg.bot").last
    assert answer.inner_text().startswith("Orders placed before 2 pm")
    assert answer.get_attribute("data-faq-id") == "delivery-time"
    assert float(answer.get_attribute("data-score")) > 0.9

    ask(page, "do you have oat milk")
    cards = page.locator("#messages .msg.products").last.locator(".card")
    assert cards.count() >= 1
    first = cards.first
    assert "oat" in first.locator(".title").inner_text().lower()
    assert first.locator(".price").inner_text().strip()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#messages .msg.products img')].every(i => i.complete && i.naturalWidth > 0)"
    )

    ask(page, "<b>bold</b><script>window.hacked=1</script>")  # shown as text, never run
    user_msgs = page.locator("#messages .msg.user")
    assert user_msgs.last.inner_text() == "<b>bold</b><script>window.hacked=1</script>"
    assert page.evaluate("() => window.hacked === undefined")

    ask(page, "退款多久到账")
    assert any(
        "\u4e00" <= ch <= "\u9fff" for ch in page.locator("#messages .msg.bot").last.inner_text()
    )
    page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)
    assert (tmp_path / "chat.png").stat().st_size > 10_000


def test_shopper_sends_a_photo_and_sees_matching_products(page, tmp_path: Path) -> None:  # noqa: ANN001
    photo = tmp_path / "banana.jpg"
    photo.write_bytes(banana_photo())
    page.set_input_files("#photo", str(photo))
    page.wait_for_selector("#messages .msg.products .card", timeout=30_000)
    cards = page.locator("#messages .msg.products").last.locator(".card")
    assert cards.first.get_attribute("data-product-id") == "banana"
    assert page.locator("#messages .msg.user img.photo").count() == 1

    not_image = tmp_path / "notes.jpg"
    not_image.write_text("this is not a photo")
    page.set_input_files("#photo", str(not_image))
    page.wait_for_selector("#messages .msg.error", timeout=30_000)
    assert "not an image" in page.locator("#messages .msg.error").last.inner_text()
    page.screenshot(path=str(tmp_path / "photo.png"), full_page=True)


def test_an_unsure_photo_asks_is_it_one_of_these_and_offers_a_person(
    page,  # noqa: ANN001
    stack: Stack,
    tmp_path: Path,
) -> None:
    photo = tmp_path / "blurry.jpg"
    photo.write_bytes(blurry_banana_photo())
    page.set_input_files("#photo", str(photo))
    button = page.locator("#messages .msg.products").last.locator("button.none-of-these")
    button.wait_for(timeout=30_000)
    assert (
        "Is it one of these?" in page.locator("#messages .msg.bot:not(.products)").last.inner_text()
    )
    assert page.locator("#messages .msg.products").last.locator(".card").count() >= 1
    assert button.inner_text() == "None of these"
    button.click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#messages .msg.bot')].some("
        "m => m.textContent.includes('A support agent will reply here shortly'))",
        timeout=30_000,
    )
    assert button.is_disabled()  # pressed once
    assert page.locator("#messages .msg.user").last.inner_text() == "None of these"


def test_popular_strip_goes_well_with_and_a_follow_up(page, stack: Stack) -> None:  # noqa: ANN001
    """Three shoppers clicked the avocado and the kiwi: both appear in the popular strip, and
    "Goes well with" on the avocado puts the kiwi first (asked about together). A follow-up
    in the chat ("how much is the second one?") answers about the second card shown."""
    import httpx

    for _ in range(3):
        with httpx.Client(base_url=stack.base, timeout=30) as shopper:  # a new cookie each
            for pid in ("avocado", "kiwi"):
                r = shopper.post("/shop/api/click", json={"product_id": pid})
                assert r.status_code == 204, r.text
    page.reload()
    page.wait_for_selector("#popular .card")
    strip = page.locator("#popular .card")
    ids = [strip.nth(i).get_attribute("data-product-id") for i in range(strip.count())]
    assert {"avocado", "kiwi"} <= set(ids)
    assert "in the last 7 days" in page.locator("#popular-status").inner_text()

    avocado = page.locator('#popular .card[data-product-id="avocado"]')
    avocado.locator("a.together").click()
    row = page.locator('#popular .together-row[data-product-id="avocado"]')  # under the card
    row.locator(".card").first.wait_for()
    assert row.locator(".card").first.get_attribute("data-product-id") == "kiwi"
    assert "also asked about" in row.locator("p").inner_text()

    ask(page, "do you have oat milk?")
    cards = page.locator("#messages .msg.products").last.locator(".card")
    second = cards.nth(1).get_attribute("data-product-id")
    title = cards.nth(1).locator(".title").inner_text()
    ask(page, "how much is the second one?")  # waits for the reply
    reply = page.locator("#messages .msg.products").last
    assert reply.locator(".card").first.get_attribute("data-product-id") == second
    assert title in page.locator("#messages .msg.bot:not(.products)").last.inner_text()
