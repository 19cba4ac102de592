#!/bin/bash
# The demo's published versions scored by `retrieval eval --published` on both vector
# stores: built once as hnswlib files in /tmp/demo-store, copied into a local PostgreSQL +
# pgvector with the same version ids (publish_index), then the same three question sets on
# each store. One JSON line per run in var/reports/eval-store/. docs/scale-out.md
# ("Measured: the same answers") reports this run.
#   bash benchmarks/eval_both_stores.sh
set -e
cd "$(dirname "$0")/.."
out=var/reports/eval-store; mkdir -p $out
rm -rf /tmp/demo-store && mkdir -p /tmp/demo-store && chmod 755 /tmp/demo-store
.venv/bin/retrieval ingest --if-changed --data-dir /tmp/demo-store/var --no-progress > /dev/null
url=$(.venv/bin/python - <<'PY'
from pathlib import Path
from retrieval.localpg import LocalPostgres, embedded_bin_dir
from retrieval.index import VectorIndex
from retrieval.indexfolders import current_version, version_dir
from retrieval.settings import load_settings
from retrieval.indexstore import pg_store, close_store
from retrieval.vectorstore.pgpublish import publish_index
srv = LocalPostgres(Path("/tmp/demo-store/pg"), bin_dir=embedded_bin_dir()).start()
srv.create_database("vectors")
url = srv.conninfo("vectors")
s = load_settings(None, data_dir=Path("/tmp/demo-store/var"), vector_store="pgvector", vector_store_url=url)
st = pg_store(s)
for kind in ("faq", "products"):
    v = current_version(s.index_dir, kind)
    publish_index(st, kind, v, VectorIndex.load(version_dir(s.index_dir, kind, v)))
close_store(url)
print(url)
PY
)
for store in hnswlib pgvector; do
  export RETRIEVAL_VECTOR_STORE=$store RETRIEVAL_VECTOR_STORE_URL=$url
  .venv/bin/retrieval eval faq --published --data-dir /tmp/demo-store/var --queries data/faq/calibration.jsonl --json --no-progress > $out/faq-$store.out 2> $out/faq-$store.err
  .venv/bin/retrieval eval faq --published --data-dir /tmp/demo-store/var --queries data/eval/faq-zh.jsonl --json --no-progress > $out/faqzh-$store.out 2> $out/faqzh-$store.err
  .venv/bin/retrieval eval products --published --data-dir /tmp/demo-store/var --queries data/eval/products-zh.jsonl --json --no-progress > $out/productszh-$store.out 2> $out/productszh-$store.err
  echo "$store done"
done
.venv/bin/python -c "
from pathlib import Path
from retrieval.localpg import LocalPostgres, embedded_bin_dir
LocalPostgres(Path('/tmp/demo-store/pg'), bin_dir=embedded_bin_dir()).stop()"
