#!/usr/bin/env bash
# Set up what the pipeline needs (scripts/bootstrap.sh), then run it: `dvc repro`.
#
#   bash scripts/run-pipeline.sh [dvc repro arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh .venv
export PATH="$PWD/.venv/bin:$PATH"
dvc repro "$@"
dvc metrics show 2>/dev/null || true
