"""The processes the fault and load suite (benchmarks/soak.py) runs and breaks: a private
PostgreSQL server, the retrieval service, the Rasa server, the spool's tmpfs, the data copy
it re-indexes, and the operator commands (``retrieval reindex``, ``retrieval agents add``).

Everything lives in one temporary folder; :class:`Stack` undoes what it did, in reverse
order, from :meth:`Stack.close`, whatever state the run stopped in.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

from retrieval.errors import ConfigError
from retrieval.launcher import Child, rasa_command, write_endpoints
from retrieval.localpg import LocalPostgres

ROOT = Path(__file__).resolve().parent.parent
FILL_NAME = "soak-fill.bin"


def say(message: str) -> None:
    """A progress line (on stderr: stdout holds the report)."""
    sys.stderr.write(f"soak: {message}\n")
    sys.stderr.flush()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerExited(RuntimeError):
    pass


def wait_until(check: Callable[[], bool], timeout: float, what: str, poll: float = 0.2) -> float:
    """Poll ``check`` until it is true; returns the seconds it took (TimeoutError after).
    A :class:`RuntimeError` from ``check`` (the server exited, the run stops) ends the wait."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if check():
                return time.monotonic() - t0
        except RuntimeError:
            raise
        except Exception:  # noqa: BLE001 - not answering yet
            pass
        time.sleep(poll)
    raise TimeoutError(f"{what} was not ready within {timeout:.0f} s")


def http_ok(url: str) -> bool:
    return httpx.get(url, timeout=2.0).status_code == 200


class Postgres(LocalPostgres):
    """A private cluster in ``root`` (retrieval/localpg.py: Debian's binaries, a Unix socket
    in a 0700 folder only, as 'postgres' when run by root); fsync off."""

    def __init__(self, root: Path):
        super().__init__(root, settings={"fsync": "off"}, port=free_port())


