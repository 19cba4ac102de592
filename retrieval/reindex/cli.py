"""The ``retrieval reindex``, ``versions`` and ``rollback`` commands (see the package
docstring), and ``parse_every`` for ``reindex --every``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from ..cliargs import add_encode_workers
from . import reindex
from .versions import describe_versions, rollback

__all__ = ["COMMANDS", "parse_every", "register"]

log = logging.getLogger("retrieval.reindex")


def _out(text: str) -> None:
    """The commands' output is their interface: write it to stdout."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def parse_every(text: str) -> float:
    """'90s', '15m', '2h' or a number of seconds -> seconds (at least 1)."""
    units = {"s": 1, "m": 60, "h": 3600}
    raw = text.strip().lower()
    try:
        seconds = float(raw[:-1]) * units[raw[-1]] if raw and raw[-1] in units else float(raw)
    except ValueError:
        raise ValueError(f"'{text}' is not a duration: use e.g. 90s, 15m or 2h") from None
    if seconds < 1:
        raise ValueError(f"'{text}' is shorter than one second")
    return seconds


def register(sub: Any, common: Any) -> None:
    p = sub.add_parser(
        "reindex",
        help="publish what changed in the FAQ bank and catalog, re-encoding only changed entries",
        description="Compare the sources (and the FAQ drafts agents approved) with the current "
        "index versions by content hash; encode only new and changed entries, drop deleted ones, "
        "and publish new versions that a running service picks up by itself. A run that finds "
        "no change encodes and publishes nothing. A new encoder, fusion weights or HNSW build "
        "parameters trigger a full rebuild. Only one index job runs at a time. While the log "
        "database cannot be used, catalog changes are still published (not recorded in the "
        "version history); the FAQ waits for the database when its calibration learns from "
        "the agents' labels; the command then exits 1.",
    )
    common(p)
    p.add_argument("--catalog", help="catalog file (default: data/catalog/products.jsonl)")
    p.add_argument("--faq", help="FAQ bank file (default: data/faq/faq.yaml)")
    p.add_argument("--only", choices=("faq", "products"), help="re-index just one of the two")
    p.add_argument(
        "--full", action="store_true", help="rebuild from scratch (re-encode everything)"
    )
    add_encode_workers(p)
    p.add_argument(
        "--wait", action="store_true", help="wait for a running index job instead of refusing"
    )
    p.add_argument(
        "--every",
        metavar="DURATION",
        help="keep running, once per DURATION (e.g. 15m, 1h); Ctrl-C stops between or during runs",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--json", action="store_true", help="print one JSON summary per run")

    p = sub.add_parser(
        "versions",
        help="list the index versions on disk (current one marked) with what changed in each",
        description="Index versions kept on disk, newest first, with their creation time, "
        "creator, mode (full / incremental / compacted) and change counts from the SQL log.",
    )
    common(p)
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser(
        "rollback",
        help="make an earlier index version current again",
        description="Point CURRENT back at VERSION (see `retrieval versions`); the running "
        "service switches to it within reload_interval_s. The version must fit the configured "
        "encoders.",
    )
    common(p)
    p.add_argument("version", help="a version id such as faq-20261128T101500-ab12cd")
    p.add_argument("--wait", action="store_true", help="wait for a running index job")


def _engine(settings: Any) -> Any:
    from ..store import migrated_engine

    return migrated_engine(settings.resolved_database_url)


def _engine_or_reason(settings: Any) -> tuple[Any, str | None]:
    """The log database's engine, or None and why it cannot be used (it is down)."""
    from ..errors import StoreError

    try:
        return _engine(settings), None
    except StoreError as exc:
        return None, str(exc)


def _without_database(settings: Any, kinds: tuple[str, ...], reason: str) -> tuple[str, ...]:
    """What a run does while the database cannot be used. The indexes are files, so a
    catalog change still goes live (not recorded in the version history). The FAQ waits
    when its calibration learns from the agents' labels, which are in the database: built
    without them it would answer by other thresholds until the database is back."""
    log.warning("%s: the new versions are not recorded in the history", reason)
    if "faq" not in kinds or not settings.learn_from_agents:
        return kinds
    sys.stderr.write(
        "error: faq: not re-indexed: its calibration reads the agents' labels from the "
        "database, which cannot be used now; the current version stays until a run that can\n"
    )
    return tuple(k for k in kinds if k != "faq")


def _settings(args: argparse.Namespace) -> Any:
    from ..cliargs import settings_from_args

    return settings_from_args(args)


def cmd_reindex(args: argparse.Namespace) -> int:
    logging.getLogger("retrieval.reindex").setLevel(logging.INFO)
    settings = _settings(args)
    try:
        every = parse_every(args.every) if args.every else None
    except ValueError as exc:
        from ..errors import InputError

        raise InputError(str(exc)) from None
    kinds = (args.only,) if args.only else ("faq", "products")
    engine = None
    while True:
        started = time.monotonic()
        run_kinds = kinds
        if engine is None:  # opened (again) each run until the database answers
            engine, down = _engine_or_reason(settings)
            if down is not None:
                run_kinds = _without_database(settings, kinds, down)
        summary = reindex(
            settings,
            engine,
            kinds=run_kinds,
            progress=not args.no_progress and sys.stderr.isatty(),
            full=args.full,
            wait=args.wait or every is not None,
        )
        if args.json:
            _out(
                json.dumps(
                    {
                        "seconds": round(summary.seconds, 3),
                        "published": summary.published,
                        "reports": [r.__dict__ for r in summary.reports],
                    }
                )
            )
        else:
            for r in summary.reports:
                _out(r.line())
        if every is None:
            return 0 if engine is not None else 1  # 1: done without the database
        pause = max(0.0, every - (time.monotonic() - started))
        _out(f"next run in {pause:.0f} s (Ctrl-C stops)")
        time.sleep(pause)


def cmd_versions(args: argparse.Namespace) -> int:
    settings = _settings(args)
    engine, down = _engine_or_reason(settings)
    if down is not None:
        log.warning("%s: listing the versions on disk without their history", down)
    rows = describe_versions(settings, engine)
    if args.json:
        _out(json.dumps(rows))
        return 0
    if not rows:
        _out("no index versions yet: run `retrieval ingest`")
        return 0
    _out(f"  {'version':<34} {'created (UTC)':<20} {'mode':<12} {'items':>7}  changes")
    for r in rows:
        c = r["changes"] or {}
        changes = f"+{c.get('added', 0)} ~{c.get('updated', 0)} -{c.get('deleted', 0)}" if c else ""
        created = (r["created_at"] or "")[:19].replace("T", " ")
        mark = "*" if r["current"] else " "
        _out(
            f"{mark} {r['version']:<34} {created:<20} {r['mode'] or '':<12} "
            f"{r['items'] if r['items'] is not None else '':>7}  {changes}"
        )
    _out("(* = current)")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    settings = _settings(args)
    kind = rollback(settings, args.version, wait=args.wait)
    _out(
        f"{kind} index: {args.version} is current again; a running service switches within "
        f"{settings.reload_interval_s:g} s"
    )
    return 0


COMMANDS = {"reindex": cmd_reindex, "versions": cmd_versions, "rollback": cmd_rollback}
