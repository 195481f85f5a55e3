"""Pictures of evaluation results: normalised score against the number of candidates.

Only the object-oriented matplotlib API is used (no pyplot), as in `dmc_envs.nav1d.plot`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from dmc_core.atomic import atomic_path

__all__ = ["plot_candidates", "plot_candidates_grid", "plot_learning_curves", "read_curve"]


def _draw_candidates(
    ax: Axes, sweep: Sequence[Mapping[str, Any]], baseline: Mapping[str, Any] | None, title: str
) -> None:
    """One line per selection rule; a dashed line at the one-sample (`none`) score."""
    for rule in dict.fromkeys(r["selection"] for r in sweep):
        points = sorted(
            (r["n_candidates"], r["normalized_score"]) for r in sweep if r["selection"] == rule
        )
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", label=rule)
    if baseline is not None:
        ax.axhline(baseline["normalized_score"], color="grey", linestyle="--", label="none @ 1")
    counts = sorted({r["n_candidates"] for r in sweep})
    ax.set_xscale("log", base=2)
    if counts:
        ax.set_xticks(counts, [str(c) for c in counts])
    ax.set_xlabel("candidates per decision")
    ax.set_ylabel("normalised score")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize="small")
    ax.set_title(title, fontsize="medium")


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return Path(path)


def plot_candidates(
    sweep: Sequence[Mapping[str, Any]],
    baseline: Mapping[str, Any] | None,
    path: str | os.PathLike[str],
    title: str = "",
) -> Path:
    """Save normalised score against candidates (log2 axis) for each rule of `sweep` rows."""
    return plot_candidates_grid([(title, sweep, baseline)], path)


def plot_candidates_grid(
    panels: Sequence[tuple[str, Sequence[Mapping[str, Any]], Mapping[str, Any] | None]],
    path: str | os.PathLike[str],
) -> Path:
    """Several `plot_candidates` panels side by side: (title, sweep rows, baseline row)."""
    fig = Figure(figsize=(5.0 * max(1, len(panels)), 4.0), layout="constrained")
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)[0]
    for ax, (title, sweep, baseline) in zip(axes, panels, strict=False):
        _draw_candidates(ax, sweep, baseline, title)
    return _save(fig, path)


def read_curve(path: str | os.PathLike[str]) -> tuple[list[float], list[float]]:
    """A dvclive metric file (`step<TAB>value` with a header row) as (steps, values)."""
    lines = Path(path).read_text().splitlines()[1:]
    pairs = [line.split("\t")[:2] for line in lines if line.strip()]
    return [float(s) for s, _ in pairs], [float(v) for _, v in pairs]


def plot_learning_curves(
    curves: Mapping[str, str | os.PathLike[str]],
    path: str | os.PathLike[str],
    label: str = "training loss",
) -> Path:
    """One panel per run: its logged metric (`label`) against the step (log y if positive)."""
    names = sorted(curves)
    fig = Figure(figsize=(4.0 * max(1, len(names)), 3.2), layout="constrained")
    axes = fig.subplots(1, max(1, len(names)), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=False):
        steps, values = read_curve(curves[name])
        ax.plot(steps, values)
        if values and min(values) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.set_title(name, fontsize="medium")
        ax.grid(alpha=0.3)
    return _save(fig, path)
