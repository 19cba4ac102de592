"""Shared fixtures. The demo index is built once per session with the real packaged models."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"


# Test tiers (`./scripts/test.sh unit|integration|e2e`), given to every test by what it
# needs: e2e tests run the real Rasa server or a browser, integration tests load the real
# models, PostgreSQL or the demo index, unit tests need none of these.
E2E_FIXTURES = {"stack", "bot_model", "browser", "chromium"}
INTEGRATION_FIXTURES = {"demo_index", "demo_data_dir", "postgres", "pg_url"}
E2E_MODULES = {"test_bot", "test_browser", "test_console_browser", "test_multilingual_e2e"}
# modules whose tests build indexes or train with the real models without a fixture saying so
INTEGRATION_MODULES = {
    "test_answer_head",
    "test_batching",
    "test_cli",
    "test_encoders",
    "test_eval_faq",
    "test_eval_products",
    "test_eval_rasa",
    "test_hybrid",
    "test_multilingual",
    "test_photo_fusion",
    "test_reindex",
    "test_training_cnn",
    "test_training_data",
    "test_training_errors",
    "test_training_image",
    "test_training_pipeline",
    "test_training_promotion",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        module = item.module.__name__ if getattr(item, "module", None) else ""
        if names & E2E_FIXTURES or module in E2E_MODULES:
            item.add_marker(pytest.mark.e2e)
        elif (
            module in INTEGRATION_MODULES
            or names & INTEGRATION_FIXTURES
            or item.get_closest_marker("models")
            or item.get_closest_marker("postgres")
            or item.get_closest_marker("slow")
        ):
            item.add_marker(pytest.mark.integration)
        else:
            item.add_marker(pytest.mark.unit)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's RETRIEVAL_* settings."""
    for key in list(os.environ):
        if key.startswith("RETRIEVAL_"):
            monkeypatch.delenv(key)


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
    session has loaded are shared, which is the point. ``test_cli.py`` runs the installed
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
        # (main() also sets HF_HUB_OFFLINE and co. when unset; this file set them above)
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


def demo_settings(data_dir: Path, **overrides):  # noqa: ANN201
    from retrieval.settings import load_settings

    return load_settings(
        None,
        data_dir=data_dir,
        catalog_path=DATA / "catalog" / "products.jsonl",
        faq_path=DATA / "faq" / "faq.yaml",
        faq_calibration_path=DATA / "faq" / "calibration.jsonl",
        **overrides,
    )


@pytest.fixture(scope="session")
def demo_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding demo indexes built with the real models (built once per session)."""
    from retrieval.ingest import ingest

    data_dir = tmp_path_factory.mktemp("demo-index")
    ingest(demo_settings(data_dir))
    return data_dir


@pytest.fixture()
def demo_data_dir(demo_index: Path, tmp_path: Path) -> Path:
    """A private copy of the demo data dir (indexes only; each test gets its own database)."""
    target = tmp_path / "var"
    shutil.copytree(demo_index / "index", target / "index")
    return target


@pytest.fixture(scope="session")
def postgres():  # noqa: ANN201
    """A real PostgreSQL server for the whole session."""
    from pg import PostgresServer

    server = PostgresServer()
    server.start()
    yield server
    server.destroy()


@pytest.fixture()
def pg_url(postgres, request: pytest.FixtureRequest) -> str:  # noqa: ANN001
    """A fresh database on the session's PostgreSQL server."""
    import re

    name = (
        "t_"
        + re.sub(r"[^a-z0-9]", "_", request.node.name.lower())[:50]
        + f"_{os.getpid()}_{id(request) % 100000}"
    )
    return postgres.create_database(name)


@pytest.fixture(scope="session")
def bot_model() -> Path:
    """The trained Rasa bot (trained by set-up; retrained only when bot data changed)."""
    from stack import trained_bot

    return trained_bot()


@pytest.fixture(scope="session")
def stack(bot_model: Path, demo_index: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """The whole demo (retrieval service + Rasa server) started by the demo launcher on free
    ports over a copy of the demo indexes. Stopping it with Ctrl-C is checked at the end."""
    from stack import start_stack, stop_stack

    data_dir = tmp_path_factory.mktemp("stack") / "var"
    shutil.copytree(demo_index / "index", data_dir / "index")
    running = start_stack(data_dir, bot_model)
    yield running
    code, alive = stop_stack(running)
    assert code == 0 and alive == [], (code, alive, "".join(running.lines))
    assert running.lines[-1].strip() == "demo: stopped"
