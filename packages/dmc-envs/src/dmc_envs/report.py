"""Command `report`: the paper-style results table of any number of runs, as Markdown.

    python -m dmc_envs report data/metrics/summary.json                 # the table on stdout
    python -m dmc_envs report runs/ --out report.md --plot report.png    # every summary in runs/
    python -m dmc_envs report --exps --out report.md                     # every DVC experiment

A source is a `summary.json` (the results contract `summarize` writes) or a folder searched for
them (hidden folders skipped); the `results.json` files of `evaluate` found in a folder add their
candidate sweeps to the plot. `--exps` adds the summary of every finished DVC experiment of the
current commit (`dvc exp show`), read out of the experiment's commit with `dvc.api.read`: the
summary is a DVC-cached output, not a file in git, and `dvc exp show` cannot show a list.

The table has one row per (task, dataset) and one column per model and selection rule at its
number of candidates ("Diffuser one sample", "Diffuser q_argmax@16", ...). A cell reads
`foundation -> aligned`, each side the normalised score ± the std of the episode returns in
score units, with the success rate where the task defines success, and "–" for what was not
evaluated; a baseline's cell (stage `baseline`: BC, IQL's policy) is its one score. Stages other
than `foundation`, `aligned` and `baseline` (single passes, cascades) are named under the table.
A configuration found in several summaries (experiments that differ in seeds) is pooled over all
their episodes; a row found twice (the same run) counts once. `--plot` draws the normalised score
against the number of candidates: one panel per (task, dataset), one line per model, stage and
rule.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from dmc_core.atomic import atomic_path, atomic_write_text
from dmc_core.cli import Arg, Command
from dmc_core.errors import DmcError
from dmc_envs.evaluation.config import BASELINE_STAGE
from dmc_envs.evaluation.summarize import CONTRACT_KEYS

__all__ = [
    "REPORT_COMMAND",
    "Sources",
    "candidate_series",
    "experiment_summaries",
    "find_files",
    "gather",
    "plot_report",
    "pool",
    "read_summary",
    "render_report",
]

log = logging.getLogger(__name__)

NAME = "report"
SUMMARY_FILE = "summary.json"
RESULTS_FILE = "results.json"
#: Where an experiment's summary is (the `summarize` stage's output in `dvc.yaml`).
EXPERIMENT_SUMMARY = "data/metrics/summary.json"
#: The two sides of a cell: the foundation model and the end of its alignment recipe.
CELL_STAGES = ("foundation", "aligned")
#: The stages of the table's rows: both sides of a cell, and baselines (a cell of one score).
TABLE_STAGES = (*CELL_STAGES, BASELINE_STAGE)
#: Experiment states whose commit holds the experiment's own results (None: run in place).
_FINISHED = (None, "Success")
MISSING = "–"
#: What makes two rows the same configuration (pooled if they come from different runs).
_KEY = ("task", "dataset", "model", "stage", "selection", "n_candidates")

Row = dict[str, Any]
Key = tuple[Any, ...]
Point = tuple[int, float]
Series = tuple[str, str, str]


@dataclass(frozen=True)
class Sources:
    """What a report reads: each summary's rows by where they came from, and sweep rows."""

    summaries: dict[str, list[Row]]
    sweeps: list[Row] = field(default_factory=list)


def gather(paths: Sequence[str], exps: bool = False) -> Sources:
    """The summaries (and, in folders, the sweeps) the sources name, in a fixed order."""
    if not paths and not exps:
        raise DmcError("name a summary.json, a folder holding some, or --exps")
    summaries: dict[str, list[Row]] = {}
    sweeps: list[Row] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files = find_files(path, SUMMARY_FILE)
            if not files:
                raise DmcError(f"{path}: no {SUMMARY_FILE} in this folder or below")
            for result in find_files(path, RESULTS_FILE):
                sweeps.extend(read_sweep(result))
        elif path.is_file():
            files = [path]
        else:
            raise DmcError(f"{path}: no such file or folder")
        for file in files:
            summaries.setdefault(str(file), read_summary(file))
    if exps:
        summaries.update(experiment_summaries())
    return Sources(summaries, sweeps)


