#!/usr/bin/env bash
# Set up (if needed) and start the product on embedded defaults: the bundled demo catalog
# and FAQ, indexes in ./var, the query log in SQLite (./var/retrieval.db).
# Options: HOST and PORT environment variables (default 127.0.0.1:8000).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
echo "start: building the indexes from data/ (skipped when nothing changed)"
.venv/bin/retrieval ingest --if-changed
echo "start: the retrieval service will listen on http://${HOST:-127.0.0.1}:${PORT:-8000} (API docs at /docs); Ctrl-C stops it"
exec .venv/bin/retrieval serve --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}"
