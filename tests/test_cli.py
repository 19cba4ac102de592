"""The command line documents itself, and the docs name every command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import retrieval
from retrieval.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help_and_is_in_the_readme(command: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "retrieval.cli", command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0
    assert out.stdout.startswith(f"usage: retrieval {command}")
    sub = build_parser()._subparsers._group_actions[0].choices[command]  # noqa: SLF001
    assert sub.description
    assert f"retrieval {command}" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_top_level_help_lists_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "retrieval.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and all(c in out.stdout for c in COMMANDS)


def query_with_config(cfg: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "retrieval.cli", "query", "hi", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_settings_are_one_line_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("hnsw_m = 1\n")
    out = query_with_config(cfg)
    assert out.returncode == 2 and out.stderr.strip().startswith("error: invalid setting hnsw_m")
    cfg.write_text("not = [valid toml")
    out = query_with_config(cfg)
    assert out.returncode == 2 and "is not valid" in out.stderr and "Traceback" not in out.stderr


def test_exports_are_honest() -> None:
    for name in retrieval.__all__:
        assert hasattr(retrieval, name), name
    public = {n for n in dir(retrieval) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(retrieval.__all__) | {"RetrievalError"}
