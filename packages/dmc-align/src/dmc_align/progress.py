"""What a pass shows and logs as it runs: a progress bar, learning curves and its time.

The curves are the measurements of the schedule (`align/objective`, `align/lr`, the method's
metrics) and of the online rounds (`online/return`, `online/normalized_return`), in
`<out>/live/` (`dmc_core.training.curves`). The progress is part of the pass's snapshot (a
`dmc_align.snapshots.Stateful`): a resumed pass rebuilds its curves and adds the time spent
before the kill, so `timing.json` covers the whole pass.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from dmc_align.spec import PassSpec
from dmc_core.atomic import atomic_write_text
from dmc_core.training.curves import Curves

__all__ = ["PassProgress"]


class PassProgress:
    """Progress bar over the pass's updates, curves of its measurements, its time."""

    def __init__(self, name: str, spec: PassSpec, out: Path | None) -> None:
        """Curves in `<out>/live/` (none without `out`)."""
        from tqdm.auto import tqdm

        self.name, self.spec = name, spec
        self.bar = tqdm(total=spec.max_steps, desc=f"align {name} ({spec.method})", unit="step")
        self.curves = Curves(out / "live") if out is not None else None
        self.began, self.seconds_before = time.perf_counter(), 0.0
        self.resumed_at: list[int] = []

    def __enter__(self) -> PassProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def advance(self) -> None:
        """One update done."""
        self.bar.update(1)

    def measured(self, step: int, values: dict[str, float]) -> None:
        """Show and log one measurement of the objective."""
        self.bar.set_postfix(objective=f"{values['objective']:.3f}", lr=f"{values['lr']:.2g}")
        if self.curves is not None:
            self.curves.log(step, {f"align/{key}": value for key, value in values.items()})

    def online_round(self, step: int, values: dict[str, float]) -> None:
        """Log one online round's measurements (its episodes' returns) after update `step`."""
        if self.curves is not None:
            self.curves.log(step, {f"online/{key}": value for key, value in values.items()})

    def seconds(self) -> float:
        """The pass's time so far, parts before a resume included."""
        return self.seconds_before + time.perf_counter() - self.began

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The curves, the time and the updates done (JSON only)."""
        curves = self.curves.state() if self.curves is not None else {}
        record = {"curves": curves, "seconds": self.seconds(), "resumed_at": self.resumed_at}
        return {}, record | {"updates": self.bar.n}

    def load_state(self, tensors: Mapping[str, Tensor], record: Mapping[str, Any]) -> None:
        """Continue the curves, the clock and the bar where the snapshot left them."""
        if self.curves is not None:
            self.curves = Curves(self.curves.directory, record["curves"])
        self.seconds_before = float(record["seconds"])
        self.began = time.perf_counter()
        self.resumed_at = [*record["resumed_at"], int(record["updates"])]
        self.bar.n = int(record["updates"])
        self.bar.refresh()

    def finish(self, timing: Path) -> None:
        """The curves' `metrics.json`, and the pass's whole time in `timing` (a file no stage
        depends on)."""
        if self.curves is not None:
            self.curves.write_summary()
        seconds = self.seconds()
        record = {
            "stage": "align",
            "name": self.name,
            "seconds": round(seconds, 2),
            "updates": self.bar.n,
            "seconds_per_update": round(seconds / max(1, self.bar.n), 4),
            "resumed_at": self.resumed_at,
        }
        atomic_write_text(timing, json.dumps(record, indent=2) + "\n")
