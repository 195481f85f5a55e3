"""Stage `summarize`: every evaluation in one results file, one metrics view and one picture.

    python -m dmc_envs summarize --results data/metrics/evaluate \
        --training data/models,data/critics --out data/metrics/summary.json \
        --headline data/metrics/headline.json --plots data/plots/summary

`summary.json` is the results contract that later stages and outside tools read: a JSON list
with one object per evaluated configuration (task, dataset, model, formulation, stage,
selection, n_candidates, episodes, return_mean, return_std, normalized_score, coherency (null,
with the reason in `coherency_missing`, where the task lacks what it needs), candidate_entropy,
`success_rate` where the task defines success, `<score>_mean` for each episode score the task
defines (`Task.episode_scores`, e.g. PushT's `final_coverage_mean`), and the protocol).
`dvc metrics show` cannot display a list, so the same numbers also go to `headline.json`, nested as
run -> "<selection>@<n>" -> metric. The pictures: `candidates.png` (score against candidates,
one panel per run with a sweep), `learning_curves.png` (the training loss of every model and
critic, from their dvclive logs) and `alignment_curves.png` (the held-out objective of every
alignment pass).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from dmc_core.atomic import atomic_write_text
from dmc_core.errors import DmcError
from dmc_envs.evaluation.config import SummarizeConfig
from dmc_envs.evaluation.plots import plot_candidates_grid, plot_learning_curves

__all__ = ["CONTRACT_KEYS", "collect_results", "summarize"]

log = logging.getLogger(__name__)

#: The keys every row of `summary.json` has (the results contract).
CONTRACT_KEYS = (
    "task",
    "dataset",
    "model",
    "formulation",
    "stage",
    "selection",
    "n_candidates",
    "episodes",
    "return_mean",
    "return_std",
    "normalized_score",
    "coherency",
    "candidate_entropy",
)
_ORDER = ("task", "dataset", "model", "stage", "selection", "n_candidates")
TRAINING_CURVE = "train/loss"
ALIGNMENT_CURVE = "align/objective"


def summarize(config: SummarizeConfig, args: argparse.Namespace) -> None:
    """Gather `<results>/*/results.json` into the summary, the headline and the picture."""
    documents = collect_results(Path(args.results))
    rows = sorted(
        (row for doc in documents.values() for row in doc["rows"]),
        key=lambda r: tuple(str(r[k]) for k in _ORDER),
    )
    atomic_write_text(Path(args.out), json.dumps(rows, indent=2) + "\n")
    headline = _headline(rows, config.headline)
    atomic_write_text(Path(args.headline), json.dumps(headline, indent=2) + "\n")
    panels = [
        (name, doc["sweep"], next((r for r in doc["rows"] if r["selection"] == "none"), None))
        for name, doc in documents.items()
        if doc["sweep"]
    ]
    plots = Path(args.plots)
    plot_candidates_grid(panels, plots / "candidates.png")
    directories = [Path(p) for p in args.training.split(",") if p]
    curves = training_curves(directories)
    if curves:
        plot_learning_curves(curves, plots / "learning_curves.png")
    objectives = training_curves(directories, ALIGNMENT_CURVE)
    if objectives:
        plot_learning_curves(
            objectives, plots / "alignment_curves.png", "held-out objective r(z_0)"
        )
    log.info("summary of %d configurations:\n%s", len(rows), markdown_table(rows))


def collect_results(directory: Path) -> dict[str, dict[str, Any]]:
    """Every run's results document, by run name; errors name the file and the problem."""
    files = sorted(directory.glob("*/results.json"))
    if not files:
        raise DmcError(f"{directory}: no evaluation results (*/results.json) to summarise")
    documents = {}
    for path in files:
        try:
            document = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DmcError(f"{path}: unreadable evaluation results: {err}") from err
        for row in document.get("rows", []):
            missing = [k for k in CONTRACT_KEYS if k not in row]
            if missing:
                raise DmcError(f"{path}: a row lacks the contract keys {missing}")
        documents[path.parent.name] = document
    return documents


def training_curves(directories: list[Path], metric: str = TRAINING_CURVE) -> dict[str, Path]:
    """One dvclive metric log (default the training loss) of every run under the given
    directories, by "<directory>/<run>"."""
    found = {}
    depth = metric.count("/") + 3
    for directory in directories:
        for path in sorted(directory.glob(f"*/live/plots/metrics/{metric}.tsv")):
            found[f"{directory.name}/{path.parents[depth].name}"] = path
    return found


def _headline(rows: list[dict[str, Any]], metrics: list[str]) -> dict[str, Any]:
    view: dict[str, Any] = {}
    for row in rows:
        entry = view.setdefault(row["run"], {})
        entry[f"{row['selection']}@{row['n_candidates']}"] = {
            m: row[m] for m in metrics if m in row
        }
    return view


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (the closing summary of a run)."""
    header = (
        "| model | dataset | stage | selection | n | return | score | coherency | entropy |\n"
        "|---|---|---|---|---:|---:|---:|---:|---:|"
    )
    lines = [
        f"| {r['model']} ({r['formulation']}) | {r['dataset']} | {r['stage']} | "
        f"{r['selection']} | {r['n_candidates']} | {r['return_mean']:.2f} ± "
        f"{r['return_std']:.2f} | {r['normalized_score']:.1f} | {_coherency(r)} | "
        f"{r['candidate_entropy']:.2f} |"
        for r in rows
    ]
    return "\n".join([header, *lines])


def _coherency(row: dict[str, Any]) -> str:
    return "n/a" if row["coherency"] is None else f"{row['coherency']:.3f}"
