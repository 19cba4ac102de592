#!/usr/bin/env bash
# Create or update the Python 3.11 environment in .venv with the retrieval package and its
# test tools. Safe to run again: it does nothing when pyproject.toml has not changed.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python311() {
  if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON"; return; fi
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      command -v "$candidate"; return
    fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    local prefix
    prefix=$(pyenv prefix 3.11 2>/dev/null || pyenv prefix "$(pyenv versions --bare | grep -E '^3\.11' | tail -n1)" 2>/dev/null || true)
    if [[ -n "$prefix" && -x "$prefix/bin/python3.11" ]]; then echo "$prefix/bin/python3.11"; return; fi
  fi
  echo "error: Python 3.11 not found; install it (e.g. 'pyenv install 3.11') or set PYTHON=/path/to/python3.11" >&2
  exit 1
}

stamp=".venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [[ -f "$stamp" ]]; then
  exit 0
fi
py=$(find_python311)
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv with $py"
  "$py" -m venv .venv
fi
echo "setup: installing the retrieval package and its dependencies into .venv (the first time takes a few minutes)"
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
rm -f .venv/.installed-*
touch "$stamp"
echo "setup: .venv ready"
