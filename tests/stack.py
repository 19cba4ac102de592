"""The whole demo started the way a user starts it (the launcher behind scripts/start.sh):
the real retrieval service and the real Rasa server on free local ports."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from PIL import Image, ImageFilter

from helpers import ROOT, CLIRun, run_cli
from pg import free_port

RASA = ROOT / ".venv-rasa" / "bin" / "rasa"
RASA_ENV = {**os.environ, "RASA_TELEMETRY_ENABLED": "false"}


def trained_bot() -> Path:
    out = subprocess.run(
        [str(ROOT / "scripts" / "setup-bot.sh")], capture_output=True, text=True, timeout=1800
    )
    assert out.returncode == 0, out.stderr
    return ROOT / out.stdout.strip().splitlines()[-1]


@dataclass
class Stack:
    """A running demo: ``base`` is the shop page and API, ``rasa`` the Rasa server."""

    proc: subprocess.Popen
    base: str
    rasa: str
    data_dir: Path
    started_s: float
    lines: list[str] = field(default_factory=list)

    def say(self, sender: str, message: str) -> dict:
        """One message through Rasa's REST channel; its text and custom payload merged."""
        r = httpx.post(
            f"{self.rasa}/webhooks/rest/webhook",
            json={"sender": sender, "message": message},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        merged: dict = {}
        for m in r.json():
            merged.update({k: v for k, v in m.items() if k != "recipient_id"})
        return merged

    def children_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def rasa_token(self) -> str:
        """The token of Rasa's HTTP API, which the launcher gives its children in their
        environment only (never on a command line)."""
        for pid in self.children_pids():
            for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                if item.startswith(b"RETRIEVAL_RASA_TOKEN="):
                    return item.split(b"=", 1)[1].decode()
        raise AssertionError("the launcher passed no Rasa token")


def start_stack(data_dir: Path, model: Path, timeout: float = 300) -> Stack:
    port, rasa_port = free_port(), free_port()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "retrieval.launcher",
            "--port",
            str(port),
            "--rasa-port",
            str(rasa_port),
            "--rasa-model",
            str(model),
            "--data-dir",
            str(data_dir),
        ],
        cwd=ROOT,
        env=RASA_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    stack = Stack(proc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{rasa_port}", data_dir, 0.0)
    threading.Thread(
        target=lambda: stack.lines.extend(iter(proc.stdout.readline, "")), daemon=True
    ).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any("/shop/ to chat" in line for line in list(stack.lines)):
            stack.started_s = time.monotonic() - t0
            return stack
        assert proc.poll() is None, "the launcher exited:\n" + "".join(stack.lines)
        time.sleep(0.2)
    proc.kill()
    raise TimeoutError("the demo did not start:\n" + "".join(stack.lines))


def stop_stack(stack: Stack) -> tuple[int, list[int]]:
    """Ctrl-C the launcher; returns its exit code and the children still alive after it."""
    children = stack.children_pids()
    stack.proc.send_signal(signal.SIGINT)
    try:
        code = stack.proc.wait(60)
    except subprocess.TimeoutExpired:
        stack.proc.kill()
        code = -9
    alive = []
    for pid in children:
        try:
            os.kill(pid, 0)
            alive.append(pid)
        except ProcessLookupError:
            pass
    return code, alive


# ---- what a shopper and an agent do on the running stack --------------------------------
PASSWORD = "correct horse battery staple"


def add_agent(stack: Stack, name: str, password: str = PASSWORD) -> CLIRun:
    """``retrieval agents add NAME`` on the stack's data dir, the password on stdin."""
    return run_cli(
        "agents",
        "add",
        name,
        stdin=password + "\n",
        env={"RETRIEVAL_DATA_DIR": str(stack.data_dir)},
    )


def banana_photo() -> bytes:
    """A shopper-style photo: the catalog's banana picture cropped, turned and re-encoded."""
    img = Image.open(ROOT / "data" / "catalog" / "images" / "Banana.jpg").convert("RGB")
    w, h = img.size
    img = img.crop((w // 8, h // 10, w - w // 10, h - h // 8)).rotate(12, fillcolor=(235, 230, 220))
    buf = io.BytesIO()
    img.resize((480, 480)).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def blurry_banana_photo() -> bytes:
    """A photo too blurred to be sure of: the catalog's banana under a heavy blur. The demo
    matches it below its calibrated sure level (about 0.36 against 0.45), so the bot asks
    "is it one of these?"."""
    img = Image.open(ROOT / "data" / "catalog" / "images" / "Banana.jpg").convert("RGB")
    img = img.filter(ImageFilter.GaussianBlur(20)).resize((480, 480))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return buf.getvalue()


# headless Chromium (Debian's) for the browser tests
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def ask(page, text: str) -> None:  # noqa: ANN001
    """Type ``text`` in the shop page's chat and wait for the bot's reply."""
    before = page.locator("#messages .msg.bot").count()
    page.fill("#message", text)
    page.click("#send")
    page.wait_for_function(
        "n => document.querySelectorAll('#messages .msg.bot').length > n",
        arg=before,
        timeout=30_000,
    )
    page.wait_for_function("() => !document.getElementById('send').disabled", timeout=30_000)
