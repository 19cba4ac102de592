"""Who may do what on the retrieval service: the Rasa action endpoint needs its token, a
conversation id in /v1/query needs the API key, the shop's conversation cookie must be one
the server signed, /health keeps its details for trusted callers, catalog images are served
only from the catalog folder. The real app (TestClient, real SQLite) over a small retriever
with stand-in encoders."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from retrieval.catalog import Product
from retrieval.console import actions
from retrieval.console.tasks import question, sync_tasks
from retrieval.service import create_app
from retrieval.service.keys import ConversationIds
from retrieval.service.shop import COOKIE
from retrieval.store.models import AgentTaskRow, QueryRow

from secfixtures import API_KEY, WEBHOOK_TOKEN, close_retriever, settings_for, small_retriever

AUTH = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}


@pytest.fixture()
def client(tmp_path: Path):  # noqa: ANN201
    settings = settings_for(tmp_path)
    r = small_retriever(settings)
    with TestClient(create_app(settings, r), client=("203.0.113.7", 40000)) as c:
        c.retriever = r  # type: ignore[attr-defined]
        yield c
    close_retriever(r)


def action_call(action: str = "action_small_talk", **latest: object) -> dict:
    return {
        "next_action": action,
        "sender_id": "s-1",
        "tracker": {
            "sender_id": "s-1",
            "slots": {},
            "latest_message": latest
            or {"text": "hello", "intent": {"name": "greet"}, "entities": []},
            "events": [],
            "paused": False,
            "followup_action": None,
            "active_loop": {},
            "latest_action_name": "action_listen",
        },
        "domain": {},
        "version": "3.6.21",
    }


def tasks(client: TestClient) -> list[str]:
    engine = client.app.state.console.engine
    sync_tasks(engine)
    with Session(engine) as s:
        return list(s.scalars(select(AgentTaskRow.conversation_id)))


# ---- the Rasa action endpoint -------------------------------------------------------------
def test_webhook_needs_the_rasa_token(client: TestClient) -> None:
    call = action_call(
        "action_small_talk", text="talk to a human", intent={"name": "request_human"}
    )
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Bearer ünïcode".encode()},
    ):
        r = client.post("/webhook", json=call, headers=headers)
        assert r.status_code == 401 and r.json()["error"] == "NotLoggedIn", r.text
    assert client.retriever.query_log.flush(5)
    assert tasks(client) == []  # no fake hand-off reached the agents' queue
    r = client.post("/webhook", json=call, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["responses"][0]["response"] == "utter_request_human"
    assert client.retriever.query_log.flush(5)
    assert tasks(client) == ["s-1"]


def test_webhook_without_a_configured_token_refuses_everything(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, webhook_token=None)
    r = small_retriever(settings)
    with TestClient(create_app(settings, r)) as c:
        resp = c.post("/webhook", json=action_call(), headers=AUTH)
    close_retriever(r)
    assert resp.status_code == 503 and "RETRIEVAL_WEBHOOK_TOKEN" in resp.json()["detail"]


@pytest.mark.parametrize(
    ("call", "detail"),
    [
        (action_call(text="x", intent="greet"), "tracker.latest_message.intent must be an object"),
        (
            {**action_call(), "tracker": {**action_call()["tracker"], "latest_message": "hi"}},
            "tracker.latest_message must be an object",
        ),
        (
            {**action_call(), "tracker": {**action_call()["tracker"], "events": [1]}},
            "tracker.events must hold objects",
        ),
        ({**action_call(), "tracker": "x"}, "tracker must be an object"),
        ({**action_call(), "next_action": 5}, "next_action must name"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_malformed_action_calls_get_422(client: TestClient, call: object, detail: str) -> None:
    r = client.post("/webhook", json=call, headers=AUTH)
    assert r.status_code == 422 and detail in r.json()["detail"], r.text


# ---- /v1/query ----------------------------------------------------------------------------
def test_a_conversation_id_needs_the_api_key(client: TestClient) -> None:
    body = {"text": "zebra quantum violin", "conversation_id": "made-up-by-anyone"}
    r = client.post("/v1/query", json=body)
    assert r.status_code == 403 and "API key" in r.json()["detail"], r.text
    r = client.post("/v1/query", data={"text": "zebra quantum violin", "conversation_id": "x"})
    assert r.status_code == 403
    r = client.post("/v1/query", json=body, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 403
    assert client.post("/v1/query", json={"text": "zebra quantum violin"}).status_code == 200
    assert client.retriever.query_log.flush(5)
    assert tasks(client) == []
    r = client.post("/v1/query", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 200 and r.json()["decision"] == "handoff"
    assert client.retriever.query_log.flush(5)
    assert tasks(client) == ["made-up-by-anyone"]


# ---- the shop's conversation cookie ---------------------------------------------------------
def _reply_in(client: TestClient, conversation: str) -> None:
    """An agent's reply stored for a conversation (as the console stores one)."""
    from retrieval.console import auth

    engine = client.app.state.console.engine
    with Session(engine) as s, s.begin():
        s.add(
            QueryRow(
                id=f"q-{conversation[:8]}",
                created_at=actions._now(),
                conversation_id=conversation,
                channel="rasa",
                text="talk to a human",
                has_image=False,
                decision="handoff",
                answer_threshold=0.6,
                suggest_threshold=0.45,
                encode_ms=0.0,
                search_ms=0.0,
                total_ms=0.0,
            )
        )
    name = "agent" + conversation[:6].lower().replace("-", "x").replace("_", "y").replace(".", "z")
    auth.add_agent(engine, name, "a long enough password")
    _, agent = auth.login(engine, name, "a long enough password", 60)
    version = question(engine, f"q-{conversation[:8]}").version
    actions.act(engine, agent, f"q-{conversation[:8]}", action="write", version=version, text="hi!")


