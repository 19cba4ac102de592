"""The launcher keeps its secrets off command lines: Rasa's API token reaches Rasa's argument
parser through a wrapper, and the action endpoint's token reaches Rasa's endpoints.yml by
name. A stand-in ``rasa`` script (a real Python process) records what it was given."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from retrieval.launcher import rasa_command, write_endpoints

from helpers import ROOT

TOKEN = "f" * 64


def fake_rasa(tmp_path: Path) -> Path:
    script = tmp_path / "bin" / "rasa"
    script.parent.mkdir()
    script.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            """
            import json, os, sys
            cmdline = open("/proc/self/cmdline", "rb").read().split(b"\\0")
            out = {"argv": sys.argv, "cmdline": [c.decode() for c in cmdline if c]}
            open(os.environ["OUT"], "w").write(json.dumps(out))
            sys.exit(3)
            """
        )
    )
    script.chmod(0o755)
    return script


def test_the_rasa_token_is_in_rasas_arguments_but_not_on_its_command_line(
    tmp_path: Path,
) -> None:
    import json

    rasa = fake_rasa(tmp_path)
    argv = rasa_command(rasa, Path("/m/bot.tar.gz"), 5099, tmp_path / "e.yml", tmp_path / "c.yml")
    assert TOKEN not in " ".join(argv) and not any("auth-token=" in a for a in argv)
    out = tmp_path / "seen.json"
    proc = subprocess.run(
        argv,
        env={**os.environ, "RETRIEVAL_RASA_TOKEN": TOKEN, "OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr  # the script's own exit code comes through
    seen = json.loads(out.read_text())
    assert seen["argv"][0] == str(rasa) and seen["argv"][1:3] == ["run", "-m"]
    assert seen["argv"][-2:] == ["--auth-token", TOKEN]
    assert "-i" in seen["argv"] and seen["argv"][seen["argv"].index("-i") + 1] == "127.0.0.1"
    assert TOKEN not in " ".join(seen["cmdline"])  # what `ps` shows every local user


def rasa_yaml(text: str) -> dict:
    """Read endpoints.yml as Rasa 3.6 does: plain values holding ${VAR} are expanded from
    the environment (rasa.shared.utils.io.replace_environment_variables)."""

    class Loader(yaml.SafeLoader):
        pass

    pattern = re.compile(r"^(.*)\$\{(.*)\}(.*)$")
    Loader.add_implicit_resolver("!env_var", pattern, None)
    Loader.add_constructor(
        "!env_var", lambda loader, node: os.path.expandvars(loader.construct_scalar(node))
    )
    return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass


def test_endpoints_name_the_webhook_token_and_stay_private(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    path = tmp_path / "endpoints.yml"
    path.write_text("old")
    path.chmod(0o644)
    write_endpoints(path, 8123)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert TOKEN not in text and "${RETRIEVAL_WEBHOOK_TOKEN}" in text
    monkeypatch.setenv("RETRIEVAL_WEBHOOK_TOKEN", TOKEN)
    endpoint = rasa_yaml(text)["action_endpoint"]
    assert endpoint["url"] == "http://127.0.0.1:8123/webhook"
    assert endpoint["headers"] == {"Authorization": f"Bearer {TOKEN}"}
    # the project's own endpoints.yml (for running Rasa by hand) does the same
    bot = rasa_yaml((ROOT / "bot" / "endpoints.yml").read_text())
    assert bot["action_endpoint"]["headers"] == {"Authorization": f"Bearer {TOKEN}"}
