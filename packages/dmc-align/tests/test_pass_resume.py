"""A pass killed between two snapshots and started again ends exactly as an uninterrupted one:
adapters, critic (online rounds), events, curves; and a stale snapshot is never resumed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from dmc_align.align import run_pass
from dmc_align.lora import adapter_state
from dmc_align.progress import PassProgress
from dmc_align.spec import PassSpec
from dmc_core.config import from_plain
from dmc_core.data import TransitionDataset
from dmc_core.models import ControlModel
from dmc_core.training import Snapshot
from dmc_critic import CriticSpec, build_critic

KILLED_AFTER = 10  # updates; the last snapshot before it is at update 8


class KilledError(Exception):
    """Stands for a SIGKILL: the process stops wherever it is."""


class KilledProgress(PassProgress):
    """A progress that kills the pass after `KILLED_AFTER` updates."""

    def advance(self) -> None:
        super().advance()
        if self.bar.n == KILLED_AFTER:
            raise KilledError


def spec(method: str, online: bool, keep_rounds: int = 1) -> PassSpec:
    knobs = {
        "model": "m",
        "after": "m",
        "dataset": "d",
        "critic": "c",
        "method": method,
        "max_steps": 16,
        "eval_every": 4,
        "snapshot_every": 4,
        "conditions": 8,
        "held_out": 8,
        "sft": {
            "candidates": 4,
            "batch_size": 8,
            "updates_per_batch": 2,
            "keep_rounds": keep_rounds,
        },
        "qvpg": {"last_steps": 2, "bc_weight": 0.1},
        "online": {
            "enabled": online,
            "every": 6,
            "episodes": 4,
            "critic_steps": 3,
            "critic_batch": 16,
        },
    }
    return from_plain(PassSpec, knobs, "test", "pass")


Tiny = Callable[[str], ControlModel]


def run(
    tiny: Tiny,
    dataset: TransitionDataset,
    out: Path,
    method: str,
    online: bool,
    killed: bool = False,
    keep_rounds: int = 1,
) -> dict[str, object]:
    """One pass on fresh copies of the same model and critic, snapshotting into `out`."""
    model = tiny("policy")
    torch.manual_seed(0)
    critic = build_critic(CriticSpec(hidden=16, layers=1), dataset).eval()
    pass_spec = spec(method, online, keep_rounds)
    progress = (KilledProgress if killed else PassProgress)("p", pass_spec, out)
    resume = Snapshot(out / ".resume", "same settings")
    torch.manual_seed(123)  # the global stream too must continue where it was
    outcome = run_pass("p", pass_spec, model, dataset, critic, 0, progress, resume)
    curves = {p.name: p.read_text() for p in sorted((out / "live").rglob("*")) if p.is_file()}
    return {
        "outcome": asdict(outcome),
        "adapters": adapter_state(model),
        "critic": critic.state_dict(),
        "curves": curves,
        "resumed_at": progress.resumed_at,
    }


def same(first: dict[str, object], second: dict[str, object]) -> None:
    assert first["outcome"] == second["outcome"]
    assert first["curves"] == second["curves"]
    for part in ("adapters", "critic"):
        ours, theirs = first[part], second[part]
        assert ours.keys() == theirs.keys()  # type: ignore[attr-defined]
        for name in ours:  # type: ignore[attr-defined]
            assert torch.equal(ours[name], theirs[name]), f"{part} {name}"  # type: ignore[index]


@pytest.mark.parametrize(
    ("method", "online", "keep_rounds"), [("sft", True, 1), ("qvpg", False, 1), ("sft", False, 0)]
)
def test_a_killed_pass_resumes_to_the_uninterrupted_result(
    tmp_path: Path,
    tiny: Tiny,
    dataset: TransitionDataset,
    method: str,
    online: bool,
    keep_rounds: int,
) -> None:
    """Catches: a pass that restarts from zero, or resumes without its optimiser, generator,
    best state, counters, online buffer, critic, curves or SFT's pool of kept rounds (any of
    them changes the result)."""
    whole = run(tiny, dataset, tmp_path / "whole", method, online, keep_rounds=keep_rounds)
    with pytest.raises(KilledError):
        run(tiny, dataset, tmp_path / "parts", method, online, True, keep_rounds)
    assert (tmp_path / "parts" / ".resume" / "state.safetensors").is_file()
    resumed = run(tiny, dataset, tmp_path / "parts", method, online, keep_rounds=keep_rounds)
    assert resumed["resumed_at"] == [8] and whole["resumed_at"] == []
    same(resumed, whole)
    if online:
        assert any(e["kind"] == "critic_updated" for e in whole["outcome"]["events"])  # type: ignore[index]


def test_a_snapshot_of_other_settings_is_not_resumed(
    tmp_path: Path, tiny: Tiny, dataset: TransitionDataset
) -> None:
    """Catches: a changed pass (or input) continuing a stale snapshot."""
    with pytest.raises(KilledError):
        run(tiny, dataset, tmp_path, "qvpg", False, killed=True)
    stale = Snapshot(tmp_path / ".resume", "other settings")
    assert stale.read() is None
    assert Snapshot(tmp_path / ".resume", "same settings").read() is not None