def find_files(folder: Path, name: str) -> list[Path]:
    """Every file called `name` in `folder` or below, hidden folders (.git, .dvc) skipped."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if name in files:
            found.append(Path(root) / name)
    return sorted(found)


def read_summary(path: Path) -> list[Row]:
    """The rows of one `summary.json`; errors name the file and what is wrong with it."""
    try:
        text = path.read_text()
    except OSError as err:
        raise DmcError(f"{path}: unreadable: {err}") from err
    return parse_summary(text, str(path))


def parse_summary(text: str, where: str) -> list[Row]:
    """A summary's JSON text as its rows: a list of objects with the contract's keys."""
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as err:
        raise DmcError(f"{where}: not JSON: {err}") from err
    if not isinstance(rows, list):
        found = type(rows).__name__
        raise DmcError(f"{where}: not a summary (a JSON list of result rows): found a {found}")
    check_rows(rows, where)
    return rows


def read_sweep(path: Path) -> list[Row]:
    """The candidates sweep of one `evaluate` results file (its `sweep` rows)."""
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DmcError(f"{path}: unreadable evaluation results: {err}") from err
    sweep = document.get("sweep", []) if isinstance(document, dict) else None
    if not isinstance(sweep, list):
        raise DmcError(f"{path}: not evaluation results (an object with a 'sweep' list)")
    check_rows(sweep, f"{path} (sweep)")
    return sweep


def check_rows(rows: list[Any], where: str) -> None:
    """Every row must be an object with the results contract's keys."""
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise DmcError(f"{where}: row {number} is a {type(row).__name__}, not an object")
        missing = [k for k in CONTRACT_KEYS if k not in row]
        if missing:
            raise DmcError(f"{where}: row {number} lacks the contract keys {missing}")


def experiment_summaries(path: str = EXPERIMENT_SUMMARY) -> dict[str, list[Row]]:
    """The summary of every finished DVC experiment of the current commit, by "experiment
    <name> (<rev>)". Queued, running and failed experiments are skipped with a warning (a
    queued one's commit holds the workspace as it was when queued, not results of its own)."""
    try:
        import dvc.api
        from dvc.exceptions import DvcException
    except ImportError as err:
        raise DmcError("--exps needs DVC installed (pip install dvc)") from err
    try:
        table = dvc.api.exp_show()
    except DvcException as err:
        raise DmcError(f"--exps: dvc exp show failed: {err}") from err
    found = {}
    for entry in table:
        if not entry.get("Experiment"):
            continue  # the workspace and the baseline commit
        label = f"experiment {entry['Experiment']} ({entry['rev']})"
        if entry.get("State") not in _FINISHED:
            log.warning("%s: %s, skipped", label, str(entry["State"]).lower())
            continue
        try:
            text = dvc.api.read(path, rev=entry["rev"])
        except DvcException as err:
            log.warning("%s: no %s (%s), skipped", label, path, err)
            continue
        found[label] = parse_summary(text, f"{label}: {path}")
    if not found:
        raise DmcError(f"--exps: no finished DVC experiment of this commit has {path}")
    return found


def pool(rows: Iterable[Row]) -> dict[Key, Row]:
    """One row per configuration (`_KEY`): identical rows count once; rows of different runs
    are pooled over all their episodes (`pooled` says how many runs)."""
    unique = {json.dumps(row, sort_keys=True): row for row in rows}
    groups: dict[Key, list[Row]] = {}
    for _, row in sorted(unique.items()):
        groups.setdefault(tuple(row[k] for k in _KEY), []).append(row)
    return {key: _pooled(group) for key, group in sorted(groups.items(), key=_sort_key)}


