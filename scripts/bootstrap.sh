#!/usr/bin/env bash
# Create (or refresh) a virtual environment with the four dmc packages and DVC, and write
# .dvc/offline-plots.html, the page template that makes `dvc plots show` work offline.
#
#   bash scripts/bootstrap.sh [VENV_DIR]      (default: .venv)
#
# Needs only Python 3.11 and pip. torch is installed first and every install uses
# constraints.txt, so the CPU build of torch is never replaced by a CUDA build. A stamp file
# makes a second run a no-op until constraints.txt or a package's pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${1:-.venv}"
python="${PYTHON:-python3}"
# dmc-envs with the simulators of its task families (MuJoCo, MetaWorld, PushT), the Minari reader
# and the SAC trainer
packages=(packages/dmc-core packages/dmc-critic "packages/dmc-envs[mujoco,minari,behaviour,metaworld,pusht]" packages/dmc-align)
stamp="$venv/.dmc-bootstrap"
template=.dvc/offline-plots.html  # git-ignored; .dvc/config sets plots.html_template to it
want=$(cat constraints.txt packages/*/pyproject.toml scripts/bootstrap.sh scripts/offline-plots-template.py \
  | sha256sum | cut -d' ' -f1)

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "bootstrap: $venv is up to date"
  [[ -f "$template" ]] || "$venv/bin/python" scripts/offline-plots-template.py "$template"
  exit 0
fi
if [[ ! -x "$venv/bin/python" ]]; then
  echo "bootstrap: creating $venv with $("$python" --version)"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt)
echo "bootstrap: installing torch (CPU build) first"
"${pip[@]}" torch==2.13.0
echo "bootstrap: installing the dmc packages, dvc and vl-convert-python"
editable=()
for package in "${packages[@]}"; do editable+=(-e "$package"); done
"${pip[@]}" "${editable[@]}" dvc vl-convert-python
"$venv/bin/python" - <<'PY'
import torch
assert "+cpu" in torch.__version__ or not torch.version.cuda, torch.__version__
print(f"bootstrap: torch {torch.__version__}")
PY
"$venv/bin/python" scripts/offline-plots-template.py "$template"
echo "$want" > "$stamp"
