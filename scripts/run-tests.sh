#!/usr/bin/env bash
# The whole test suite: set up .venv (and the system packages the end-to-end tests drive), then pytest.
# Extra arguments go to pytest, e.g. scripts/run-tests.sh -m "not distributed".
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/bootstrap.sh"
"$ROOT/scripts/system-deps.sh"
source "$ROOT/scripts/airflow-env.sh"
cd "$ROOT"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