def _pooled(group: list[Row]) -> Row:
    """Several runs of one configuration as one: means weighted by episodes, and the std of
    all their episodes' returns (each row's std is over its own episodes, ddof 0)."""
    if len(group) == 1:
        return {**group[0], "pooled": 1}
    counts = [row["episodes"] for row in group]
    total = sum(counts)

    def mean(key: str) -> float:
        return sum(n * row[key] for n, row in zip(counts, group, strict=True)) / total

    moment = sum(
        n * (row["return_std"] ** 2 + row["return_mean"] ** 2)
        for n, row in zip(counts, group, strict=True)
    )
    return_mean = mean("return_mean")
    pooled = {
        **group[0],
        "episodes": total,
        "return_mean": return_mean,
        "return_std": math.sqrt(max(0.0, moment / total - return_mean**2)),
        "normalized_score": mean("normalized_score"),
        "pooled": len(group),
    }
    if all(row.get("success_rate") is not None for row in group):
        pooled["success_rate"] = mean("success_rate")
    else:
        pooled.pop("success_rate", None)
    return pooled


def _sort_key(item: tuple[Key, Any]) -> tuple[str, ...]:
    return tuple(str(part) for part in item[0])


def render_report(sources: Sources) -> str:
    """The Markdown report: what it was made from, the protocol, the table, how to read it."""
    all_rows = [row for rows in sources.summaries.values() for row in rows]
    rows = [row for row in all_rows if row["stage"] in TABLE_STAGES]
    cells = pool(rows)
    lines = [
        f"**Normalised scores, foundation -> aligned**, from {_sources_line(sources)}.",
        "",
        _protocol_line(rows),
        "",
    ]
    critics = _critics_line(rows)
    if critics:
        lines += [critics, ""]
    if cells:
        lines += [*_table(cells), "", _legend(cells)]
    else:
        lines.append("No foundation or aligned rows in these summaries.")
    others = sorted({str(row["stage"]) for row in all_rows} - set(TABLE_STAGES))
    if others:
        lines += ["", f"Other stages in the summaries, not in the table: {', '.join(others)}."]
    return "\n".join(lines) + "\n"


def _sources_line(sources: Sources) -> str:
    names = ", ".join(f"`{name}`" for name in sorted(sources.summaries))
    count = len(sources.summaries)
    return f"{count} summar{'y' if count == 1 else 'ies'} ({names})"


def _protocol_line(rows: list[Row]) -> str:
    """What the rows say about how they were made: seeds, episodes, score references."""
    protocols = [row["protocol"] for row in rows if isinstance(row.get("protocol"), dict)]
    seeds = sorted({p["seed"] for p in protocols if "seed" in p})
    episodes = sorted({row["episodes"] for row in rows})
    parts = []
    if seeds:
        parts.append(f"evaluation seed {', '.join(map(str, seeds))}")
    if episodes:
        parts.append(f"{', '.join(map(str, episodes))} episodes per configuration and run")
    references = _references_by_text(rows)
    if references:
        refs = ", ".join(f"{', '.join(tasks)} {text}" for text, tasks in references)
        parts.append(f"scores normalised by {refs}")
    return f"Protocol: {'; '.join(parts)}." if parts else "Protocol: not recorded in the rows."


def _critics_line(rows: list[Row]) -> str:
    """How well each (task, dataset)'s critic ranks its data, where the rows record it: the
    measure of how far every choice by Q in that table row can be trusted. Empty if no row
    records a ranking."""
    rankings = sorted(
        {
            (str(row["task"]), str(row["dataset"]), str(row.get("critic")), row["critic_ranking"])
            for row in rows
            if isinstance(row.get("critic_ranking"), (int, float))
        }
    )
    if not rankings:
        return ""
    listed = "; ".join(f"{task}/{data} `{name}` {rank:.2f}" for task, data, name, rank in rankings)
    return (
        "Critics' ranking of their data (Spearman of Q(s, a) with the returns-to-go, "
        f"in-sample, as `fit_critic` recorded it): {listed}."
    )


