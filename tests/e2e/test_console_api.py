"""The agent console's API and pages on the real demo stack (launcher, retrieval service,
Rasa with its HTTP API, SQLite): accounts made with the CLI, every action, the shopper's
chat window and the Rasa tracker receiving the reply, authorisation failures, bad input,
escaping, and two agents racing for one question."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from retrieval.service.shop import COOKIE

from helpers import run_cli
from stack import PASSWORD, Stack, add_agent

pytestmark = [pytest.mark.slow, pytest.mark.models]


class Agent:
    """An agent's browser-like client: session cookie and CSRF token."""

    def __init__(self, stack: Stack, name: str):
        self.client = httpx.Client(base_url=stack.base, timeout=30)
        r = self.client.post("/agent/api/login", json={"name": name, "password": PASSWORD})
        assert r.status_code == 200, r.text
        self.csrf = r.json()["csrf_token"]
        self.name = name

    def post(self, url: str, body: dict) -> httpx.Response:
        return self.client.post(url, json=body, headers={"X-CSRF-Token": self.csrf})

    def claim(self, query_id: str) -> dict:
        """Open a question to answer it (a POST: reading one claims nothing)."""
        r = self.post(f"/agent/api/questions/{query_id}/claim", {})
        assert r.status_code == 200, r.text
        return r.json()


class Shopper:
    def __init__(self, stack: Stack):
        self.client = httpx.Client(base_url=stack.base, timeout=30)

    def say(self, text: str) -> dict:
        r = self.client.post("/shop/api/chat", json={"message": text})
        assert r.status_code == 200, r.text
        return r.json()

    @property
    def conversation(self) -> str:
        return self.client.cookies[COOKIE]

    def updates(self, after: int = 0) -> dict:
        r = self.client.get(f"/shop/api/updates?after={after}")
        assert r.status_code == 200, r.text
        return r.json()


