"""`dvc plots show` works offline: the project's page template inlines vega, and the `candidates`
plot template draws one line per candidate-selection rule.

A scratch git + DVC repository gets the project's `.dvc/config` and `.dvc/plots/candidates.json`,
the page template written by `scripts/offline-plots-template.py` (as `scripts/bootstrap.sh` does),
a small `candidates.json` metrics file and a `dvc.yaml` declaring it as a plot.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PLOT = "data/metrics/evaluate/diffuser/candidates.json"
RULES = ("q_argmax", "first", "random")
DVC_YAML = f"""\
plots:
  - {PLOT}:
      x: n_candidates
      y: normalized_score
      template: candidates
"""


def run(workdir: Path, *args: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(args, cwd=workdir, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


@pytest.fixture(scope="module")
def page(root: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The `dvc_plots/index.html` that `dvc plots show` writes in the scratch repository."""
    repo = tmp_path_factory.mktemp("plots")
    run(repo, "git", "init", "--quiet")
    run(repo, "dvc", "init", "--quiet")
    shutil.copy(root / ".dvc" / "config", repo / ".dvc" / "config")
    (repo / ".dvc" / "plots").mkdir()
    shutil.copy(root / ".dvc" / "plots" / "candidates.json", repo / ".dvc" / "plots")
    # Where DVC itself will look: a relative plots.html_template is relative to `.dvc/`.
    setting = run(repo, "dvc", "config", "plots.html_template").strip()
    generator = root / "scripts" / "offline-plots-template.py"
    run(repo, sys.executable, str(generator), str(repo / ".dvc" / setting))

    rows = [
        {"n_candidates": n, "normalized_score": 40.0 + 10 * i + 2 * k, "rule": rule}
        for i, rule in enumerate(RULES)
        for k, n in enumerate((1, 2, 4, 8, 16, 32))
    ]
    (repo / PLOT).parent.mkdir(parents=True)
    (repo / PLOT).write_text(json.dumps(rows))
    (repo / "dvc.yaml").write_text(DVC_YAML)
    run(repo, "dvc", "plots", "show")
    return (repo / "dvc_plots" / "index.html").read_text(encoding="utf-8")


def test_the_page_loads_nothing_from_the_network_and_inlines_vega(page: str) -> None:
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.IGNORECASE), "external script"
    assert "cdn.jsdelivr.net" not in page
    # The vl-convert bundle: vega, vega-lite and vega-embed, published on `window`.
    for name in ("vegaEmbed", "vega", "vegaLite"):
        assert f"window.{name}=" in page
    assert len(page) > 500_000, "the three libraries are several hundred KB"
    # DVC's plot div calls the global vegaEmbed after the library has been defined.
    call = page.index("vegaEmbed('#")
    assert page.index("window.vegaEmbed=") < call


def test_the_candidates_template_draws_one_line_per_rule_on_a_log2_axis(page: str) -> None:
    match = re.search(r"var spec = (\{.*?\});\s*vegaEmbed\(", page, re.DOTALL)
    assert match, "no vega-lite spec in the page"
    spec = json.loads(match.group(1))
    assert spec["mark"]["type"] == "line" and spec["mark"]["point"] is True
    encoding = spec["encoding"]
    assert encoding["color"] == {**encoding["color"], "field": "rule", "type": "nominal"}
    x, y = encoding["x"], encoding["y"]
    assert (x["field"], y["field"]) == ("n_candidates", "normalized_score")
    assert x["scale"] == {"type": "log", "base": 2}
    assert x["axis"]["values"] == [1, 2, 4, 8, 16, 32]
    values = spec["data"]["values"]
    assert {row["rule"] for row in values} == set(RULES)
    assert len(values) == 6 * len(RULES)
    assert "<DVC_METRIC" not in match.group(1), "an anchor was left unfilled"