def _references_by_text(rows: list[Row]) -> list[tuple[str, list[str]]]:
    """Each distinct score-reference text ("low / high (source)") with the tasks that share
    it, so that tasks normalised alike (MetaWorld's four) are named once; in task order."""
    tasks_by_text: dict[str, set[str]] = {}
    for row in rows:
        text = _reference_text(row)
        if text:
            tasks_by_text.setdefault(text, set()).add(str(row["task"]))
    groups = [(text, sorted(tasks)) for text, tasks in tasks_by_text.items()]
    return sorted(groups, key=lambda group: group[1])


def _reference_text(row: Row) -> str:
    """The row's score references as text ("low / high (source)"); empty if none."""
    refs = _references(row)
    if refs is None:
        return ""
    source = row["protocol"]["score_references"][2:]
    return f"{refs[0]:g} / {refs[1]:g}" + (f" ({source[0]})" if source else "")


def _references(row: Row) -> tuple[float, float] | None:
    """The row's (low, high) score references, if its protocol records them."""
    protocol = row.get("protocol")
    refs = protocol.get("score_references") if isinstance(protocol, dict) else None
    if not isinstance(refs, list) or len(refs) < 2 or refs[0] == refs[1]:
        return None
    return float(refs[0]), float(refs[1])


def _columns(cells: Mapping[Key, Row]) -> list[tuple[str, str, int]]:
    """(model, rule, candidates) of every column: models by name, one sample first."""
    found = {(key[2], key[4], key[5]) for key in cells}
    return sorted(found, key=lambda c: (str(c[0]), c[1] != "none", str(c[1]), c[2]))


def _column_title(model: str, rule: str, candidates: int) -> str:
    """`decision_diffuser`, `q_argmax`, 16 -> `Decision Diffuser q_argmax@16` (BC stays BC)."""
    name = " ".join(word[:1].upper() + word[1:] for word in model.split("_"))
    what = "one sample" if (rule, candidates) == ("none", 1) else f"{rule}@{candidates}"
    return f"{name} {what}"


