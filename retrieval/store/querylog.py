"""Loss-free logging of queries and their scored candidates to SQL.

The query path hands each record to :meth:`QueryLog.record`, which never blocks on the
database: a writer thread inserts records in batches, one transaction per batch. When the
database is unreachable, batches go to a bounded local spool (fsynced JSONL files in
``spool_dir``) and are replayed, oldest first, as soon as the database answers again,
including by the next process if this one stops. Replays skip records already stored, so
a batch whose commit was acknowledged late is not written twice. Only if the spool is full
are records dropped, each with an error in the log and a count in :meth:`stats`.

The writer survives any error: a batch it could neither write nor spool (the disk is full,
the spool folder is gone) stays in memory and is retried with a growing pause (up to 30 s),
and ``stats()["writer_error"]`` says why. The queue in front of it is bounded
(``max_queue``): when it is full, :meth:`QueryLog.record` waits up to ``put_timeout`` for
room and then raises :class:`~retrieval.errors.LogBehind` (a StoreError, HTTP 503), so the caller knows
its query was not logged instead of the record vanishing. Records still unwritten when
:meth:`close` gives up are counted in ``stats()["lost"]`` and named in an error.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from ..errors import LogBehind, StoreError
from .models import CandidateRow, DecisionRow, QueryRow

__all__ = ["QueryLog"]

log = logging.getLogger(__name__)

_QUERY_COLS = {c.name for c in QueryRow.__table__.columns}
_CAND_COLS = {c.name for c in CandidateRow.__table__.columns} - {"id"}
_DEC_COLS = {c.name for c in DecisionRow.__table__.columns} - {"id"}


class QueryLog:
    """Asynchronous, spooling writer of query records. Thread-safe; call :meth:`close` at exit."""

    def __init__(
        self,
        engine: Engine,
        spool_dir: Path,
        *,
        spool_max_bytes: int = 64 * 1024 * 1024,
        flush_interval: float = 0.2,
        retry_interval: float = 1.0,
        max_batch: int = 500,
        prepare: Callable[[Engine], None] | None = None,
        max_queue: int = 10_000,
        put_timeout: float = 2.0,
        max_backoff: float = 30.0,
        linger: float = 0.05,
    ):
        """``prepare`` (e.g. the schema migration) runs before the first write, and is retried
        like a write while the database is unreachable, so a service can start without it."""
        self.engine = engine
        self._prepare = prepare
        self._prepared = prepare is None
        self.spool_dir = Path(spool_dir)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.spool_max_bytes = spool_max_bytes
        self.flush_interval = flush_interval
        self.retry_interval = retry_interval
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.put_timeout = put_timeout
        self.max_backoff = max_backoff
        # after a record arrives, the writer gathers what else comes for this long (seconds)
        # before it writes: one transaction for several questions costs a fraction of one
        # each, and the writer thread then takes the interpreter from the queries less often
        self.linger = linger
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=max_queue)
        self._pending: list[dict[str, Any]] = []  # taken from the queue, not yet stored
        self._next_retry = 0.0
        self._writer_error = ""
        self._give_up_at: float | None = None
        self._refused = 0
        self._lost = 0
        self._abandoned = False
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._db_ok = True
        self._last_error = ""
        self._written = 0
        self._spooled = 0
        self._dropped = 0
        self._seq = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="query-log-writer", daemon=True)
        self._thread.start()

    # ---- API ---------------------------------------------------------------------------
    def record(self, rec: dict[str, Any]) -> None:
        """Queue one record: ``{"query": {...}, "candidates": [...], "decisions": [...]}``.

        Raises :class:`LogBehind` when the queue stays full for ``put_timeout`` seconds
        (the writer can neither write nor spool): the record is then not kept."""
        self._idle.clear()
        try:
            self._queue.put(rec, timeout=self.put_timeout)
        except queue.Full:
            with self._lock:
                self._refused += 1
                first = self._refused == 1
            if first or self._refused % 100 == 0:
                log.error(
                    "query log queue is full (%d records; writer: %s): %d queries refused",
                    self.max_queue,
                    self._writer_error or self._last_error or "busy",
                    self._refused,
                )
            raise LogBehind(
                "the query log cannot keep up (its database and spool are failing), so this "
                "question was not recorded: please try again in a moment"
            ) from None

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued record is in the database or the spool; True if done in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.empty() and self._idle.is_set():
                return True
            if not self._thread.is_alive():
                return False
            time.sleep(0.01)
        return False

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (to the database, or else the spool) and stop the writer.
        Records that cannot be stored within ``timeout`` are counted as lost, loudly."""
        self.flush(timeout)
        self._give_up_at = time.monotonic() + min(timeout, 2.0)
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():  # stuck in a call that does not return: count for it
            self._lose_the_rest()

    def _lose_the_rest(self) -> None:
        """Count what is still pending or queued as lost, once, and say so: the writer giving
        up and close() timing out can both get here; whichever comes second finds nothing
        (it waits on the lock, so the error is logged before close() returns)."""
        with self._lock:
            if self._abandoned:
                return
            self._abandoned = True
            count = len(self._pending) + self._drain_queue()
            self._pending = []
            self._lost += count
            if count:
                log.error(
                    "%d query records could not be written to the database or the spool %s "
                    "and are lost (%s)",
                    count,
                    self.spool_dir,
                    self._writer_error or self._last_error or "the writer stopped",
                )

    def stats(self) -> dict[str, Any]:
        return {
            "database_ok": self._db_ok,
            "writer_alive": self._thread.is_alive(),
            "writer_error": self._writer_error,
            "written": self._written,
            "queued": self._queue.qsize(),
            "pending": len(self._pending),
            "max_queue": self.max_queue,
            "spooled_now": self.spooled_records(),
            "spooled_total": self._spooled,
            "dropped": self._dropped,
            "refused": self._refused,
            "lost": self._lost,
            "last_error": self._last_error,
        }

    def spooled_records(self) -> int:
        count = 0
        for f in self._spool_files():
            try:
                with f.open("rb") as fh:
                    count += sum(1 for _ in fh)
            except OSError:
                pass
        return count

    # ---- writer thread -----------------------------------------------------------------
    def _run(self) -> None:
        backoff = self.retry_interval
        while True:
            try:
                if self._step():
                    return
                backoff = self.retry_interval
                if self._writer_error:
                    log.warning("query log writer recovered; records are stored again")
                    self._writer_error = ""
            except Exception as exc:  # noqa: BLE001 - any error: keep the rows, retry later
                msg = f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                if msg != self._writer_error:
                    log.error(
                        "query log writer failed (%s); %d records kept in memory, retrying",
                        msg,
                        len(self._pending),
                    )
                self._writer_error = msg
                if self._stop.is_set() and time.monotonic() >= (self._give_up_at or 0.0):
                    self._lose_the_rest()
                    self._idle.set()
                    return
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    def _step(self) -> bool:
        """One round: take a batch (unless one is pending), write or spool it. True: stop."""
        if not self._pending:
            self._pending = self._take_batch()
        batch = self._pending
        if batch:
            self._idle.clear()
        if self._db_ok or time.monotonic() >= self._next_retry:
            try:
                self._ensure_schema()
                self._drain_spool()
                if batch:
                    self._write(batch)
                    self._pending = batch = []
                if not self._db_ok:
                    log.warning("query log database is reachable again; spooled records written")
                self._db_ok = True
            except (SQLAlchemyError, StoreError) as exc:
                self._on_db_error(exc)
                self._next_retry = time.monotonic() + self.retry_interval
        if batch:
            self._spool(batch)
            self._pending = []
        if self._queue.empty():
            if self._stop.is_set():
                self._last_attempt()
                self._idle.set()
                return True
            self._idle.set()
        return False

    def _drain_queue(self) -> int:
        count = 0
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return count
            count += 1

    def _last_attempt(self) -> None:
        """At close: one more try to empty the spool, whatever the retry timer says."""
        try:
            if not self._spool_files():
                return
            self._ensure_schema()
            self._drain_spool()
            self._db_ok = True
        except (SQLAlchemyError, StoreError, OSError) as exc:
            self._on_db_error(exc)
            log.warning(
                "%d query records stay in the spool %s until the database is back",
                self.spooled_records(),
                self.spool_dir,
            )

    def _ensure_schema(self) -> None:
        if not self._prepared:
            assert self._prepare is not None
            self._prepare(self.engine)
            self._prepared = True

    def _take_batch(self) -> list[dict[str, Any]]:
        try:
            first = self._queue.get(timeout=self.flush_interval)
        except queue.Empty:
            return []
        self._idle.clear()  # from here until written or spooled, flush() waits for it
        batch = [first]
        self._pending = batch  # counted (stats, loss at exit) while it lingers
        until = time.monotonic() + self.linger
        while len(batch) < self.max_batch:
            wait = until - time.monotonic()
            try:
                if wait <= 0 or self._stop.is_set():
                    batch.append(self._queue.get_nowait())
                else:
                    batch.append(self._queue.get(timeout=wait))
            except queue.Empty:
                break
        return batch

    def _on_db_error(self, exc: Exception) -> None:
        msg = f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if self._db_ok:
            log.error(
                "query log database unavailable (%s); spooling records to %s", msg, self.spool_dir
            )
        self._db_ok = False
        self._last_error = msg

    def _write(self, batch: list[dict[str, Any]]) -> None:
        """Insert a batch in one transaction, skipping records already stored.

        A record the database refuses (a constraint, a value out of range) is set aside in a
        ``.rejected`` file with an error in the log, so it cannot block the records behind it.
        """
        try:
            self._insert(batch)
        except (IntegrityError, DataError):
            for rec in batch:
                try:
                    self._insert([rec])
                except (IntegrityError, DataError) as exc:
                    self._reject(rec, exc)

    def _reject(self, rec: dict[str, Any], exc: Exception) -> None:
        path = self.spool_dir / f"{time.time_ns():020d}-{os.getpid()}.rejected"
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec, ensure_ascii=False, default=_json_default) + "\n")
        self._dropped += 1
        log.error(
            "the database refused query record %s (%s); kept in %s",
            rec["query"].get("id"),
            str(exc).splitlines()[0],
            path,
        )

    def _insert(self, batch: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            ids = [r["query"]["id"] for r in batch]
            present = set(conn.scalars(select(QueryRow.id).where(QueryRow.id.in_(ids))))
            batch = [r for r in batch if r["query"]["id"] not in present]
            if not batch:
                return
            conn.execute(insert(QueryRow), [_row(r["query"], _QUERY_COLS) for r in batch])
            cands = [_row(c, _CAND_COLS) for r in batch for c in r.get("candidates", ())]
            if cands:
                conn.execute(insert(CandidateRow), cands)
            decs = [_row(d, _DEC_COLS) for r in batch for d in r.get("decisions", ())]
            if decs:
                conn.execute(insert(DecisionRow), decs)
        self._written += len(batch)

    # ---- spool -------------------------------------------------------------------------
    def _spool_files(self) -> list[Path]:
        return sorted(self.spool_dir.glob("*.jsonl"))

    @contextmanager
    def _spool_lock(self) -> Iterator[None]:
        with (self.spool_dir / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _spool(self, batch: list[dict[str, Any]]) -> None:
        lines = [json.dumps(r, ensure_ascii=False, default=_json_default) + "\n" for r in batch]
        with self._spool_lock():
            used = sum(f.stat().st_size for f in self._spool_files())
            keep: list[str] = []
            for line in lines:
                if used + len(line.encode()) > self.spool_max_bytes:
                    self._dropped += 1
                    log.error(
                        "query log spool is full (%d bytes): dropped a query record",
                        self.spool_max_bytes,
                    )
                    continue
                used += len(line.encode())
                keep.append(line)
            if not keep:
                return
            self._seq += 1
            name = f"{time.time_ns():020d}-{os.getpid()}-{self._seq}"
            tmp = self.spool_dir / f"{name}.tmp"
            try:
                with tmp.open("w", encoding="utf-8") as fh:
                    fh.writelines(keep)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.spool_dir / f"{name}.jsonl")
            except BaseException:
                # a failed write (the disk is full) leaves no partial file: the batch stays
                # with the writer, which retries it whole under a new name
                with contextlib.suppress(OSError):  # never hide the write's own error
                    tmp.unlink(missing_ok=True)
                raise
            self._spooled += len(keep)

    def _drain_spool(self) -> None:
        files = self._spool_files()
        if not files:
            return
        with self._spool_lock():
            for f in self._spool_files():
                try:
                    batch = [
                        json.loads(line)
                        for line in f.read_text(encoding="utf-8").splitlines()
                        if line.strip()
                    ]
                except (OSError, json.JSONDecodeError) as exc:
                    bad = f.with_suffix(".corrupt")
                    log.error("unreadable spool file %s (%s); kept as %s", f, exc, bad)
                    os.replace(f, bad)
                    continue
                for start in range(0, len(batch), self.max_batch):
                    self._write(batch[start : start + self.max_batch])
                f.unlink()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"__datetime__": value.isoformat()}
    raise TypeError(f"cannot store {type(value).__name__} in the spool")


def _row(data: dict[str, Any], cols: set[str]) -> dict[str, Any]:
    out = {}
    for k, v in data.items():
        if k in cols:
            if isinstance(v, dict) and "__datetime__" in v:
                v = datetime.fromisoformat(v["__datetime__"])
            out[k] = v
    return out
