#!/usr/bin/env bash
# Set up (if needed) and run the full test suite: unit tests, integration tests with the
# real packaged models, the Rasa bot against a real Rasa server, SQLite, and a real
# PostgreSQL server that the tests start themselves (installed here from Debian's packages when missing). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/setup-bot.sh >/dev/null   # Rasa environment and trained bot, for the bot's tests

if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "test: installing PostgreSQL (Debian package) for the database tests"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "error: PostgreSQL server binaries (initdb, pg_ctl) are needed: install the 'postgresql' package" >&2
    exit 1
  fi
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check retrieval tests benchmarks
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
