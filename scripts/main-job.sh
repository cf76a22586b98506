#!/usr/bin/env bash
# The main job end to end on the embedded defaults: set up .venv, run the real rag_ingest DAG once
# (airflow dags test, SQLite, local registry under .ragindex/), then show the result and query it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/bootstrap.sh"
source "$ROOT/scripts/airflow-env.sh"
cd "$ROOT"
mkdir -p "$AIRFLOW_HOME"
airflow db migrate >"$AIRFLOW_HOME/db-migrate.log" 2>&1 || { cat "$AIRFLOW_HOME/db-migrate.log" >&2; exit 1; }
# promote and rollback take turns in this pool (ragindex_airflow/pools.py): `dags test` ignores pools, but a
# scheduler (`airflow standalone` on this home, below) never runs a task whose pool is missing.
airflow pools set "${RAGINDEX_GOVERNANCE_POOL:-ragindex_governance}" 1 \
  "ragindex: one promotion or rollback at a time (they read, then move, production)" \
  >>"$AIRFLOW_HOME/db-migrate.log" 2>&1 || { cat "$AIRFLOW_HOME/db-migrate.log" >&2; exit 1; }
echo "==> airflow dags test rag_ingest (sample corpus, require_approval=false; log: $AIRFLOW_HOME/rag_ingest-test.log)"
if ! airflow dags test rag_ingest -c '{"require_approval": false}' >"$AIRFLOW_HOME/rag_ingest-test.log" 2>&1; then
  tail -40 "$AIRFLOW_HOME/rag_ingest-test.log" >&2
  echo "rag_ingest failed; full log: $AIRFLOW_HOME/rag_ingest-test.log" >&2
  exit 1
fi
grep -o "DagRun Finished: .*state=[a-z_]*" "$AIRFLOW_HOME/rag_ingest-test.log" | tail -1 | sed 's/, run_start_date.*state=/ ... state=/'
grep -o "Skipping task: pull_documents.*\|corpus unchanged: [^;]*" "$AIRFLOW_HOME/rag_ingest-test.log" | head -1 || true
echo
echo "==> versions in the local registry ($RAGINDEX_HOME/registry)"
ragindex versions vector-index
ragindex versions rag-release
echo
echo "==> lineage of the production release (index + prompt + eval set)"
ragindex lineage rag-release:production
echo
echo "==> ragindex search vector-index:production \"How long is a forklift certificate valid?\""
ragindex search vector-index:production "How long is a forklift certificate valid?" -k 3 2>/dev/null
cat <<MSG

Done. Next:
  source .venv/bin/activate && source scripts/airflow-env.sh
  ragindex search vector-index:production "your question"      # query the production index
  ragindex versions eval-report --json                          # eval figures of every candidate
  airflow standalone                                            # the UI: trigger rag_ingest, review in Required Actions
MSG
