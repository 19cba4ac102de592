"""The mixed traffic of the fault and load suite (benchmarks/soak.py): shoppers through the
shop page's relay (English and Chinese messages, photos, the page's polling for agents'
replies), API callers of ``/v1/query``, and support agents working the console's queue.

Each kind of traffic arrives at a fixed rate (open loop: a slow server does not slow the
offered load down) and every request becomes an :class:`~soak_report.Outcome`. A shopper is
a cookie jar holding one conversation, with at most one message in flight, so the relay's
per-conversation limit (429) is never what a run measures.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from soak_report import Outcome

# One shopper's conversation, in order: follow-ups refer to the cards shown just before.
# Hand-offs ("bitcoin", "tyres", "a person") fill the agents' queue.
SCRIPT = (
    "how long does delivery take?",
    "do you have organic bananas",
    "how much is it?",
    "退款多久到账",
    "can I pay with bitcoin?",
    "有燕麦奶吗",
    "第二个有货吗",
    "do you sell car tyres?",
    "hello",
    "运费是多少",
    "how do I return something",
    "do you have oat milk",
    "is the second one in stock?",
    "我想和人工客服说话",
    "where is my order",
    "thanks",
)
API_QUESTIONS = (
    "how long does delivery take?",
    "can I pay with paypal",
    "do you have organic bananas?",
    "能用paypal付款吗",
    "what is your phone number",
)
TIMEOUT = httpx.Timeout(20.0, connect=3.0)


class Recorder:
    """Every outcome of the run, with times relative to :attr:`t0` (thread-safe)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self._lock = threading.Lock()
        self.outcomes: list[Outcome] = []
        self.skipped: dict[str, int] = {}

    def now(self) -> float:
        return time.monotonic() - self.t0

    def add(self, o: Outcome) -> None:
        with self._lock:
            self.outcomes.append(o)

    def skip(self, kind: str) -> None:
        with self._lock:
            self.skipped[kind] = self.skipped.get(kind, 0) + 1

    def since(self, t: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.start >= t]


def query_ids(body: Any) -> tuple[str, ...]:
    """The logged queries a response names: ``query_id`` of an API answer, or of the bot's
    custom payloads (answers, product cards, hand-offs) in a chat reply."""
    if not isinstance(body, dict):
        return ()
    if isinstance(body.get("query_id"), str):
        return (body["query_id"],)
    ids = []
    for m in body.get("messages") or ():
        custom = m.get("custom") if isinstance(m, dict) else None
        if isinstance(custom, dict) and isinstance(custom.get("query_id"), str):
            ids.append(custom["query_id"])
    return tuple(ids)


def timed(
    rec: Recorder,
    kind: str,
    op: str,
    send: Callable[[], httpx.Response],
    fine: tuple[int, ...] = (),
) -> httpx.Response | None:
    """Send one request and record its outcome; the response, or None when none came."""
    start = rec.now()
    try:
        r = send()
    except Exception as exc:  # noqa: BLE001 - every failure is a result here
        rec.add(Outcome(kind, op, start, rec.now(), None, type(exc).__name__))
        return None
    ok = 200 <= r.status_code < 300 or r.status_code in fine
    ids: tuple[str, ...] = ()
    if ok and r.headers.get("content-type", "").startswith("application/json"):
        with contextlib.suppress(ValueError):
            ids = query_ids(r.json())
    error = None if ok else f"HTTP {r.status_code}"
    rec.add(Outcome(kind, op, start, rec.now(), r.status_code, error, ids))
    return r


class Shopper:
    """One shop page: a cookie jar (its conversation), walking through :data:`SCRIPT`."""

    def __init__(self, base: str, offset: int):
        self.client = httpx.Client(base_url=base, timeout=TIMEOUT)
        self.busy = threading.Lock()
        self.turn = offset
        self.last_update = 0

    def next_message(self) -> str:
        text = SCRIPT[self.turn % len(SCRIPT)]
        self.turn += 1
        if self.turn % len(SCRIPT) == 0:
            self.client.cookies.clear()  # a new shopper: the page gets a new conversation
        return text

    def chat(self, rec: Recorder) -> None:
        text = self.next_message()
        timed(
            rec,
            "chat",
            "zh" if any(ord(c) > 0x2E80 for c in text) else "en",
            lambda: self.client.post("/shop/api/chat", json={"message": text}),
        )

    def photo(self, rec: Recorder, path: Path) -> None:
        data = path.read_bytes()
        timed(
            rec,
            "photo",
            "photo",
            lambda: self.client.post(
                "/shop/api/photo", files={"image": (path.name, data, "image/jpeg")}
            ),
        )

    def updates(self, rec: Recorder) -> None:
        r = timed(
            rec,
            "updates",
            "poll",
            lambda: self.client.get("/shop/api/updates", params={"after": self.last_update}),
        )
        if r is not None and r.status_code == 200:
            self.last_update = int(r.json().get("last") or self.last_update)


