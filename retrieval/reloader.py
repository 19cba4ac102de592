"""Swapping newly published index versions into a running service, without a restart.

A background thread reads the ``CURRENT`` pointers every ``reload_interval_s``; when one
names another version than the live snapshot's, it loads both indexes into a new
:class:`~retrieval.retriever.Snapshot` (off the request path) and swaps it in with
:meth:`Retriever.swap`. A query already running keeps the snapshot it started with; the
next query gets the new one. A version that cannot be loaded (other encoders, damaged) is
logged and the live snapshot stays.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .errors import RetrievalError, VectorStoreDown
from .indexstore import current_version
from .retriever import Retriever
from .settings import Settings
from .snapshot import Snapshot

__all__ = ["SnapshotReloader"]

log = logging.getLogger(__name__)


class SnapshotReloader:
    def __init__(
        self,
        settings: Settings,
        retriever: Retriever,
        load: Callable[[], Snapshot],
        *,
        interval_s: float,
    ):
        self.settings = settings
        self.retriever = retriever
        self._load = load
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed: tuple[str | None, str | None] | None = None
        self._unreachable = False  # the store did not answer the last check
        self.swaps = 0

    def _wanted(self) -> tuple[str | None, str | None]:
        s = self.settings
        return current_version(s, "faq"), current_version(s, "products")

    def check_once(self) -> bool:
        """Swap in the published versions if they differ from the live ones; True if swapped."""
        try:
            wanted = self._wanted()
        except RetrievalError as exc:  # the vector store is down: say so once, keep serving
            if not self._unreachable:
                log.error("cannot read the current index versions: %s", exc)
            self._unreachable = True
            return False
        if self._unreachable:
            log.info("the index versions can be read again")
            self._unreachable = False
        snap = self.retriever.snapshot
        if wanted == (snap.faq_version, snap.product_version) or wanted == self._failed:
            return False
        try:
            new = self._load()
        except VectorStoreDown as exc:  # transient: try the same versions again next time
            log.error("could not load index versions %s (will retry): %s", wanted, exc)
            return False
        except (RetrievalError, OSError, KeyError, ValueError) as exc:
            log.error(
                "could not load index versions %s; still serving %s: %s (if `retrieval train` "
                "or `retrieval models rollback` promoted another model, restart the service "
                "to use it)",
                wanted,
                (snap.faq_version, snap.product_version),
                exc,
            )
            self._failed = wanted
            return False
        self._failed = None
        self.retriever.swap(new)
        self.swaps += 1
        log.info(
            "now serving index versions faq=%s products=%s (were %s, %s)",
            new.faq_version,
            new.product_version,
            snap.faq_version,
            snap.product_version,
        )
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check_once()
            except Exception:  # noqa: BLE001 - the watcher must outlive any one bad version
                log.exception("index reload check failed")

    def start(self) -> None:
        if self.interval_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="index-reloader", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
