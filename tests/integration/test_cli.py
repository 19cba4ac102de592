"""The command line documents itself, and the docs name every command. The commands run in
this process (conftest.run_cli); one test runs the installed ``retrieval`` entry point."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import retrieval
from retrieval.cli import COMMANDS, build_parser

from helpers import ROOT, run_cli


def test_the_installed_command_runs_in_a_fresh_process() -> None:
    """The ``retrieval`` script pip installs: help exits 0, bad input exits 2 with one line."""
    exe = shutil.which("retrieval", path=str(Path(sys.executable).parent))
    assert exe is not None, "the retrieval entry point is not installed"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.startswith("usage: retrieval")
    assert all(c in out.stdout for c in COMMANDS)
    out = subprocess.run([exe, "query", ""], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2, out.stderr
    assert out.stderr == "error: give a question, --image PATH, or both\n"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help_and_is_in_the_readme(command: str) -> None:
    out = run_cli(command, "--help")
    assert out.returncode == 0
    assert out.stdout.startswith(f"usage: retrieval {command}")
    sub = build_parser()._subparsers._group_actions[0].choices[command]  # noqa: SLF001
    assert sub.description
    assert f"retrieval {command}" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_top_level_help_lists_commands() -> None:
    out = run_cli("--help")
    assert out.returncode == 0 and all(c in out.stdout for c in COMMANDS)


def test_bad_settings_are_one_line_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("hnsw_m = 1\n")
    out = run_cli("query", "hi", "--config", str(cfg))
    assert out.returncode == 2 and out.stderr.strip().startswith("error: invalid setting hnsw_m")
    cfg.write_text("not = [valid toml")
    out = run_cli("query", "hi", "--config", str(cfg))
    assert out.returncode == 2 and "is not valid" in out.stderr and "Traceback" not in out.stderr


def test_exports_are_honest() -> None:
    for name in retrieval.__all__:
        assert hasattr(retrieval, name), name
    public = {n for n in dir(retrieval) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(retrieval.__all__) | {"RetrievalError"}
