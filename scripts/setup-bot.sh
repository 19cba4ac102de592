#!/usr/bin/env bash
# Create the Rasa environment (.venv-rasa, Python 3.10, Rasa 3.6.21) and train the bot.
# Safe to run again: the install is skipped when done, and training when the bot's config,
# domain and data have not changed (the model is named after their hash).
set -euo pipefail
cd "$(dirname "$0")/.."
export RASA_TELEMETRY_ENABLED=false

find_python310() {
  if [[ -n "${PYTHON310:-}" ]]; then echo "$PYTHON310"; return; fi
  if command -v python3.10 >/dev/null 2>&1 && python3.10 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then
    command -v python3.10; return
  fi
  if command -v pyenv >/dev/null 2>&1; then
    local version prefix
    version=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.10(\.|$)' | tail -n1 || true)
    if [[ -n "$version" ]]; then
      prefix=$(pyenv prefix "$version")
      if [[ -x "$prefix/bin/python3.10" ]]; then echo "$prefix/bin/python3.10"; return; fi
    fi
  fi
  echo "error: Rasa 3.6 needs Python 3.10, which was not found; install it (e.g. 'pyenv install 3.10') or set PYTHON310=/path/to/python3.10" >&2
  exit 1
}

# jsonschema 3.2 (inside Rasa's own range, >=3.2,<4.18): Rasa validates every action-server
# reply with jsonschema.validate, which re-checks the schema each time; under jsonschema 4
# that costs ~29 ms per chat turn (a third of Rasa's time), under 3.2 ~5 ms.
stamp=".venv-rasa/.installed-rasa-3.6.21-jsonschema-3.2"
if [[ ! -f "$stamp" ]]; then
  py=$(find_python310)
  [[ -x .venv-rasa/bin/python ]] || "$py" -m venv .venv-rasa
  echo "setup: installing Rasa 3.6.21 into .venv-rasa (the first time takes several minutes)" >&2
  .venv-rasa/bin/python -m pip install --quiet --upgrade pip
  .venv-rasa/bin/python -m pip install --quiet rasa==3.6.21 jieba==0.42.1 jsonschema==3.2.0
  rm -f .venv-rasa/.installed-rasa-*
  touch "$stamp"
fi

hash=$(cat bot/config.yml bot/domain.yml $(find bot/data -type f -name '*.yml' | sort) | sha256sum | cut -c1-16)
model="bot/models/bot-$hash.tar.gz"
if [[ ! -f "$model" ]]; then
  echo "setup: training the Rasa bot (about a minute)" >&2
  rm -f bot/models/bot-*.tar.gz
  (cd bot && ../.venv-rasa/bin/rasa train --quiet --out models --fixed-model-name "bot-$hash" >/dev/null)
fi
echo "$model"