def test_only_conversation_ids_the_server_signed_are_read(client: TestClient) -> None:
    ids: ConversationIds = client.app.state.conversations
    issued = ids.new()
    forged = "A" * 24 + "." + "B" * 22
    unsigned = "abcdefghijklmnopqrstuvwx"  # what the old cookie check accepted
    for cid in (issued, forged, unsigned):
        _reply_in(client, cid)
    assert ids.valid(issued) and not ids.valid(forged) and not ids.valid(unsigned)
    assert not ids.valid(issued + "\n") and not ids.valid(issued + "x")
    for cid, expected in ((issued, ["hi!"]), (forged, []), (unsigned, [])):
        client.cookies.set(COOKIE, cid)
        body = client.get("/shop/api/updates").json()
        assert [m["text"] for m in body["messages"]] == expected, cid
        assert all(m["agent"] == "Support" for m in body["messages"])  # no login names
    client.cookies.clear()


def test_the_conversation_key_is_private_and_kept(client: TestClient, tmp_path: Path) -> None:
    key = tmp_path / "var" / "secrets" / "conversation.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    issued = client.app.state.conversations.new()
    again = ConversationIds.from_settings(None, key)
    assert again.valid(issued)  # a restart keeps the shoppers' conversations
    from_env = ConversationIds.from_settings(client.app.state.settings.api_key, key)
    assert not from_env.valid(issued)
    os.chmod(key, 0o644)
    from retrieval.errors import ConfigError

    with pytest.raises(ConfigError, match="chmod 600"):
        ConversationIds.from_settings(None, key)


# ---- /health -----------------------------------------------------------------------------
def test_health_details_only_for_trusted_callers(client: TestClient, tmp_path: Path) -> None:
    qlog = client.retriever.query_log
    with qlog.engine.begin() as conn:  # the database breaks: the error names a table
        conn.exec_driver_sql("ALTER TABLE queries RENAME TO queries_away")
    client.post("/v1/query", json={"text": "where is my order"})
    assert qlog.flush(5)
    public = client.get("/health")
    assert public.status_code == 200
    body = public.json()
    assert body["status"] == "degraded"
    assert body["query_log"] == {"database": "down", "writer": "running"}
    assert "queries" not in public.text.replace("faq_entries", "")
    assert body["query_gate"] is None
    private = client.get("/health", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert private["query_log"]["database"] == "down"
    gate = private["query_gate"]
    assert gate["admitted"] == 1 and (gate["running"], gate["waiting"], gate["refused"]) == (
        0,
        0,
        0,
    )
    assert gate["concurrency"] == client.app.state.settings.query_concurrency
    assert "no such table" in private["query_log"]["last_error"].lower()
    with TestClient(client.app, client=("127.0.0.1", 5000)) as local:
        assert "last_error" in local.get("/health").json()["query_log"]
    with qlog.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE queries_away RENAME TO queries")


# ---- catalog images ----------------------------------------------------------------------
def test_images_are_served_only_from_the_catalog_folder(client: TestClient, tmp_path: Path) -> None:
    r = client.get("/v1/products/red-apple/image")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-security-policy"].startswith("sandbox")
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG not really: a private file")
    inside = tmp_path / "catalog" / "link.png"
    inside.symlink_to(secret)
    catalog = client.retriever.snapshot.catalog
    for pid, path in (
        ("outside", secret),  # an absolute path outside the folder
        ("climbs", tmp_path / "catalog" / ".." / "secret.png"),  # ../
        ("link", inside),  # a link inside that points outside
        ("passwd", Path("/etc/passwd")),
    ):
        catalog.products[pid] = Product(pid, pid, images=(path,))
        r = client.get(f"/v1/products/{pid}/image")
        assert r.status_code == 404 and "private file" not in r.text, (pid, r.text)
    note = tmp_path / "catalog" / "notes.txt"
    note.write_text("<script>alert(1)</script>")
    catalog.products["note"] = Product("note", "note", images=(note,))
    assert client.get("/v1/products/note/image").status_code == 404  # not an image type


def test_database_errors_answer_503_without_the_servers_address(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that cannot be used is a 503 whose detail names no server; the log's own
    refusal keeps its message; a schema bug stays a 500, not a "try again"."""
    from sqlalchemy.exc import OperationalError

    from retrieval.errors import LogBehind, StoreError

    retriever = client.app.state.retriever
    failures = {
        "down": StoreError("cannot prepare the database postgresql://db.internal:5432/shop"),
        "refused": OperationalError("SELECT 1", {}, Exception("connection refused by db.internal")),
        "behind": LogBehind("the query log cannot keep up, so this question was not recorded"),
        "bug": OperationalError("SELECT x", {}, Exception("no such table: queries")),
    }
    seen = {}
    for name, exc in failures.items():

        def fail(*args, exc=exc, **kwargs):  # noqa: ANN002, ANN003, ANN202
            raise exc

        monkeypatch.setattr(retriever, "query", fail)
        # the running app (its lifespan entered by the fixture); a 500 comes back as one
        seen[name] = TestClient(client.app, raise_server_exceptions=False).post(
            "/v1/query", json={"text": "hello"}
        )
    for name in ("down", "refused"):
        r = seen[name]
        assert r.status_code == 503 and r.headers["retry-after"] == "5", name
        assert r.json() == {
            "error": "StoreError",
            "detail": "the database cannot be used right now; try again shortly",
        }
        assert "db.internal" not in r.text
    assert seen["behind"].status_code == 503
    assert "was not recorded" in seen["behind"].json()["detail"]
    assert seen["bug"].status_code == 500 and "try again" not in seen["bug"].text
