"""Finished rollouts of an evaluation, kept so that a killed `evaluate` plays only the rest.

`evaluate` plays one rollout per (rule, candidates) pair. Each starts from the protocol's seeded
states with generators of its own, so what a rollout gives does not depend on the rollouts played
before it. Each finished rollout is kept as one file, `<rule>@<n>.npz`, written by one atomic
rename: its episodes' returns, lengths, successes and scores, every transition, its coherency,
decisions and wall time. The files live in `<out>/.resume/` (or under `$DMC_RESUME_ROOT`, as
the training stages' snapshots: `dmc_core.training.resume`) under a record of the run's settings
and the bytes of its model, critic and dataset, so that other settings or inputs play every
rollout again. A killed evaluation started again plays only the rollouts it has no file for and
writes what an uninterrupted one writes; the folder is removed once the outputs are written.
A rollout in play when the kill came starts again from its first step.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dmc_core.atomic import atomic_path
from dmc_core.data import ARRAY_KEYS, TransitionDataset
from dmc_core.training.resume import keyed_parts_directory
from dmc_envs.evaluation.episodes import EpisodeResult

__all__ = ["KeptRollouts"]

_SCORE = "score/"


class KeptRollouts:
    """The finished rollouts of one evaluation (see the module docstring)."""

    def __init__(self, beside_output: Path, key: Mapping[str, Any]) -> None:
        """Keep rollouts in `beside_output` (or under the resume root), for `key` only."""
        self.directory = keyed_parts_directory(beside_output, key)

    def _path(self, rule: str, candidates: int) -> Path:
        return self.directory / f"{rule}@{candidates}.npz"

    def get(self, rule: str, candidates: int) -> tuple[EpisodeResult, float] | None:
        """The kept rollout of (rule, candidates) and its wall time, None if not kept."""
        path = self._path(rule, candidates)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        record = json.loads(str(arrays.pop("record")))
        transitions = TransitionDataset(**{key: arrays.pop(key) for key in ARRAY_KEYS})
        scores = {
            name[len(_SCORE) :]: arrays.pop(name)
            for name in list(arrays)
            if name.startswith(_SCORE)
        }
        result = EpisodeResult(
            returns=arrays["returns"],
            lengths=arrays["lengths"],
            successes=arrays.get("successes"),
            coherency=record["coherency"],
            coherency_note=record["coherency_note"],
            decisions=record["decisions"],
            transitions=transitions,
            scores=scores,
        )
        return result, float(record["seconds"])

    def put(self, rule: str, candidates: int, result: EpisodeResult, seconds: float) -> None:
        """Keep a finished rollout of (rule, candidates) and its wall time (one atomic file)."""
        record = {
            "coherency": result.coherency,
            "coherency_note": result.coherency_note,
            "decisions": result.decisions,
            "seconds": seconds,
        }
        arrays = {
            **result.transitions.arrays(),
            "returns": result.returns,
            "lengths": result.lengths,
            **{f"{_SCORE}{name}": values for name, values in result.scores.items()},
            "record": np.array(json.dumps(record)),
        }
        if result.successes is not None:
            arrays["successes"] = result.successes
        with atomic_path(self._path(rule, candidates)) as tmp, tmp.open("wb") as handle:
            np.savez(handle, **arrays)

    def clear(self) -> None:
        """Remove every kept rollout (the evaluation's outputs are written)."""
        shutil.rmtree(self.directory, ignore_errors=True)