class Agent:
    """A support agent using the console's JSON API: read the queue, claim the oldest open
    question, and accept its first suggestion (or write a reply when it has none)."""

    def __init__(self, base: str, name: str, password: str, index: int):
        self.client = httpx.Client(base_url=base, timeout=TIMEOUT)
        self.name, self.password, self.index = name, password, index
        self.csrf: str | None = None

    def login(self, rec: Recorder) -> None:
        r = timed(
            rec,
            "console",
            "login",
            lambda: self.client.post(
                "/agent/api/login", json={"name": self.name, "password": self.password}
            ),
        )
        self.csrf = r.json()["csrf_token"] if r is not None and r.status_code == 200 else None

    def step(self, rec: Recorder) -> None:
        if self.csrf is None:
            self.login(rec)
            return
        r = timed(rec, "console", "queue", lambda: self.client.get("/agent/api/queue"))
        if r is None or r.status_code != 200:
            self.csrf = None if r is not None and r.status_code == 401 else self.csrf
            return
        waiting = [q for q in r.json()["questions"] if q["status"] == "open"]
        if not waiting:
            return
        qid = waiting[min(self.index, len(waiting) - 1)]["query_id"]
        headers = {"X-CSRF-Token": self.csrf}
        r = timed(
            rec,
            "console",
            "claim",
            lambda: self.client.post(f"/agent/api/questions/{qid}/claim", headers=headers),
        )
        if r is None or r.status_code != 200 or not r.json().get("claimed"):
            return
        q = r.json()
        body: dict[str, Any] = {
            "action": "write",
            "version": q["version"],
            "text": "Thanks for asking: a colleague checked this for you.",
        }
        if q.get("suggestions"):
            body = {
                "action": "accept",
                "version": q["version"],
                "candidate_id": q["suggestions"][0]["candidate_id"],
            }
        timed(
            rec,
            "console",
            "reply",
            lambda: self.client.post(
                f"/agent/api/questions/{qid}/reply", json=body, headers=headers
            ),
            fine=(409,),
        )


class Traffic:
    """Runs the traffic until :meth:`stop`: one thread per kind of arrival and per agent, and
    a pool that sends the requests. ``rates`` are per second; change them with :meth:`set_rate`."""

    def __init__(
        self,
        base: str,
        rec: Recorder,
        rates: dict[str, float],
        photos: list[Path],
        agents: list[tuple[str, str]],
        shoppers: int = 24,
        agent_interval: float = 2.0,
        seed: int = 23,
    ):
        self.base, self.rec, self.photos = base, rec, photos
        self.rates = dict(rates)
        self.shoppers = [Shopper(base, i * 5) for i in range(shoppers)]
        self.agents = [Agent(base, n, p, i) for i, (n, p) in enumerate(agents)]
        self.agent_interval = agent_interval
        self.api = httpx.Client(base_url=base, timeout=TIMEOUT)
        self.pool = ThreadPoolExecutor(max_workers=shoppers + 8, thread_name_prefix="soak")
        self._stop = threading.Event()
        self._rng = random.Random(seed)
        self._photo_cycle = itertools.cycle(photos)
        self._api_cycle = itertools.cycle(API_QUESTIONS)
        self._round_robin = itertools.count()
        self._threads: list[threading.Thread] = []

    def set_rate(self, kind: str, rate: float) -> None:
        self.rates[kind] = rate

    def start(self) -> None:
        for kind in ("chat", "photo", "updates", "api"):
            self._spawn(self._arrivals, kind)
        for agent in self.agents:
            self._spawn(self._agent_loop, agent)

    def _spawn(self, target: Callable[..., None], arg: Any) -> None:
        t = threading.Thread(target=target, args=(arg,), daemon=True)
        t.start()
        self._threads.append(t)

    def _arrivals(self, kind: str) -> None:
        while not self._stop.is_set():
            rate = self.rates.get(kind, 0.0)
            if rate <= 0:
                self._stop.wait(0.5)
                continue
            self._stop.wait(self._rng.uniform(0.8, 1.2) / rate)
            if not self._stop.is_set():
                self._dispatch(kind)

    def _dispatch(self, kind: str) -> None:
        if kind == "api":
            question = next(self._api_cycle)
            self.pool.submit(
                timed,
                self.rec,
                "api",
                "query",
                lambda: self.api.post("/v1/query", json={"text": question}),
            )
            return
        shopper = self._free_shopper()
        if shopper is None:
            self.rec.skip(kind)  # every shopper is waiting for an answer: the server is slow
            return
        self.pool.submit(self._as_shopper, shopper, kind)

    def _free_shopper(self) -> Shopper | None:
        start = next(self._round_robin)
        for i in range(len(self.shoppers)):
            s = self.shoppers[(start + i) % len(self.shoppers)]
            if s.busy.acquire(blocking=False):
                return s
        return None

    def _as_shopper(self, shopper: Shopper, kind: str) -> None:
        try:
            if kind == "chat":
                shopper.chat(self.rec)
            elif kind == "photo":
                shopper.photo(self.rec, next(self._photo_cycle))
            else:
                shopper.updates(self.rec)
        finally:
            shopper.busy.release()

    def _agent_loop(self, agent: Agent) -> None:
        while not self._stop.wait(self.agent_interval):
            start = self.rec.now()
            try:
                agent.step(self.rec)
            except Exception as exc:  # noqa: BLE001 - an odd answer must not end the agent
                # (a 200 that is not the JSON the console documents): recorded as a failure
                self.rec.add(
                    Outcome("console", "step", start, self.rec.now(), None, type(exc).__name__)
                )

    def stop(self) -> None:
        """Stop new arrivals and wait for the requests in flight."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        self.pool.shutdown(wait=True)
        for c in [self.api, *(s.client for s in self.shoppers), *(a.client for a in self.agents)]:
            c.close()
