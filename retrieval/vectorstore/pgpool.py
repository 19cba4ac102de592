"""A small bounded pool of psycopg connections to one PostgreSQL database with pgvector.

Each connection is set up once (pgvector's types, ``hnsw.iterative_scan``; the extension is
created under an advisory lock when the database lacks it) and handed out with the HNSW
search breadth its caller asks for, never while another thread uses it. A connection found
broken drops every idle one too (a lost server broke them all), so the next query
reconnects; one left mid-transaction is never handed out again. Failures become
:class:`~retrieval.errors.VectorStoreDown` (HTTP 503) naming the server without its password.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import Busy, VectorStoreDown, VectorStoreError

__all__ = ["ConnectionPool", "safe_url", "writer_lock"]

WRITER_LOCK = 7240334  # the advisory lock key of index jobs
PING_AFTER_S = 10.0  # an idle connection older than this is checked before it is handed out


def safe_url(url: str) -> str:
    """``url`` without its password (``user:password@`` or ``password=``), for messages."""
    url = re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)
    return re.sub(r"(?i)\b(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s]*)", r"\1***", url)


def _conninfo(url: str) -> str:
    # SQLAlchemy-style "postgresql+psycopg://" is accepted too (the query log's URL form)
    return re.sub(r"^postgresql\+psycopg://", "postgresql://", url)


class ConnectionPool:
    """At most ``size`` connections, configured once (pgvector's types, the iterative scan);
    each is handed out with the search breadth its caller asks for."""

    def __init__(self, url: str, size: int) -> None:
        self.url = url
        self._idle: queue.LifoQueue[tuple[Any, float]] = queue.LifoQueue()  # (conn, idle since)
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._all: list[Any] = []
        self._ef: dict[int, int] = {}  # id(connection) -> the ef_search it has

    def _failed(self, what: str, exc: BaseException, down: bool = True) -> VectorStoreError:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        kind = VectorStoreDown if down else VectorStoreError
        return kind(f"the vector store at {safe_url(self.url)} {what}: {first}")

    def _connect(self) -> Any:
        import psycopg
        from pgvector.psycopg import register_vector

        try:
            conn = psycopg.connect(_conninfo(self.url), autocommit=True, connect_timeout=5)
        except psycopg.Error as exc:
            raise self._failed("cannot be reached", exc) from None
        try:
            installed = conn.execute("SELECT 1 FROM pg_type WHERE typname = 'vector'").fetchone()
            if installed is None:
                with conn.transaction():  # one creator at a time across processes
                    conn.execute("SELECT pg_advisory_xact_lock(7240330)")
                    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            register_vector(conn)
            conn.execute("SET hnsw.iterative_scan = relaxed_order")
        except psycopg.Error as exc:
            conn.close()
            raise VectorStoreError(
                f"the database at {safe_url(self.url)} cannot use pgvector (it needs the "
                f"'vector' extension, version 0.8 or later): {str(exc).strip().splitlines()[0]}"
            ) from None
        return conn

    @contextmanager
    def connection(self, ef: int | None = None) -> Iterator[Any]:
        import psycopg

        if not self._slots.acquire(timeout=30):
            raise VectorStoreDown("the vector store's connections are all busy")
        conn = None
        try:
            conn = self._checkout()
            try:
                if ef is not None and self._ef.get(id(conn)) != ef:
                    conn.execute(f"SET hnsw.ef_search = {int(ef)}")
                    self._ef[id(conn)] = int(ef)
                yield conn
            except psycopg.errors.UndefinedTable as exc:
                raise self._failed("no longer has this version (pruned)", exc, down=False) from None
            except psycopg.OperationalError as exc:
                if conn.broken or conn.closed:
                    self._drop(conn)
                    conn = None
                    self._drop_idle()  # a lost server broke them all: reconnect on next use
                    raise self._failed("was lost", exc) from None
                raise self._failed("failed", exc) from None  # a timeout, a deadlock...
        finally:
            if conn is not None:
                from psycopg.pq import TransactionStatus

                if conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
                    self._drop(conn)  # interrupted mid-query: never hand it out again
                else:
                    self._idle.put((conn, time.monotonic()))
            self._slots.release()

    def _checkout(self) -> Any:
        """An idle connection, checked with one round trip when it has been idle longer than
        ``PING_AFTER_S`` (a database restarted or failed over since, or a proxy that drops
        idle connections, would otherwise fail the next query), else a new one."""
        import psycopg

        while True:
            try:
                conn, since = self._idle.get_nowait()
            except queue.Empty:
                conn = self._connect()
                with self._lock:
                    self._all.append(conn)
                return conn
            if time.monotonic() - since < PING_AFTER_S:
                return conn
            try:
                conn.execute("SELECT 1")
                return conn
            except psycopg.Error:
                self._drop(conn)  # gone: try the next idle one, or connect anew

    def _drop(self, conn: Any) -> None:
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)
            self._ef.pop(id(conn), None)
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - a broken connection may fail to close
            pass

    def _drop_idle(self) -> None:
        while True:
            try:
                self._drop(self._idle.get_nowait()[0])
            except queue.Empty:
                return

    def close(self) -> None:
        self._drop_idle()
        with self._lock:
            conns, self._all = self._all, []
            self._ef.clear()
        for conn in conns:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass


@contextmanager
def writer_lock(url: str, *, wait: bool = False) -> Iterator[None]:
    """One index job (ingest, re-index, rollback) at a time on the database at ``url``, from
    any machine: a session-level advisory lock on a connection of its own, released when the
    job ends or its process dies. Without ``wait`` a second job fails at once (Busy)."""
    import psycopg

    try:
        conn = psycopg.connect(_conninfo(url), autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VectorStoreDown(
            f"the vector store at {safe_url(url)} cannot be reached: {first}"
        ) from None
    try:
        if wait:
            conn.execute("SELECT pg_advisory_lock(%s)", (WRITER_LOCK,))
        else:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (WRITER_LOCK,)).fetchone()
            if row is None or not row[0]:
                raise Busy(
                    f"another index job is writing to the vector store at {safe_url(url)}; "
                    "wait for it to finish or use --wait"
                )
        yield
    finally:
        conn.close()  # ends the session, and with it the lock
