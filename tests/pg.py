"""A real PostgreSQL server for tests: a private cluster in a temporary folder
(:class:`retrieval.localpg.LocalPostgres` with the system's binaries, Debian's
``postgresql`` package, which scripts/test.sh installs).

It listens on a Unix socket in its own 0700 folder only, never on TCP. ``port`` is a free
port number, so the socket's name (``.s.PGSQL.<port>``) is one no other test server uses and
an address leaking into an error message is recognisable.
"""

from __future__ import annotations

import socket

from retrieval.localpg import LocalPostgres


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer(LocalPostgres):
    """Initialised, not started; fsync off (a test cluster's data need not survive a crash)."""

    def __init__(self) -> None:
        super().__init__(settings={"fsync": "off"}, port=free_port())
