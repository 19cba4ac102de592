#!/usr/bin/env bash
# Set up (if needed) and run the full test suite: unit tests, integration tests with the
# real packaged models, the Rasa bot against a real Rasa server, SQLite, and a real
# PostgreSQL server that the tests start themselves (installed here from Debian's packages
# when missing). Lint, layering contracts and type checks run first.
#
#   ./scripts/test.sh                 everything (what CI runs)
#   ./scripts/test.sh unit            tests/unit: the fast tier, no models, servers or demo index
#   ./scripts/test.sh integration     tests/integration: real models, SQLite, PostgreSQL
#   ./scripts/test.sh e2e             tests/e2e: the real Rasa server, the launcher, a browser
#
# A tier sets up only what it needs (the unit tier needs no Rasa and no Debian packages).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
tier=all
if [[ $# -gt 0 && "$1" =~ ^(unit|integration|e2e|all)$ ]]; then
  tier=$1
  shift
fi
./scripts/setup.sh
if [[ $tier == all || $tier == e2e ]]; then
  ./scripts/setup-bot.sh >/dev/null   # Rasa environment and trained bot, for the bot's tests
fi

# Debian packages the tests use: a PostgreSQL server, and Chromium with a CJK font for the
# browser test of the shop page. Installed only when missing.
missing=()
if [[ $tier == unit ]]; then
  :  # no servers, no browser
elif ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
if [[ $tier == all || $tier == e2e ]]; then
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  [[ -d /usr/share/fonts/truetype/wqy ]] || missing+=(fonts-wqy-microhei)
fi
if (( ${#missing[@]} )); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "test: installing ${missing[*]} (Debian packages) for the database and browser tests"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
      || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
  else
    echo "error: the tests need these Debian packages: ${missing[*]} (install them, e.g. sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# One CPU thread for torch and BLAS in each test process: the two workers already keep both
# cores busy, and a 2-thread team per worker spends its time waiting for a descheduled member
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
.venv/bin/ruff check retrieval tests benchmarks
.venv/bin/lint-imports --no-cache   # the layering contracts in pyproject.toml
.venv/bin/mypy   # type checks, strict on the query path (pyproject.toml); .mypy_cache keeps reruns fast
# two workers (one per core of the reference machine): whole files per worker so a module's
# fixtures stay in one process, the end-to-end files on one worker (one running stack), the
# longest files first (tests/conftest.py); the demo index is built once per run
workers=(-n "${TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder)
if [[ $tier == all ]]; then
  exec .venv/bin/python -m pytest -p no:cacheprovider "${workers[@]}" "$@"
fi
# A tier is a folder of tests/ (the folder sets the marker; files still at the top of tests/
# get theirs in tests/conftest.py): the other tiers' folders are not even imported.
ignore=()
for other in unit integration e2e; do
  [[ $other == "$tier" ]] || ignore+=("--ignore=tests/$other")
done
exec .venv/bin/python -m pytest -p no:cacheprovider "${workers[@]}" -m "$tier" "${ignore[@]}" "$@"