def _table(cells: Mapping[Key, Row]) -> list[str]:
    """The Markdown table: a row per (task, dataset), a column per model and rule."""
    columns = _columns(cells)
    places = sorted({(key[0], key[1]) for key in cells}, key=lambda p: tuple(map(str, p)))
    lines = [
        "| task | dataset | " + " | ".join(_column_title(*c) for c in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for task, dataset in places:
        entries = [
            _cell(*(cells.get((task, dataset, model, stage, rule, n)) for stage in TABLE_STAGES))
            for model, rule, n in columns
        ]
        lines.append(f"| {task} | {dataset} | " + " | ".join(entries) + " |")
    return lines


def _cell(foundation: Row | None, aligned: Row | None, baseline: Row | None = None) -> str:
    """`foundation -> aligned`, a baseline's score alone, or "–" where none was evaluated."""
    if foundation is None and aligned is None:
        return MISSING if baseline is None else _side(baseline)
    return f"{_side(foundation)} -> {_side(aligned)}"


def _side(row: Row | None) -> str:
    """One side of a cell: score ± return std in score units, [success rate]."""
    if row is None:
        return MISSING
    text = f"{row['normalized_score']:.1f}"
    refs = _references(row)
    if refs is not None:
        text += f" ± {100.0 * row['return_std'] / (refs[1] - refs[0]):.1f}"
    if row.get("success_rate") is not None:
        text += f" [{100.0 * row['success_rate']:.0f}%]"
    return text


def _legend(cells: Mapping[Key, Row]) -> str:
    """How to read a cell, said under the table."""
    pooled = sum(1 for row in cells.values() if row["pooled"] > 1)
    text = (
        "Each cell: normalised score ± the std of the episode returns in score units "
        "(100 σ_R / (R_high - R_low); no ± where a row records no references), "
        "foundation -> aligned; [p%]: success rate, where the task defines success; "
        f"{MISSING}: not evaluated. One sample: rule `none`; `<rule>@<n>`: the rule choosing "
        "among n candidates per decision."
    )
    if any(key[3] == BASELINE_STAGE for key in cells):
        text += f" Baselines (stage `{BASELINE_STAGE}`): one score, the policy's mean action."
    if pooled:
        text += (
            f" {pooled} cell side{'s pool' if pooled > 1 else ' pools'} the episodes of "
            "several runs of one configuration."
        )
    return text


def candidate_series(rows: Iterable[Row]) -> dict[tuple[str, str], dict[Series, list[Point]]]:
    """The plot's data: by (task, dataset), by (model, stage, rule; "one sample" for `none`),
    the (candidates, normalised score) points of the foundation, aligned and baseline rows."""
    panels: dict[tuple[str, str], dict[Series, list[Point]]] = {}
    for (task, dataset, model, stage, rule, n), row in pool(
        row for row in rows if row["stage"] in TABLE_STAGES
    ).items():
        what = "one sample" if rule == "none" else rule
        series = panels.setdefault((task, dataset), {})
        series.setdefault((model, stage, what), []).append((n, row["normalized_score"]))
    return {
        place: {key: sorted(points) for key, points in sorted(series.items())}
        for place, series in sorted(panels.items())
    }


def plot_report(rows: Iterable[Row], path: str | os.PathLike[str]) -> Path:
    """Normalised score against candidates per decision (log2 axis): a panel per (task,
    dataset), a line per model (colour), stage (foundation solid, aligned dashed and hollow)
    and rule (marker; a square for one sample)."""
    panels = candidate_series(rows)
    keys = [key for series in panels.values() for key in series]
    colours = {m: f"C{i % 10}" for i, m in enumerate(sorted({k[0] for k in keys}))}
    rules = sorted({k[2] for k in keys} - {"one sample"})
    markers = {"one sample": "s"} | {r: "o^vD<>"[i % 6] for i, r in enumerate(rules)}
    width = min(3, max(1, len(panels)))
    height = max(1, math.ceil(len(panels) / width))
    fig = Figure(figsize=(5.0 * width, 4.0 * height), layout="constrained")
    axes = fig.subplots(height, width, squeeze=False).ravel()
    for ax, ((task, dataset), series) in zip(axes, panels.items(), strict=False):
        for (model, stage, rule), points in series.items():
            xs, ys = zip(*points, strict=True)
            solid = stage == "foundation"
            ax.plot(
                xs,
                ys,
                "-" if solid else "--",
                color=colours[model],
                marker=markers[rule],
                markerfacecolor=colours[model] if solid else "white",
                label=f"{model} {stage} {rule}",
            )
        counts = sorted({n for points in series.values() for n, _ in points})
        ax.set_xscale("log", base=2)
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.set_xlabel("candidates per decision")
        ax.set_ylabel("normalised score")
        ax.set_title(f"{task} {dataset}", fontsize="medium")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if not panels:
        axes[0].text(0.5, 0.5, "no foundation or aligned rows", ha="center", va="center")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return Path(path)


def _run(args: argparse.Namespace) -> None:
    """The command: gather, render, and write (or print) the table; draw the plot if asked."""
    sources = gather(args.sources or [], args.exps)
    text = render_report(sources)
    if args.plot:
        rows = [row for rows in sources.summaries.values() for row in rows]
        plot_report([*rows, *sources.sweeps], args.plot)
    if args.out:
        atomic_write_text(args.out, text)
        count = len(sources.summaries)
        print(f"wrote {args.out}: the table of {count} summar{'y' if count == 1 else 'ies'}")
    else:
        print(text, end="")


REPORT_COMMAND = Command(
    name=NAME,
    summary="The paper-style results table (Markdown) of summary.json files or DVC experiments.",
    args=(
        Arg("sources", "summary.json files, or folders searched for them", False, many=True),
        Arg("--exps", "add the summary of every finished DVC experiment", switch=True),
        Arg("--out", "the Markdown file to write (default: print it)", False, output=True),
        Arg("--plot", "a PNG of score against candidates per model", False, output=True),
    ),
    run=_run,
)
