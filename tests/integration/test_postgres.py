"""The query log on a real PostgreSQL server, including an outage and a restart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from retrieval.runtime import build_retriever, open_store
from retrieval.store import CandidateRow, QueryRow

from helpers import demo_settings
from pg import PostgresServer

pytestmark = [pytest.mark.postgres, pytest.mark.models]


def count(engine, model) -> int:  # noqa: ANN001
    with Session(engine) as s:
        return s.scalar(select(func.count()).select_from(model))


def test_queries_and_candidates_with_chinese_text_on_postgres(
    demo_data_dir: Path, pg_url: str
) -> None:
    settings = demo_settings(demo_data_dir, database_url=pg_url)
    engine, qlog = open_store(settings)
    retriever = build_retriever(settings, qlog)
    questions = [
        "how long does delivery take?",
        "送货需要多长时间？",
        "do you have organic bananas? 🍌",
        "你们有有机香蕉吗",  # a Chinese product question: the products' multilingual view
    ]
    results = [retriever.query(q, conversation_id="pg-conv") for q in questions]
    assert results[3].products[0].product.id == "banana"
    qlog.close()
    with Session(engine) as s:
        for q, r in zip(questions, results, strict=True):
            row = s.get(QueryRow, r.query_id)
            assert row.text == q  # stored intact, emoji and Chinese included
            assert len(row.candidates) == len(r.replies) + len(r.products)
            assert row.candidates[0].score == pytest.approx(r.replies[0].score)
            logged = [(c.kind, c.item_id) for c in row.candidates if c.kind == "product"]
            assert logged == [("product", m.product.id) for m in r.products]
    engine.dispose()


@pytest.mark.slow
def test_postgres_stopped_and_restarted_loses_no_query(demo_data_dir: Path) -> None:
    server = PostgresServer()
    server.start()
    try:
        settings = demo_settings(demo_data_dir, database_url=server.url)
        engine, qlog = open_store(settings)
        qlog.retry_interval = 0.5
        retriever = build_retriever(settings, qlog)
        before = retriever.query("how long does delivery take?")
        assert qlog.flush(10)
        assert count(engine, QueryRow) == 1

        server.stop()
        during = []
        for q in ["can I pay with paypal?", "where is my order", "do you sell gift cards"]:
            t0 = time.perf_counter()
            r = retriever.query(q, conversation_id="outage")
            during.append(r)
            assert r.replies and r.decision  # the shopper still gets an answer
            assert time.perf_counter() - t0 < 2.0  # and does not wait for the database
        assert qlog.flush(30)
        stats = qlog.stats()
        assert stats["database_ok"] is False and stats["spooled_now"] == 3 and stats["dropped"] == 0

        server.start()
        deadline = time.monotonic() + 30
        after = retriever.query("how do I return something")
        while time.monotonic() < deadline and count_safe(engine) < 5:
            time.sleep(0.2)
        assert count(engine, QueryRow) == 5
        ids = {r.query_id for r in [before, *during, after]}
        with Session(engine) as s:
            assert set(s.scalars(select(QueryRow.id))) == ids
            expected = sum(len(r.replies) + len(r.products) for r in [before, *during, after])
            assert s.scalar(select(func.count()).select_from(CandidateRow)) == expected
        assert qlog.spooled_records() == 0
        qlog.close()
        engine.dispose()
    finally:
        server.destroy()


def count_safe(engine) -> int:  # noqa: ANN001
    try:
        return count(engine, QueryRow)
    except Exception:  # noqa: BLE001 - the server may still be starting
        return -1


@pytest.mark.slow
def test_service_starts_while_postgres_is_down(demo_data_dir: Path) -> None:
    server = PostgresServer()  # created, not started
    try:
        settings = demo_settings(demo_data_dir, database_url=server.url)
        engine, qlog = open_store(settings)
        qlog.retry_interval = 0.5
        retriever = build_retriever(settings, qlog)
        r = retriever.query("how long does delivery take?", conversation_id="early")
        assert r.replies[0].entry.id == "delivery-time"
        assert qlog.flush(30) and qlog.stats()["database_ok"] is False
        server.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and count_safe(engine) < 1:
            time.sleep(0.2)
        with Session(engine) as s:  # the schema was created and the spooled record written
            row = s.get(QueryRow, r.query_id)
            assert row is not None and row.conversation_id == "early"
            assert len(row.candidates) == len(r.replies) + len(r.products)
        qlog.close()
        engine.dispose()
    finally:
        server.destroy()


def test_console_and_shop_routes_answer_503_while_postgres_is_down(tmp_path: Path) -> None:
    """Routes that read the database answer the documented 503 with the error body and a
    Retry-After while PostgreSQL is stopped (the soak's stop-and-restart found them
    answering a bare 500), and work again once it is back."""
    from fastapi.testclient import TestClient

    from retrieval.console.auth import COOKIE as AGENT_COOKIE
    from retrieval.console.auth import add_agent
    from retrieval.service.app import create_app
    from retrieval.service.shop import COOKIE as SHOP_COOKIE

    from secfixtures import close_retriever, settings_for, small_retriever

    server = PostgresServer()
    server.start()
    settings = settings_for(tmp_path, database_url=server.url)
    r = small_retriever(settings)  # the schema is made; the console shares the log's engine
    try:
        with TestClient(create_app(settings, r)) as c:
            server.stop()
            c.cookies.set(SHOP_COOKIE, c.app.state.conversations.new())
            c.cookies.set(AGENT_COOKIE, "s" * 43, path="/agent")
            for route in ("/agent/api/queue", "/shop/api/updates"):
                down = c.get(route)
                assert down.status_code == 503, (route, down.text)
                assert down.json()["error"] == "StoreError", route
                assert "try again" in down.json()["detail"]
                assert str(server.port) not in down.text  # the server's address stays inside
                assert down.headers["retry-after"] == "5"
            server.start()
            add_agent(c.app.state.console.engine, "alice", "a long password 1")
            assert c.get("/shop/api/updates").json() == {"messages": [], "last": 0}
            assert c.get("/agent/api/queue").status_code == 401  # an unknown session again
    finally:
        close_retriever(r)
        server.destroy()
