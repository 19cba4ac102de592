"""What the fault and load suite (benchmarks/soak.py) does beside the traffic: the faults it
injects on schedule, the operator's re-index every minute, and the service's RSS samples.
Each runs in its own thread and stops when the run's ``abort`` event is set."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from soak_report import Fault, Outcome, PlannedFault, RssSample
from soak_stack import FILL_NAME, Stack, bump_catalog, bump_faq, fill_disk, say
from soak_traffic import Recorder


class Aborted(Exception):
    """The run is stopping (Ctrl-C, an error, or its end) while a fault is in progress."""


class FaultRunner:
    """Injects the planned faults one after another: each at its planned time, but never
    before the previous one has ended and its grace passed.

    :meth:`run` must be called from the main thread: the servers it restarts are started
    with PR_SET_PDEATHSIG (retrieval.launcher.Child), which the kernel ties to the thread
    that started them, so a server restarted from a worker thread would get SIGTERM when
    that thread ends. ``tick`` is called about twice a second while it waits."""

    def __init__(
        self,
        stack: Stack,
        rec: Recorder,
        plan: list[PlannedFault],
        grace: float,
        abort: threading.Event,
        tick: Callable[[], None] = lambda: None,
    ):
        self.stack, self.rec, self.plan, self.grace, self.abort = stack, rec, plan, grace, abort
        self.tick = tick
        self.happened: list[Fault] = []
        self.service_kills: list[float] = []
        self.error: BaseException | None = None

    def last_end(self) -> float | None:
        ends = [f.end for f in self.happened if f.end is not None]
        return max(ends) if ends else None

    def run(self) -> None:
        try:
            for planned in self.plan:
                last = self.last_end()
                ready = planned.at if last is None else max(planned.at, last + self.grace)
                self._sleep(max(0.0, ready - self.rec.now()))
                self._inject(planned)
        except Aborted:
            pass
        except Exception as exc:  # noqa: BLE001 - reported; the run ends
            self.error = exc

    def _sleep(self, seconds: float) -> None:
        until = self.rec.now() + seconds
        while (left := until - self.rec.now()) > 0:
            if self.abort.wait(min(0.5, left)):
                raise Aborted
            self.tick()

    def _inject(self, planned: PlannedFault) -> None:
        fault = Fault(planned.name, self.rec.now(), None)
        self.happened.append(fault)
        say(f"{fault.start:5.0f} s  fault: {planned.name}")
        action = getattr(self, f"_{planned.name}")
        fault.note = action(planned.hold)
        fault.end = self.rec.now()
        say(f"{fault.end:5.0f} s  fault over: {planned.name} ({fault.note})")

    def _postgres_stop(self, hold: float) -> str:
        pg = self.stack.pg
        assert pg is not None
        pg.stop("fast")
        try:
            self._sleep(hold)
        finally:
            pg.start()
        return f"pg_ctl stop -m fast, started again after {hold:.0f} s"

    def _spool_full(self, hold: float) -> str:
        """The spool's disk full while the database is down: the writer can neither write
        nor spool. Space comes back first, then the database."""
        pg = self.stack.pg
        assert pg is not None
        size = fill_disk(self.stack.spool)
        t_fill = self.rec.now()
        pg.stop("fast")
        t_stop = self.rec.now()
        try:
            self._sleep(hold)
        finally:
            with contextlib.suppress(FileNotFoundError):
                (self.stack.spool / FILL_NAME).unlink()
            t_free = self.rec.now()
            with contextlib.suppress(Aborted):
                self._sleep(min(3.0, hold / 2))
            pg.start()
        return (
            f"{size / 1e6:.1f} MB written to fill the {self.stack.spool_mb} MB tmpfs at "
            f"{t_fill:.0f} s, PostgreSQL down {t_stop:.0f}-{self.rec.now():.0f} s, "
            f"space freed at {t_free:.0f} s"
        )

    def _rasa_kill(self, hold: float) -> str:
        self.stack.kill(self.stack.rasa)
        self._sleep(hold)
        ready = self.stack.start_rasa()
        return f"SIGKILL, restarted after {hold:.0f} s, ready {ready:.1f} s after the restart"

    def _service_kill(self, hold: float) -> str:
        self.service_kills.append(self.rec.now())
        self.stack.kill(self.stack.service)
        self._sleep(hold)
        ready = self.stack.start_service()
        return f"SIGKILL, restarted after {hold:.0f} s, ready {ready:.1f} s after the restart"


class Reindexer:
    """The operator's re-index every ``every`` s: one small change to the copied sources
    (odd runs an FAQ answer, even runs a product's price), ``retrieval reindex --wait``, and
    the time until the service answers with the new version."""

    def __init__(self, stack: Stack, rec: Recorder, every: float, abort: threading.Event):
        self.stack, self.rec, self.every, self.abort = stack, rec, every, abort
        self.runs: list[dict[str, Any]] = []

    def run(self) -> None:
        n = 0
        while not self.abort.wait(max(0.0, (n + 1) * self.every - self.rec.now())):
            n += 1
            self._once(n, "faq" if n % 2 else "products")

    def _once(self, n: int, kind: str) -> None:
        data = self.stack.data
        if kind == "faq":
            path = data / "faq" / "faq.yaml"
            path.write_text(bump_faq(path.read_text(encoding="utf-8"), n), encoding="utf-8")
        else:
            path = data / "catalog" / "products.jsonl"
            path.write_text(bump_catalog(path.read_text(encoding="utf-8"), n), encoding="utf-8")
        start = self.rec.now()
        proc = self.stack.start_reindex()
        while proc.poll() is None:
            if self.abort.wait(0.5):
                proc.send_signal(signal.SIGINT)  # "Ctrl-C stops between or during runs"
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        rc = proc.returncode
        end = self.rec.now()
        self.rec.add(Outcome("reindex", kind, start, end, rc, None if rc == 0 else f"exit {rc}"))
        version = _current(self.stack.var / "index" / kind)
        swap = self._swapped_in(kind, version) if rc == 0 else None
        self.runs.append(
            {
                "n": n,
                "kind": kind,
                "start": start,
                "seconds": end - start,
                "exit": rc,
                "version": version,
                "served_after_s": swap,
            }
        )
        shown = "not seen" if swap is None else f"served {swap:.1f} s later"
        say(
            f"{end:5.0f} s  re-index {n} ({kind}): exit {rc} in {end - start:.0f} s, "
            f"{version} {shown}"
        )

    def _swapped_in(self, kind: str, version: str | None) -> float | None:
        """Seconds after the re-index until /health names ``version`` (60 s at most)."""
        t0 = self.rec.now()
        while self.rec.now() - t0 < 60 and not self.abort.is_set():
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                r = httpx.get(f"{self.stack.base}/health", timeout=2)
                if r.json()["index_versions"][kind] == version:
                    return self.rec.now() - t0
            self.abort.wait(0.25)
        return None


def _current(kind_dir: Path) -> str | None:
    try:
        return (kind_dir / "CURRENT").read_text().strip()
    except OSError:
        return None


def read_rss_kb(pid: int) -> int | None:
    """VmRSS of a process from /proc, in kB (None when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def sample_rss(
    stack: Stack, rec: Recorder, out: list[RssSample], abort: threading.Event, every: float
) -> None:
    """The service's RSS every ``every`` s, following the process a restart makes."""
    while not abort.wait(every):
        pid = stack.service_pid()
        rss = read_rss_kb(pid) if pid else None
        if pid and rss:
            out.append(RssSample(rec.now(), pid, rss))
