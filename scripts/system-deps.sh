#!/usr/bin/env bash
# Debian packages the end-to-end tests drive for real: Chromium (UI checks), PostgreSQL + Redis (the
# CeleryExecutor stack), docker-compose (validates docker-compose.yaml without an engine) and real documents
# (texlive-latex-base-doc's PDFs for the registry's storage test, python3.11-doc's reST sources for the prose
# rules' test).
# Installs only what is missing; needs root and apt (as on CI). Elsewhere those tests skip with a reason,
# except in CI (CI set): there a package that cannot be installed is an error, and so are those tests.
set -euo pipefail
missing_packages() {
  command -v chromium >/dev/null || echo chromium
  command -v redis-server >/dev/null || echo redis-server
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || echo postgresql
  command -v docker-compose >/dev/null || echo docker-compose
  ls /usr/share/doc/texlive-doc/latex/base/*.pdf >/dev/null 2>&1 || echo texlive-latex-base-doc
  [[ -d /usr/share/doc/python3.11/html/_sources ]] || echo python3.11-doc
}
in_ci() { [[ -n "${CI:-}" && "${CI,,}" != "0" && "${CI,,}" != "false" && "${CI,,}" != "no" ]]; }
mapfile -t need < <(missing_packages)
((${#need[@]})) || exit 0
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  if in_ci; then
    echo "system-deps: missing ${need[*]} and cannot install them here (not root or no apt)" >&2
    exit 1
  fi
  echo "system-deps: missing ${need[*]} (not root or no apt): the tests that need them will skip" >&2
  exit 0
fi
echo "system-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
mapfile -t still < <(missing_packages)
if ((${#still[@]})); then
  echo "system-deps: apt-get ran but ${still[*]} is still missing" >&2
  exit 1
fi
