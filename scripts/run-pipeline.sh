#!/usr/bin/env bash
# Set up what the pipeline needs (scripts/bootstrap.sh), then run it: `dvc repro`, and print the
# results table of what it made (`python -m dmc_envs report`).
#
#   bash scripts/run-pipeline.sh [dvc repro arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh .venv
export PATH="$PWD/.venv/bin:$PATH"
dvc repro "$@"
summary=data/metrics/summary.json
if [[ -f "$summary" ]]; then
  python -m dmc_envs report "$summary"
else
  echo "no $summary yet (the summarize stage has not run): no results table"
fi
