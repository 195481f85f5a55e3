"""Learning curves in dvclive's file layout, written atomically and restorable from a snapshot.

A stage's `live/` folder holds `plots/metrics/<name>.tsv` (a `step<TAB><leaf>` header, then one
row per logged step) and `metrics.json` (the latest value of every metric, nested at `/`, and the
step), the layout `dvc plots` and `dvc metrics` read and dvclive writes. dvclive itself appends
to its files in place and cannot resume a folder DVC deleted (`dvc repro -f` removes `live/`
before the rerun), so a killed run would leave a torn row, and a resumed one would lose or repeat
rows. These curves keep every logged row in memory, rewrite each file whole through an atomic
rename, and hand their rows to the run's snapshot: a resumed run rebuilds `live/` from them, so
the finished curve holds each step once and covers the whole run. No wall-clock time is
written here: a curve of a byte-identical run is byte-identical.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dmc_core.atomic import atomic_write_text

__all__ = ["Curves"]

Rows = dict[str, list[tuple[int, float]]]


class Curves:
    """The logged metrics of one run (see the module docstring)."""

    def __init__(self, directory: Path, rows: Mapping[str, list[Any]] | None = None) -> None:
        """Start the folder afresh with `rows` (a snapshot's `state()`, or none)."""
        self.directory = directory
        self.rows: Rows = {k: [(int(s), float(v)) for s, v in r] for k, r in (rows or {}).items()}
        shutil.rmtree(directory, ignore_errors=True)
        for name in self.rows:
            self._write_curve(name)

    def log(self, step: int, values: Mapping[str, float]) -> None:
        """Record `values` at `step` (a step logged again replaces its earlier row)."""
        for name, value in values.items():
            rows = [row for row in self.rows.setdefault(name, []) if row[0] < step]
            self.rows[name] = [*rows, (step, float(value))]
            self._write_curve(name)

    def state(self) -> dict[str, list[list[float]]]:
        """Every row, JSON-ready (what a snapshot keeps)."""
        return {name: [[s, v] for s, v in rows] for name, rows in self.rows.items()}

    def latest(self) -> dict[str, float]:
        """The last logged value of every metric."""
        return {name: rows[-1][1] for name, rows in self.rows.items() if rows}

    def write_summary(self, extra: Mapping[str, Any] | None = None) -> None:
        """`metrics.json`: the latest values nested at `/`, the last step, and `extra` (written
        once, when the run ends: DVC reads it only then)."""
        summary: dict[str, Any] = {}
        for name, value in self.latest().items():
            *parents, leaf = name.split("/")
            node = summary
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value if math.isfinite(value) else None  # JSON has no NaN
        steps = [rows[-1][0] for rows in self.rows.values() if rows]
        summary["step"] = max(steps, default=0)
        summary |= dict(extra or {})
        text = json.dumps(summary, indent=4, allow_nan=False) + "\n"
        atomic_write_text(self.directory / "metrics.json", text)

    def _write_curve(self, name: str) -> None:
        leaf = name.rsplit("/", 1)[-1]
        lines = [f"step\t{leaf}", *(f"{s}\t{v!r}" for s, v in self.rows[name])]
        path = self.directory / "plots" / "metrics" / f"{name}.tsv"
        atomic_write_text(path, "\n".join(lines) + "\n")