def mount_tmpfs(path: Path, size_mb: int) -> str | None:
    """Mount a tmpfs of ``size_mb`` on ``path``; None when done, else why it could not be."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return "not running as root"
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    return None if r.returncode == 0 else (r.stderr.strip() or f"mount exited {r.returncode}")


def umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill_disk(folder: Path) -> int:
    """Write one file into ``folder`` until its file system is full; returns its size."""
    chunk = b"\0" * (1 << 20)
    fd = os.open(folder / FILL_NAME, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    written = 0
    try:
        while True:
            try:
                n = os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
            if n == 0:
                break
            written += n
    finally:
        os.close(fd)
    return written


def bump_faq(text: str, revision: int) -> str:
    """The FAQ bank (YAML) with one English entry's answer changed: revision n edits entry
    n mod (number of English entries), so each re-index has a real change to publish."""
    data = yaml.safe_load(text)
    english = [e for e in data["entries"] if e.get("lang", "en") == "en"]
    entry = english[revision % len(english)]
    base = re.sub(r" \[rev \d+\]$", "", entry["answer"])
    entry["answer"] = f"{base} [rev {revision}]"
    return str(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))


def bump_catalog(text: str, revision: int) -> str:
    """The catalog (JSONL) with one product's price raised by a cent per revision: a change of
    the served records that needs no encoding."""
    lines = text.splitlines()
    rows = [i for i, line in enumerate(lines) if line.strip()]
    i = rows[revision % len(rows)]
    product = json.loads(lines[i])
    product["price"] = round(float(product["price"]) + 0.01, 2)
    lines[i] = json.dumps(product, ensure_ascii=False)
    return "\n".join(lines) + "\n"


def trained_bot() -> Path:
    """The trained Rasa bot, as scripts/setup-bot.sh names it (training it when needed)."""
    out = subprocess.run(
        [str(ROOT / "scripts" / "setup-bot.sh")], capture_output=True, text=True, check=True
    )
    return ROOT / out.stdout.strip().splitlines()[-1]


class Stack:
    """The temporary folder and everything started in it."""

    def __init__(self, tmp: Path, *, spool_mb: int, rasa_model: Path):
        self.tmp = tmp
        os.chmod(tmp, 0o711)  # PostgreSQL (as 'postgres') must reach its own folder in here
        self.var = tmp / "var"
        self.data = tmp / "data"
        self.logs = tmp / "logs"
        self.spool = self.var / "spool"
        self.spool_mb = spool_mb
        self.rasa_model = rasa_model
        self.port, self.rasa_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.rasa_url = f"http://127.0.0.1:{self.rasa_port}"
        self.pg: Postgres | None = None
        self.service: Child | None = None
        self.service_ready = threading.Event()  # set once /ready answers, cleared by a kill
        self.rasa: Child | None = None
        self.tmpfs = False
        self.tmpfs_problem: str | None = None
        self.closing = threading.Event()  # set by close(): no server may start after it
        self.env: dict[str, str] = {}

    # ---- set-up ------------------------------------------------------------------------
    def prepare(self) -> None:
        """Copy the demo sources (and the demo index, if built), start PostgreSQL, and mount
        the spool's tmpfs (``tmpfs_problem`` says why not, when it cannot be)."""
        self.logs.mkdir(parents=True)
        self.var.mkdir(mode=0o700)
        for part in ("catalog", "faq"):
            shutil.copytree(ROOT / "data" / part, self.data / part)
        if (ROOT / "var" / "index" / "faq" / "CURRENT").exists():
            shutil.copytree(ROOT / "var" / "index", self.var / "index")
        self.pg = Postgres(self.tmp / "pg")
        self.pg.start()
        self.env = self._environment()
        self.tmpfs_problem = mount_tmpfs(self.spool, self.spool_mb)
        self.tmpfs = self.tmpfs_problem is None

    def _environment(self) -> dict[str, str]:
        assert self.pg is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("RETRIEVAL_")}
        env.update(
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
            RASA_TELEMETRY_ENABLED="false",
            RETRIEVAL_DATA_DIR=str(self.var),
            RETRIEVAL_DATABASE_URL=self.pg.url,
            RETRIEVAL_CATALOG_PATH=str(self.data / "catalog" / "products.jsonl"),
            RETRIEVAL_FAQ_PATH=str(self.data / "faq" / "faq.yaml"),
            RETRIEVAL_FAQ_CALIBRATION_PATH=str(self.data / "faq" / "calibration.jsonl"),
            RETRIEVAL_RASA_URL=self.rasa_url,
            RETRIEVAL_RASA_TOKEN=secrets.token_hex(32),
            RETRIEVAL_WEBHOOK_TOKEN=secrets.token_hex(32),
        )
        return env

    def cli(
        self, args: list[str], log_name: str, *, stdin: str = "", timeout: float = 600
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``retrieval ARGS`` as an operator would, output appended to a log file."""
        with (self.logs / log_name).open("ab") as log:
            return subprocess.run(
                [sys.executable, "-m", "retrieval.cli", *args],
                input=stdin.encode(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.tmp,
                timeout=timeout,
            )

    def start_reindex(self) -> subprocess.Popen[bytes]:
        """``retrieval reindex --wait`` as cron would run it (interruptible with SIGINT)."""
        log = (self.logs / "reindex.log").open("ab")
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "retrieval.cli", "reindex", "--wait", "--no-progress"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.tmp,
            )
        finally:
            log.close()  # the child holds its own copy

    def index_sources(self) -> None:
        """Publish indexes for the copied sources: a re-index over the copied demo index
        (only the records' paths changed), or a first ingest when there was none."""
        cmd = ["reindex", "--wait", "--no-progress"]
        if not (self.var / "index" / "faq" / "CURRENT").exists():
            cmd = ["ingest", "--no-progress"]
        if self.cli(cmd, "reindex.log").returncode != 0:
            raise RuntimeError(f"`retrieval {cmd[0]}` failed; see {self.logs / 'reindex.log'}")

    def add_agent(self, name: str, password: str) -> None:
        if self.cli(["agents", "add", name], "agents.log", stdin=password + "\n").returncode:
            raise RuntimeError(f"`retrieval agents add {name}` failed")

    # ---- the two servers ---------------------------------------------------------------
    def start_service(self, timeout: float = 300) -> float:
        self._not_closing()
        argv = [
            sys.executable,
            "-m",
            "retrieval.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.service = Child(
            "retrieval service", argv, self.logs / "retrieval.log", env=self.env, cwd=self.tmp
        )
        took = wait_until(
            lambda: self._up(self.service, f"{self.base}/ready"), timeout, "the retrieval service"
        )
        self.service_ready.set()
        return took

    def start_rasa(self, timeout: float = 300, *, wait: bool = True) -> float:
        self._not_closing()
        endpoints = self.tmp / "endpoints.yml"
        write_endpoints(endpoints, self.port)
        argv = rasa_command(
            ROOT / ".venv-rasa" / "bin" / "rasa",
            self.rasa_model,
            self.rasa_port,
            endpoints,
            ROOT / "bot" / "credentials.yml",
        )
        self.rasa = Child(
            "Rasa server", argv, self.logs / "rasa.log", env=self.env, cwd=ROOT / "bot"
        )
        return self.wait_rasa(timeout) if wait else 0.0

    def wait_rasa(self, timeout: float = 300) -> float:
        return wait_until(
            lambda: self._up(self.rasa, f"{self.rasa_url}/"), timeout, "the Rasa server"
        )

    def _not_closing(self) -> None:
        if self.closing.is_set():
            raise RuntimeError("the run is stopping: no server is started any more")

    def _up(self, child: Child | None, url: str) -> bool:
        """Whether the server answers ``url``; an error when it exited or the run stops."""
        self._not_closing()
        if child is None or not child.alive():
            raise ServerExited(f"{child.name if child else 'a server'} exited; see its log")
        return http_ok(url)

    def kill(self, child: Child | None) -> None:
        """SIGKILL, as a crash or the kernel's OOM killer would."""
        if child is self.service:
            self.service_ready.clear()
        if child is not None and child.alive():
            child.proc.send_signal(signal.SIGKILL)
            child.proc.wait()
        if child is not None:
            child.stop()  # closes its log file; the process is gone already

    def service_pid(self) -> int | None:
        """The service's process id while it is up and ready (not while it starts)."""
        s = self.service
        ready = self.service_ready.is_set()
        return s.proc.pid if s is not None and ready and s.alive() else None

    def stop_service(self) -> None:
        """A clean stop (SIGINT): the service writes its queued query records first."""
        self._stop_service()

    def _stop_service(self) -> None:
        self.service_ready.clear()
        if self.service is not None:
            self.service.stop(timeout=60)

    def _stop_rasa(self) -> None:
        if self.rasa is not None:
            self.rasa.stop(timeout=30)

    def _stop_pg(self) -> None:
        if self.pg is not None and self.pg.running():
            try:
                self.pg.stop("fast")
            except (ConfigError, subprocess.SubprocessError, OSError):
                with contextlib.suppress(ConfigError, subprocess.SubprocessError, OSError):
                    self.pg.stop("immediate")

    def spool_leftovers(self) -> dict[str, str]:
        """Files still in the spool after the clean stop, by suffix (.jsonl: records not yet
        written; .rejected, .corrupt: set aside; .tmp: a spool write that failed half-way)."""
        out: dict[str, list[int]] = {}
        for f in self.spool.glob("*.*"):
            if f.suffix in (".jsonl", ".rejected", ".corrupt", ".tmp"):
                with contextlib.suppress(OSError):
                    files_lines = out.setdefault(f.suffix, [0, 0])
                    files_lines[0] += 1
                    files_lines[1] += len(f.read_bytes().splitlines())
        return {k: f"{n} files, {lines} lines" for k, (n, lines) in sorted(out.items())}

    def close(self, keep_logs: Path | None = None) -> None:
        """Stop everything started (Rasa, the service with a clean stop, the tmpfs, PostgreSQL)
        and delete the folder, logs copied to ``keep_logs`` first. Safe after any failure,
        and with a fault half-way through (a server it restarted is stopped too)."""
        self.closing.set()
        steps = [
            self._stop_rasa,
            self._stop_service,
            lambda: umount(self.spool) if self.tmpfs else None,
            self._stop_pg,
        ]
        for step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - the rest must still be undone
                say(f"clean-up step failed: {exc}")
        for child in (self.rasa, self.service):  # a last look: nothing may outlive the run
            if child is not None and child.alive():
                self.kill(child)
        if keep_logs is not None and self.logs.exists():
            keep_logs.mkdir(parents=True, exist_ok=True)
            for f in self.logs.iterdir():
                shutil.copy2(f, keep_logs / f.name)
            if self.pg is not None and (self.pg.root / "log").exists():
                shutil.copy2(self.pg.root / "log", keep_logs / "postgres.log")
        shutil.rmtree(self.tmp, ignore_errors=True)
