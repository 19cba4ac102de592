"""The agent console's defences on the real app (TestClient with several client addresses,
real SQLite, real argon2): login limits per address, a lockout an attacker cannot turn
against a real agent, bounded throttle memory, CSRF checks that never crash, claiming only
by POST, no caching, the drafts file the settings name, and disabling an account."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from retrieval.console import actions, auth, tasks
from retrieval.console.auth import LoginThrottle
from retrieval.errors import Busy, NotLoggedIn
from retrieval.service import create_app
from retrieval.store.models import QueryRow

from secfixtures import close_retriever, settings_for, small_retriever

PASSWORD = "a long enough password"


@pytest.fixture()
def app(tmp_path: Path):  # noqa: ANN201
    settings = settings_for(
        tmp_path,
        faq_path=tmp_path / "faq.jsonl",
        faq_drafts_path=tmp_path / "elsewhere" / "drafts.jsonl",
    )
    (tmp_path / "faq.jsonl").write_text(
        json.dumps({"id": "delivery", "question": "how long", "answer": "two days"}) + "\n"
    )
    r = small_retriever(settings)
    application = create_app(settings, r)
    with TestClient(application, client=("198.51.100.1", 1)) as c:
        engine = application.state.console.engine
        for name in ("alice", "bob"):
            auth.add_agent(engine, name, PASSWORD)
        c.engine = engine  # type: ignore[attr-defined]
        yield application
    close_retriever(r)


def client_at(app, address: str) -> TestClient:  # noqa: ANN001
    return TestClient(app, client=(address, 1234))


def login(c: TestClient, name: str, password: str = PASSWORD) -> tuple[int, dict]:
    r = c.post("/agent/api/login", json={"name": name, "password": password})
    return r.status_code, r.json()


def waiting(app, conversation: str = "c" * 20) -> str:  # noqa: ANN001
    engine = app.state.console.engine
    qid = f"q-{time.monotonic_ns()}"
    with Session(engine) as s, s.begin():
        s.add(
            QueryRow(
                id=qid,
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
    tasks.sync_tasks(engine)
    return qid


# ---- logging in ---------------------------------------------------------------------------
def test_one_address_cannot_make_endless_password_checks(app) -> None:  # noqa: ANN001
    app.state.console.login_throttle = LoginThrottle(per_address=4, window_s=60)
    attacker = client_at(app, "203.0.113.66")
    names = ["alice", "bob", "carol", "x" * 5000]
    codes = [login(attacker, n, "wrong password!")[0] for n in names]
    assert codes == [401, 401, 401, 401]
    code, body = login(attacker, "alice")  # even the right password: the address is over
    assert code == 429 and "too many login attempts from your address" in body["detail"]
    assert login(client_at(app, "198.51.100.20"), "alice")[0] == 200  # others are not


def test_failing_on_purpose_does_not_lock_out_the_real_agent(app) -> None:  # noqa: ANN001
    app.state.console.login_throttle = LoginThrottle(
        max_failures=3, per_address=50, slow_after=6, step_s=0.6, max_wait_s=1.0
    )
    attacker = client_at(app, "203.0.113.66")
    for _ in range(3):
        assert login(attacker, "alice", "guess guess!")[0] == 401
    code, body = login(attacker, "alice", PASSWORD)
    assert code == 401 and "too many failed logins for this account" in body["detail"]
    # alice, from her own address, gets in at once
    assert login(client_at(app, "198.51.100.7"), "alice")[0] == 200
    # many addresses guessing alice only slow her logins down; they still work
    for i in range(6):
        assert login(client_at(app, f"203.0.113.{i}"), "alice", "guess guess!")[0] == 401
    t0 = time.perf_counter()
    assert login(client_at(app, "198.51.100.7"), "alice")[0] == 200
    # waited its turn: the step after the last guess's turn, less the time that guess's own
    # password check took (up to half a step on a busy machine)
    assert time.perf_counter() - t0 >= 0.3


def test_the_throttle_forgets_the_oldest_keys() -> None:
    now = [0.0]
    t = LoginThrottle(per_address=1000, max_failures=2, max_keys=50, clock=lambda: now[0])
    for i in range(5000):
        t.admit(f"10.0.{i // 256}.{i % 256}", f"agent{i}")
        t.failed(f"10.0.{i // 256}.{i % 256}", f"agent{i}")
        t.failed("10.9.9.9", "y" * 100_000)  # not a possible name: never kept
    assert all(size <= 50 for size in t.sizes().values()), t.sizes()
    t.admit("10.9.9.9", "bob")
    t.failed("10.9.9.9", "bob")
    t.failed("10.9.9.9", "bob")
    with pytest.raises(NotLoggedIn, match="try again in 300 s"):
        t.admit("10.9.9.9", "bob")
    now[0] += 301  # the window passes: bob may try again
    assert t.admit("10.9.9.9", "bob") == 0.0


def test_password_checks_run_a_few_at_a_time() -> None:
    t = LoginThrottle(verify_slots=1)
    with t.verifying(), pytest.raises(Busy, match="busy checking other logins"):
        with t.verifying(timeout_s=0.05):
            pass
    with t.verifying():  # the slot is free again
        pass


# ---- CSRF, claiming, caching -------------------------------------------------------------
def test_a_crafted_csrf_token_is_a_403_not_a_500(app) -> None:  # noqa: ANN001
    c = client_at(app, "198.51.100.7")
    code, body = login(c, "alice")
    assert code == 200
    for token in ("ünïcode".encode(), b"\xff\xfe", b"x" * 5000):
        r = c.post(
            "/agent/api/questions/x/reply",
            json={"action": "write", "version": 1, "text": "hi"},
            headers={"X-CSRF-Token": token},
        )
        assert r.status_code == 403 and "CSRF" in r.json()["detail"], r.text
    page = c.get("/agent/login")
    c.cookies.set("agent_login", "abc")
    r = c.post("/agent/login", data={"login_csrf": "äbc", "name": "alice", "password": PASSWORD})
    assert r.status_code == 403 and "login form expired" in r.text
    assert page.status_code == 200


def test_reading_a_question_claims_nothing(app) -> None:  # noqa: ANN001
    c = client_at(app, "198.51.100.7")
    _, body = login(c, "alice")
    qid = waiting(app)
    assert c.get(f"/agent/api/questions/{qid}").json()["status"] == "open"
    assert c.get(f"/agent/api/questions/{qid}?claim=true").json()["status"] == "open"
    assert c.get(f"/agent/questions/{qid}").status_code == 200  # the page does not claim
    assert c.get(f"/agent/api/questions/{qid}").json()["claimed_by"] is None
    r = c.post(f"/agent/api/questions/{qid}/claim")
    assert r.status_code == 403  # no CSRF token
    r = c.post(f"/agent/api/questions/{qid}/claim", headers={"X-CSRF-Token": body["csrf_token"]})
    assert r.status_code == 200 and r.json()["claimed"] is True
    assert r.json()["claimed_by"] == "alice" and r.json()["status"] == "claimed"
    # the queue's "Open" button claims with a form post
    other = waiting(app, "d" * 20)
    queue_page = c.get("/agent/")
    assert f'action="/agent/questions/{other}/claim"' in queue_page.text
    r = c.post(
        f"/agent/questions/{other}/claim",
        data={"csrf": body["csrf_token"]},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == f"/agent/questions/{other}"
    assert c.get(f"/agent/api/questions/{other}").json()["claimed_by"] == "alice"


def test_console_answers_are_never_cached(app) -> None:  # noqa: ANN001
    c = client_at(app, "198.51.100.7")
    assert c.get("/agent/api/queue").headers["cache-control"] == "no-store"  # the 401 too
    login(c, "alice")
    for url in ("/agent/api/queue", "/agent/api/numbers", "/agent/", "/agent/audit"):
        r = c.get(url)
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store", url


# ---- drafts and accounts -----------------------------------------------------------------
def test_drafts_go_to_the_file_the_settings_name_and_reach_the_bank(
    app,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    from retrieval.reindex.faq import load_bank

    c = client_at(app, "198.51.100.7")
    _, body = login(c, "alice")
    r = c.post(
        "/agent/api/drafts",
        json={"id": "gift-wrap", "question": "do you gift wrap?", "answer": "Yes, for 2 EUR."},
        headers={"X-CSRF-Token": body["csrf_token"]},
    )
    assert r.status_code == 201, r.text
    path = tmp_path / "elsewhere" / "drafts.jsonl"
    assert r.json()["file"] == str(path)
    assert json.loads(path.read_text(encoding="utf-8").splitlines()[-1])["id"] == "gift-wrap"
    assert not (tmp_path / "var" / "faq-drafts.jsonl").exists()
    bank = load_bank(app.state.settings)  # what the next re-index reads
    assert bank.entries["gift-wrap"].answer == "Yes, for 2 EUR."
    page = c.get("/agent/unanswered")
    assert str(path) in page.text


def test_an_agent_can_be_disabled_from_the_command_line(
    app,  # noqa: ANN001
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from retrieval.cli import main

    c = client_at(app, "198.51.100.7")
    assert login(c, "bob")[0] == 200
    assert c.get("/agent/api/queue").status_code == 200
    assert main(["agents", "disable", "bob", "--data-dir", str(tmp_path / "var")]) == 0
    assert "agent 'bob' disabled" in capsys.readouterr().out
    assert c.get("/agent/api/queue").status_code == 401  # the session ended at once
    assert login(client_at(app, "198.51.100.8"), "bob")[0] == 401
    assert main(["agents", "list", "--data-dir", str(tmp_path / "var")]) == 0
    assert "bob\t" in (out := capsys.readouterr().out) and "disabled" in out
    assert main(["agents", "enable", "bob", "--data-dir", str(tmp_path / "var")]) == 0
    assert login(client_at(app, "198.51.100.9"), "bob")[0] == 200
    assert main(["agents", "disable", "nobody", "--data-dir", str(tmp_path / "var")]) == 2


def test_console_pages_say_the_database_is_down_in_a_page_that_names_no_server(
    app, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    """While the database cannot be used, a console page is a 503 HTML page with
    Retry-After, not a JSON body or the driver's text; a schema bug stays a 500."""
    from sqlalchemy.exc import OperationalError

    from retrieval.console import web

    def unreachable(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OperationalError("SELECT", {}, Exception("connection to db.internal refused"))

    monkeypatch.setattr(web, "session_for", unreachable)
    c = TestClient(app, raise_server_exceptions=False)  # the fixture's app, already started
    c.cookies.set(auth.COOKIE, "s" * 43, path="/agent")
    page = c.get("/agent/")
    assert page.status_code == 503 and page.headers["retry-after"] == "5"
    assert page.headers["content-type"].startswith("text/html")
    assert "cannot reach its database" in page.text and "db.internal" not in page.text

    def schema_bug(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OperationalError("SELECT", {}, Exception("no such table: agent_sessions"))

    monkeypatch.setattr(web, "session_for", schema_bug)
    assert c.get("/agent/").status_code == 500
