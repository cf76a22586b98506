#!/usr/bin/env bash
# Create (if missing) and update the virtual environment .venv at the repository root.
# Idempotent: re-installs only when requirements.txt or pyproject.toml changed since the last run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  echo "bootstrap: creating .venv" >&2
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.ragindex-installed"
want="$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
quiet_pip() {  # this machine's pip config names local mirrors that may be absent: drop those warnings only
  .venv/bin/python -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "bootstrap: installing requirements (torch pinned to the CPU build)" >&2
  quiet_pip install -q --upgrade pip
  # torch first and pinned, so nothing can pull a CUDA build as a dependency
  quiet_pip install -q "$(grep '^torch==' requirements.txt)"
  quiet_pip install -q -r requirements.txt
  quiet_pip install -q --no-deps -e .
  echo "$want" > "$stamp"
fi
# Byte-compile the project's own modules, as pip does for an installed package (the image's `pip install`):
# an editable install is not compiled, and where PYTHONDONTWRITEBYTECODE is set (this machine) every task's
# start would compile them again, ~60 ms of a no-op build (benchmarks/README.md). Stale files are re-checked
# by Python against the source's mtime, so an edit is never run from old bytecode.
.venv/bin/python -m compileall -q include dags plugins > /dev/null
# A checkout dates every file "now": give the sample corpus its documents' own dates (see the script).
"$PYTHON" scripts/date_sample_corpus.py
