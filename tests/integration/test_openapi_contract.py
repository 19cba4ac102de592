"""The API does what ``/openapi.json`` says: Schemathesis, with all its checks, against the
app ``retrieval serve`` runs (``create_app`` of the demo settings, under uvicorn on a real
socket, in this process so the models the session has loaded are shared) over a copy of the
demo index.

Every route in the schema is fuzzed: ``/v1`` (query, products, images), ``/shop/api`` (the
chat and photo relay, with a stub Rasa server so the bot answers) and the console's
``/agent/api`` through a logged-in agent session, the cookie and ``X-CSRF-Token`` the schema
declares as security schemes (so the ``ignored_auth`` check also proves that the console
refuses requests without them). tests/openapi_hooks.py supplies the session, real photos
for the image media types, and drops generated filters with ``price_min`` above
``price_max``, a rule the schema states in words only. The run is seeded
(``--generation-deterministic``) and bounded (``--max-examples``); it must end with zero
failures, every operation of the schema tested, and no traceback logged by the server.

One setting differs from Schemathesis's defaults, on purpose: a request that breaks the
schema may also be refused with 413, which this API documents for an over-long message,
reply or reason (``TooLarge``, a kind of ``InputError``) as well as for a body over its
limit.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import shutil
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

from helpers import ROOT, demo_settings
from pg import free_port

pytestmark = [pytest.mark.models, pytest.mark.slow]

AGENT, PASSWORD = "contract", "an agent's password for the contract test"
API_KEY = "contract-test-api-key"
MAX_EXAMPLES = 10  # per operation in the fuzzing phase; the coverage phase adds ~1000 cases
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


class _Tracebacks(logging.Handler):
    """Every log record that carries an exception (what a server process would print as a
    traceback)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


@pytest.fixture()
def served(demo_index: Path, tmp_path: Path) -> Iterator[Served]:
    """The served app over a copy of the demo index, with an agent account made with the
    console's functions and a stub Rasa server: ``create_app`` of the settings ``retrieval
    serve --data-dir`` builds, with its start-up (store, retriever, warm-up) and shut-down,
    under uvicorn on a free port in a thread of this process."""
    import torch
    import uvicorn

    from retrieval.console.auth import add_agent
    from retrieval.encoders.base import set_model_threads
    from retrieval.service import create_app
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
    settings = demo_settings(
        data_dir, rasa_url=f"http://127.0.0.1:{rasa.server_address[1]}", api_key=API_KEY
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=port,
            log_config=None,
            log_level="warning",
            access_log=False,
        )
    )
    tracebacks = _Tracebacks()
    root = logging.getLogger()
    root.addHandler(tracebacks)
    threads = torch.get_num_threads()  # the service's start-up sets torch's threads
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not server.started:
            assert thread.is_alive(), "the service stopped while starting"
            assert time.monotonic() < deadline, "the service did not start in 180 s"
            time.sleep(0.1)
        yield Served(base, data_dir, database_url)
    finally:
        server.should_exit = True
        thread.join(30)
        root.removeHandler(tracebacks)
        rasa.shutdown()
        rasa.server_close()
        # what the start-up changes process-wide, put back for the worker's next tests
        gc.unfreeze()
        set_model_threads(threads)
    assert not thread.is_alive(), "the service did not stop in 30 s"
    assert not tracebacks.records, [logging.Formatter().format(r) for r in tracebacks.records[:3]]


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
    total = re.search(r"Operations: +(\d+) selected / (\d+) total", out)
    tested = re.search(r"Tested: (\d+)", out)
    assert total and tested, out[-3000:]
    assert int(total.group(2)) >= 20 and tested.group(1) == total.group(1) == total.group(2), out
    print(f"schemathesis: {counts.group(1)} test cases, no failures, in {took:.0f} s")
