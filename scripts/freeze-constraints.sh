#!/usr/bin/env bash
# Regenerate constraints.txt from a fresh full install (run after adding a dependency).
#
#   bash scripts/freeze-constraints.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
pip=("$tmp/venv/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" torch==2.13.0
"${pip[@]}" -c <(grep -E '^(torch|mujoco|omegaconf)==' constraints.txt) \
  -e packages/dmc-core -e packages/dmc-critic -e "packages/dmc-envs[mujoco,minari,behaviour,metaworld,pusht]" -e packages/dmc-align \
  dvc dvclive nox pytest ruff vl-convert-python
{
  sed -n '/^#/p' constraints.txt
  "$tmp/venv/bin/python" -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$/torch==\1/'
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) pins"
