#!/usr/bin/env bash
# Set up nox (in .venv-tools) and run the whole test suite: every default nox session.
#
#   bash scripts/run-tests.sh [nox arguments...]     e.g. -s lint, or -s "tests(dmc-core)"
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
if [[ ! -x .venv-tools/bin/nox ]]; then
  "$python" -m venv .venv-tools
  .venv-tools/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt nox
fi
exec .venv-tools/bin/nox "$@"
