"""Helpers any test may import: the repository's paths, the demo's settings, the CLI run in
this process, and JSON-lines files."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"


def demo_settings(data_dir: Path, **overrides):  # noqa: ANN201
    """The demo shop's settings (the shipped catalog, FAQ and calibration) over ``data_dir``."""
    from retrieval.settings import load_settings

    demo = {
        "catalog_path": DATA / "catalog" / "products.jsonl",
        "faq_path": DATA / "faq" / "faq.yaml",
        "faq_calibration_path": DATA / "faq" / "calibration.jsonl",
    }
    return load_settings(None, data_dir=data_dir, **{**demo, **overrides})


def demo_catalog_rows() -> list[dict]:
    """The demo catalog's records with absolute image paths, to write into a copy elsewhere."""
    rows = [json.loads(line) for line in (DATA / "catalog" / "products.jsonl").open()]
    for r in rows:
        if r.get("image"):
            r["image"] = str(DATA / "catalog" / r["image"])
        if r.get("images"):
            r["images"] = [str(DATA / "catalog" / p) for p in r["images"]]
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@dataclass(frozen=True)
class CLIRun:
    """What one ``retrieval`` command did: its exit code and what it printed."""

    returncode: int
    stdout: str
    stderr: str


# the loggers whose level retrieval.cli.main() sets
_CLI_LOGGERS = ("", "alembic", "sentence_transformers", "httpx")


def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: str = "", cwd: Path = ROOT
) -> CLIRun:
    """Run ``retrieval ARGS`` in this process as the installed command runs in a fresh one:
    working directory ``cwd``, exactly the RETRIEVAL_* variables in ``env``, ``stdin`` as
    standard input, the logging main() configures writing to the captured stderr, and an
    exit (argparse's usage errors and --help) as its exit code. What it changes process-wide
    (working directory, environment, stdin, logging) is put back afterwards; the models the
    session has loaded are shared, which is the point. ``integration/test_cli.py`` runs the installed
    entry point in a subprocess once."""
    from retrieval.cli import main

    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers = root.handlers[:]
    levels = {name: logging.getLogger(name).level for name in _CLI_LOGGERS}
    with (
        pytest.MonkeyPatch.context() as mp,
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        mp.chdir(cwd)
        for key in list(os.environ):
            if key.startswith("RETRIEVAL_"):
                mp.delenv(key)
        for key, value in (env or {}).items():
            mp.setenv(key, value)
        # (main() also sets HF_HUB_OFFLINE and co. when unset; tests/conftest.py sets them)
        mp.setattr(sys, "stdin", io.StringIO(stdin))
        root.handlers = []  # as in a fresh process: main()'s basicConfig installs its handler
        try:
            code = main(list(args))
        except SystemExit as exc:
            if isinstance(exc.code, str):
                err.write(exc.code + "\n")
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        finally:
            for handler in root.handlers:
                handler.close()
            root.handlers = handlers
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
    return CLIRun(code, out.getvalue(), err.getvalue())
