"""The API does what ``/openapi.json`` says: Schemathesis, with all its checks, against a
real ``retrieval serve`` process over a copy of the demo index.

Every route in the schema is fuzzed: ``/v1`` (query, products, images), ``/shop/api`` (the
chat and photo relay, with a stub Rasa server so the bot answers) and the console's
``/agent/api`` through a logged-in agent session, the cookie and ``X-CSRF-Token`` the schema
declares as security schemes (so the ``ignored_auth`` check also proves that the console
refuses requests without them). tests/openapi_hooks.py supplies the session, real photos
for the image media types, and drops generated filters with ``price_min`` above
``price_max``, a rule the schema states in words only. The run is seeded
(``--generation-deterministic``) and bounded (``--max-examples``); it must end with zero
failures.

One setting differs from Schemathesis's defaults, on purpose: a request that breaks the
schema may also be refused with 413, which this API documents for an over-long message,
reply or reason (``TooLarge``, a kind of ``InputError``) as well as for a body over its
limit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from helpers import ROOT
from pg import free_port

pytestmark = [pytest.mark.models, pytest.mark.slow]

AGENT, PASSWORD = "contract", "an agent's password for the contract test"
API_KEY = "contract-test-api-key"
MAX_EXAMPLES = 20
ST = Path(sys.executable).with_name("st")


class _StubRasa(BaseHTTPRequestHandler):
    """Rasa's REST channel, answering every message with one text."""

    def do_POST(self) -> None:  # noqa: N802 - the http.server name
        length = int(self.headers.get("content-length") or 0)
        sender = json.loads(self.rfile.read(length) or b"{}").get("sender", "")
        body = json.dumps([{"recipient_id": sender, "text": "Thanks, here is what I found."}])
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@dataclass(frozen=True)
class Served:
    base: str
    data_dir: Path
    database_url: str


@pytest.fixture()
def served(demo_index: Path, tmp_path: Path) -> Iterator[Served]:
    """``retrieval serve`` on a free port over a copy of the demo index, with an agent
    account made with the console's functions and a stub Rasa server."""
    from retrieval.console.auth import add_agent
    from retrieval.store import make_engine, migrate

    data_dir = tmp_path / "var"
    shutil.copytree(demo_index / "index", data_dir / "index")
    database_url = f"sqlite:///{(data_dir / 'retrieval.db').resolve()}"
    engine = make_engine(database_url)
    try:
        migrate(engine)
        add_agent(engine, AGENT, PASSWORD)
    finally:
        engine.dispose()
    rasa = ThreadingHTTPServer(("127.0.0.1", free_port()), _StubRasa)
    threading.Thread(target=rasa.serve_forever, daemon=True).start()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRIEVAL_")}
    env.update(
        PYTHONUNBUFFERED="1",
        RETRIEVAL_RASA_URL=f"http://127.0.0.1:{rasa.server_address[1]}",
        RETRIEVAL_API_KEY=API_KEY,
    )
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "retrieval.cli", "serve", "--port", str(port)]
        + ["--data-dir", str(data_dir)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "the service did not start in 180 s"
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        yield Served(base, data_dir, database_url)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        finally:
            log.close()
            rasa.shutdown()
            rasa.server_close()
    out = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in out, out[-5000:]


def _seed(base: str) -> None:
    """A question waiting for an agent, so the console's routes have one to find."""
    r = httpx.post(
        f"{base}/v1/query",
        json={"text": "can I talk to a real person please", "conversation_id": "contract-1"},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text


def test_schemathesis_finds_no_contract_failures(served: Served, tmp_path: Path) -> None:
    r = httpx.post(
        f"{served.base}/agent/api/login",
        json={"name": AGENT, "password": PASSWORD},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    session, csrf = r.cookies["agent_session"], r.json()["csrf_token"]
    _seed(served.base)
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        "[checks.negative_data_rejection]\n"
        'expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", '
        '"415", "422", "428", "429", "5xx"]\n'
    )
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "openapi_hooks",
        "PYTHONPATH": str(ROOT / "tests"),
        "OPENAPI_SESSION": session,
        "OPENAPI_CSRF": csrf,
        "OPENAPI_AGENT": AGENT,
        "OPENAPI_PASSWORD": PASSWORD,
        "OPENAPI_DATABASE_URL": served.database_url,
    }
    t0 = time.monotonic()
    run = subprocess.run(
        [str(ST), "--config-file", str(config), "--no-color", "run"]
        + [f"{served.base}/openapi.json", "--checks", "all"]
        + ["--max-examples", str(MAX_EXAMPLES), "--generation-deterministic", "--workers", "1"]
        + ["--request-timeout", "30"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    took = time.monotonic() - t0
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-20000:]
    assert not re.search(r"\d+ (failures?|errors?)\b", out), out[-20000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", out)
    assert counts and counts.group(1) == counts.group(2), out[-3000:]
    assert int(counts.group(1)) > 500, out[-3000:]  # every operation was exercised
    tested = re.search(r"Tested: (\d+)", out)
    assert tested and int(tested.group(1)) >= 20, out[-3000:]
    print(f"schemathesis: {counts.group(1)} test cases, no failures, in {took:.0f} s")