def waiting_question(agent: Agent, conversation: str, timeout: float = 10) -> dict:
    """The queue entry of a conversation (the query log writes in batches)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = agent.client.get("/agent/api/queue")
        assert r.status_code == 200, r.text
        mine = [q for q in r.json()["questions"] if q["conversation_id"] == conversation]
        if mine:
            return mine[0]
        time.sleep(0.3)
    raise AssertionError(f"conversation {conversation} never reached the queue")


def rasa_token(stack: Stack) -> str:
    for pid in stack.children_pids():
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        for item in env:
            if item.startswith(b"RETRIEVAL_RASA_TOKEN="):
                return item.split(b"=", 1)[1].decode()
    raise AssertionError("the launcher passed no Rasa token")


def handoff(stack: Stack, agent: Agent, text: str) -> tuple[Shopper, dict]:
    shopper = Shopper(stack)
    shopper.say(text)
    return shopper, waiting_question(agent, shopper.conversation)


def test_cli_refuses_short_passwords_and_duplicates(stack: Stack, agents: list[str]) -> None:
    made = add_agent(stack, "carol")
    assert made.returncode == 0 and "agent 'carol' created" in made.stdout, made.stderr
    short = add_agent(stack, "dave", "short")
    assert short.returncode == 2 and "too short" in short.stderr
    dup = add_agent(stack, "alice")
    assert dup.returncode == 2 and "already exists" in dup.stderr
    r = httpx.post(
        f"{stack.base}/agent/api/login", json={"name": "alice", "password": "wrong one!"}
    )
    assert r.status_code == 401 and r.json()["detail"] == "wrong name or password"


def test_password_guessing_locks_the_account_for_that_address(
    stack: Stack, agents: list[str]
) -> None:
    made = add_agent(stack, "erin")
    assert made.returncode == 0, made.stderr
    for _ in range(5):
        r = httpx.post(f"{stack.base}/agent/api/login", json={"name": "erin", "password": "guess!"})
        assert r.status_code == 401 and r.json()["detail"] == "wrong name or password"
    r = httpx.post(f"{stack.base}/agent/api/login", json={"name": "erin", "password": PASSWORD})
    assert r.status_code == 401 and "too many failed logins" in r.json()["detail"], r.text
    # the other agents still log in (other addresses could log in as erin: tests of the
    # per-address rules are in test_console_security.py)
    assert Agent(stack, "alice").client.get("/agent/api/queue").status_code == 200
    # disabling an account from the command line ends its sessions at once
    carol = Agent(stack, "carol")
    assert carol.client.get("/agent/api/queue").status_code == 200
    out = run_cli("agents", "disable", "carol", env={"RETRIEVAL_DATA_DIR": str(stack.data_dir)})
    assert out.returncode == 0 and "disabled" in out.stdout, out.stderr
    assert carol.client.get("/agent/api/queue").status_code == 401


def test_anonymous_and_shoppers_cannot_reach_the_console(stack: Stack, agents: list[str]) -> None:
    shopper = Shopper(stack)
    shopper.say("hello")
    for client in (httpx.Client(base_url=stack.base), shopper.client):
        for url in ("/agent/", "/agent/audit", "/agent/numbers", "/agent/unanswered"):
            r = client.get(url)
            assert r.status_code == 401 and "log in" in r.text.lower(), url
        for url in ("/agent/api/queue", "/agent/api/numbers", "/agent/api/audit"):
            r = client.get(url)
            assert r.status_code == 401 and r.json()["error"] == "NotLoggedIn", url
        r = client.post("/agent/api/questions/x/reply", json={"action": "write", "text": "hi"})
        assert r.status_code == 401
    # an agent's request without the CSRF token changes nothing
    alice = Agent(stack, "alice")
    r = alice.client.post("/agent/api/questions/x/reply", json={"action": "write", "version": 1})
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
    # the shopper's update feed takes no conversation id: only the cookie's is read
    r = shopper.client.get("/shop/api/updates", params={"after": 0, "conversation_id": "x" * 20})
    assert r.json()["messages"] == []


def test_reply_reaches_the_chat_window_and_the_rasa_tracker(
    stack: Stack, agents: list[str]
) -> None:
    alice = Agent(stack, "alice")
    shopper, item = handoff(stack, alice, "I want to talk to a human")
    assert item["decision"] == "handoff" and item["status"] == "open"
    assert alice.client.get(f"/agent/api/questions/{item['query_id']}").json()["status"] == "open"
    q = alice.claim(item["query_id"])
    assert q["status"] == "claimed" and q["claimed_by"] == "alice" and q["claimed"] is True
    assert any(t["who"] == "shopper" for t in q["conversation"])
    r = alice.post(
        f"/agent/api/questions/{item['query_id']}/reply",
        {"action": "write", "version": q["version"], "text": "Hi, Alice here. How can I help?"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["shown_to_shopper"] and body["rasa_tracker"] is True, body
    updates = shopper.updates()
    assert [m["text"] for m in updates["messages"]] == ["Hi, Alice here. How can I help?"]
    assert updates["messages"][0]["agent"] == "Support"  # never the agent's login name
    assert shopper.updates(updates["last"])["messages"] == []
    tracker = httpx.get(
        f"{stack.rasa}/conversations/{shopper.conversation}/tracker",
        params={"token": rasa_token(stack)},
    ).json()
    bots = [e for e in tracker["events"] if e["event"] == "bot"]
    assert bots[-1]["text"] == "Hi, Alice here. How can I help?"
    assert bots[-1]["metadata"]["agent"] == "alice"
    # the bot still answers the conversation afterwards
    assert shopper.say("thanks")["messages"]
    # the question left the queue, and a second reply is refused
    queue = alice.client.get("/agent/api/queue").json()["questions"]
    assert item["query_id"] not in [x["query_id"] for x in queue]
    again = alice.post(
        f"/agent/api/questions/{item['query_id']}/reply",
        {"action": "write", "version": q["version"], "text": "twice?"},
    )
    assert again.status_code == 409 and "already answered" in again.json()["detail"]
    assert len(shopper.updates()["messages"]) == 1


def test_accept_edit_and_reject_suggestions(stack: Stack, agents: list[str]) -> None:
    alice = Agent(stack, "alice")
    seen = {}
    for text in (
        "do you deliver on public holidays and is there a surcharge for it?",
        "can someone else receive my delivery for me?",
        "please connect me to a real person",
    ):
        shopper, item = handoff(stack, alice, text)
        q = alice.client.get(f"/agent/api/questions/{item['query_id']}").json()
        seen[text] = (shopper, q)
    with_suggestions = [(s, q) for s, q in seen.values() if q["suggestions"]]
    assert len(with_suggestions) >= 2, [q["decision"] for _, q in seen.values()]
    (s1, q1), (s2, q2) = with_suggestions[:2]
    top = q1["suggestions"][0]
    r = alice.post(
        f"/agent/api/questions/{q1['query_id']}/reply",
        {"action": "accept", "version": q1["version"], "candidate_id": top["candidate_id"]},
    )
    assert r.status_code == 200 and r.json()["action"] == "accept"
    assert s1.updates()["messages"][0]["text"] == top["answer"]
    top2 = q2["suggestions"][0]
    r = alice.post(
        f"/agent/api/questions/{q2['query_id']}/reply",
        {
            "action": "edit",
            "version": q2["version"],
            "candidate_id": top2["candidate_id"],
            "text": top2["answer"] + " (Alice)",
        },
    )
    assert r.status_code == 200 and r.json()["action"] == "edit"
    assert s2.updates()["messages"][0]["text"].endswith("(Alice)")
    # a suggestion of another question is refused
    s3, q3 = list(seen.values())[2]
    r = alice.post(
        f"/agent/api/questions/{q3['query_id']}/reply",
        {"action": "accept", "version": q3["version"], "candidate_id": top["candidate_id"]},
    )
    assert r.status_code == 422 and "does not belong" in r.json()["detail"]
    r = alice.post(
        f"/agent/api/questions/{q3['query_id']}/reject",
        {"version": q3["version"], "reason": "none of these fit"},
    )
    assert r.status_code == 200 and r.json()["shown_to_shopper"] is False
    assert s3.updates()["messages"] == []
    n = alice.client.get("/agent/api/numbers").json()["total"]
    assert n["decided"] >= 2 and n["accepted"] >= 1 and n["edited"] >= 1
    assert 0 < n["acceptance_rate"] < 1 and n["handoff_rate"] > 0


def test_bad_input_gets_clear_messages(stack: Stack, agents: list[str]) -> None:
    alice = Agent(stack, "alice")
    shopper, item = handoff(stack, alice, "please connect me to a real person")
    url = f"/agent/api/questions/{item['query_id']}/reply"
    q = alice.client.get(f"/agent/api/questions/{item['query_id']}").json()
    r = alice.post(url, {"action": "write", "version": q["version"], "text": "   "})
    assert r.status_code == 422 and "empty" in r.json()["detail"]
    r = alice.post(url, {"action": "write", "version": q["version"], "text": "x" * 50_000})
    assert r.status_code == 413 and "50,000 characters" in r.json()["detail"]
    r = alice.post(url, {"action": "write", "version": q["version"] - 1, "text": "old form"})
    assert r.status_code == 409 and "reload" in r.json()["detail"]
    r = alice.post(
        "/agent/api/questions/00000000-0000-0000-0000-000000000000/reply",
        {"action": "write", "version": 1, "text": "hello?"},
    )
    assert r.status_code == 404 and "no longer exists" not in r.text and "no question" in r.text
    r = alice.post(url, {"action": "shout", "version": q["version"], "text": "x"})
    assert r.status_code == 422 and "unknown action" in r.json()["detail"]
    assert shopper.updates()["messages"] == []  # nothing reached the shopper
    # a stale page (an old version) submitting the HTML form gets a 409 page
    page = alice.client.post(
        f"/agent/questions/{item['query_id']}/act",
        data={
            "csrf": alice.csrf,
            "version": str(q["version"] - 1),
            "action": "write",
            "text": "from an old tab",
        },
    )
    assert page.status_code == 409 and "reload the page" in page.text
    # an expired session
    db = sqlite3.connect(stack.data_dir / "retrieval.db", timeout=30)
    with db:
        db.execute("UPDATE agent_sessions SET expires_at = '2000-01-01 00:00:00.000000'")
    db.close()
    r = alice.client.get("/agent/api/queue")
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    r = alice.client.get("/agent/")  # the expired session was deleted when seen
    assert r.status_code == 401 and "log in" in r.text


def test_shopper_html_is_shown_as_text(stack: Stack, agents: list[str]) -> None:
    alice = Agent(stack, "alice")
    text = "<script>alert('x')</script><b>talk to a human</b>"
    _, item = handoff(stack, alice, text)
    page = alice.client.get(f"/agent/questions/{item['query_id']}")
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "&lt;script&gt;alert(" in page.text
    assert "script-src 'none'" in page.headers["content-security-policy"]
    queue = alice.client.get("/agent/")
    assert "<b>talk" not in queue.text and "&lt;b&gt;talk to a human&lt;/b&gt;" in queue.text


def test_two_agents_race_one_wins(stack: Stack, agents: list[str]) -> None:
    alice, bob = Agent(stack, "alice"), Agent(stack, "bob")
    shopper, item = handoff(stack, alice, "I want to talk to a human")
    qid = item["query_id"]
    version = alice.client.get(f"/agent/api/questions/{qid}").json()["version"]
    results: dict[str, httpx.Response] = {}
    barrier = threading.Barrier(2)

    def send(agent: Agent) -> None:
        barrier.wait()
        results[agent.name] = agent.post(
            f"/agent/api/questions/{qid}/reply",
            {"action": "write", "version": version, "text": f"{agent.name} will help you"},
        )

    threads = [threading.Thread(target=send, args=(a,)) for a in (alice, bob)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results.values())
    assert codes == [200, 409], {k: v.text for k, v in results.items()}
    winner = next(k for k, v in results.items() if v.status_code == 200)
    loser = next(v for v in results.values() if v.status_code == 409)
    assert f"{winner} already answered" in loser.json()["detail"]
    messages = shopper.updates()["messages"]
    assert [m["text"] for m in messages] == [f"{winner} will help you"]
    # a claimed question: the other agent is told who is on it
    shopper2, item2 = handoff(stack, alice, "please connect me to a real person")
    q = alice.claim(item2["query_id"])
    assert bob.claim(item2["query_id"])["claimed"] is False
    r = bob.post(
        f"/agent/api/questions/{item2['query_id']}/reply",
        {"action": "write", "version": q["version"], "text": "bob here"},
    )
    assert r.status_code == 409 and "alice is answering" in r.json()["detail"]
    assert shopper2.updates()["messages"] == []


def test_audit_flags_and_unanswered_clusters_to_drafts(stack: Stack, agents: list[str]) -> None:
    alice = Agent(stack, "alice")
    shopper = Shopper(stack)
    shopper.say("how long does delivery take?")
    time.sleep(1.2)  # the query log writes in batches
    today = time.strftime("%Y-%m-%d", time.gmtime())
    audit = alice.client.get(f"/agent/api/audit?from={today}&to={today}&decision=answer").json()
    mine = [q for q in audit["queries"] if q["conversation_id"] == shopper.conversation]
    assert mine and mine[0]["top_faq"] == "delivery-time"
    assert alice.client.get("/agent/api/audit?from=yesterday").status_code == 422
    r = alice.post(f"/agent/api/queries/{mine[0]['query_id']}/flag", {"reason": "too vague"})
    assert r.status_code == 200
    r = alice.post(f"/agent/api/queries/{mine[0]['query_id']}/flag", {"reason": "again"})
    assert r.status_code == 409
    entries = alice.client.get("/agent/api/numbers").json()["entries"]
    assert any(e["faq_id"] == "delivery-time" and e["flagged"] >= 1 for e in entries)

    # Chinese questions the agents rejected group together (out of the shop's scope, so the
    # bot hands them over)
    for text in ("你们能帮我修电脑吗", "你们能不能帮我修一下电脑"):
        _, item = handoff(stack, alice, text)
        q = alice.client.get(f"/agent/api/questions/{item['query_id']}").json()
        r = alice.post(f"/agent/api/questions/{item['query_id']}/reject", {"version": q["version"]})
        assert r.status_code == 200
    clusters = alice.client.get("/agent/api/unanswered").json()["clusters"]
    customs = [c for c in clusters if any("电脑" in e for e in c["examples"])]
    assert len(customs) == 1 and customs[0]["size"] == 2 and customs[0]["lang"] == "zh"
    draft = {
        "id": "computer-repair",
        "question": customs[0]["examples"][0],
        "answer": "抱歉，我们只销售食品杂货，不提供电脑维修服务。",
        "examples": customs[0]["examples"][1:],
        "lang": "zh",
        "query_ids": customs[0]["query_ids"],
    }
    r = alice.post("/agent/api/drafts", draft)
    assert r.status_code == 201, r.text
    lines = (stack.data_dir / "faq-drafts.jsonl").read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[-1])
    assert (
        record["id"] == "computer-repair" and record["lang"] == "zh" and "电脑" in record["answer"]
    )
    assert set(record) >= {"id", "question", "answer", "examples", "lang"}
    assert alice.post("/agent/api/drafts", draft).status_code == 409
    r = alice.post("/agent/api/drafts", {**draft, "id": "delivery-time"})
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    r = alice.post("/agent/api/drafts", {**draft, "id": "x2", "answer": ""})
    assert r.status_code == 422
    page = alice.client.get("/agent/numbers")
    assert page.status_code == 200 and "<svg" in page.text and "Acceptance" in page.text
