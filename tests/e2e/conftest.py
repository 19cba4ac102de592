"""The e2e tier: the real Rasa server and the demo launcher (the session's ``stack``, in
tests/conftest.py), a real browser. Fixtures several e2e test files use."""

from __future__ import annotations

import shutil

import pytest

from stack import Stack, add_agent


@pytest.fixture(scope="module")
def agents(stack: Stack) -> list[str]:
    """Agent accounts alice and bob on the running stack, made with the CLI."""
    for name in ("alice", "bob"):
        out = add_agent(stack, name)
        # another module on the same stack may have made them already
        assert out.returncode == 0 or "already exists" in out.stderr, out.stderr
    return ["alice", "bob"]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, which Playwright drives (scripts/test.sh installs it)."""
    path = shutil.which("chromium")
    assert path, "Debian's chromium is needed (scripts/test.sh installs it)"
    return path
