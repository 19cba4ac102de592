"""``retrieval serve`` as an operator runs it: a real server process on a free port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from helpers import DATA
from pg import free_port

pytestmark = [pytest.mark.models, pytest.mark.slow]


def test_serve_answers_health_once_ready_and_stops_cleanly(demo_data_dir: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "retrieval.cli",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(demo_data_dir),
        ],
        cwd=DATA.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    # one client for every poll: a new one per poll loads the CA bundle each time, CPU
    # taken from the server loading its models
    client = httpx.Client(base_url=base, timeout=10)
    try:
        deadline = time.monotonic() + 180
        health = None
        while time.monotonic() < deadline:
            try:
                health = client.get("/health", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.3)
        assert health is not None and health.status_code == 200
        assert health.json()["counts"]["products"] == 81
        r = client.post("/v1/query", json={"text": "how long does delivery take?"})
        assert r.json()["replies"][0]["id"] == "delivery-time"
        assert (
            r.json()["timings_ms"]["total"] < 1000
        )  # warm: the models were loaded before /health answered
    finally:
        client.close()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "retrieval service ready" in out
    assert "Traceback" not in out
