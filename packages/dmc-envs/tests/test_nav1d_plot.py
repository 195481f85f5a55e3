"""Tests for the atomic reward-field plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from dmc_envs.nav1d import Nav1DTask, UniformPolicy, plot_reward_field, rollout

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _positions(task: Nav1DTask, n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    data = rollout(task, UniformPolicy(), rng.uniform(-1, 1, n), rng)
    states = data["next_observations"][:, 0].reshape(n, task.horizon)
    return np.concatenate([data["observations"][:: task.horizon, :1], states], axis=1)


def test_writes_a_png_and_no_temp_file(tmp_path: Path) -> None:
    task = Nav1DTask.from_params(horizon=6)
    target = tmp_path / "field.png"
    target.write_bytes(b"stale")  # an existing file is replaced
    result = plot_reward_field(task, _positions(task, 20), str(target), title="uniform")
    assert result == target
    content = target.read_bytes()
    assert content[:8] == PNG_SIGNATURE and len(content) > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["field.png"]


def test_accepts_no_trajectories(tmp_path: Path) -> None:
    task = Nav1DTask.from_params(horizon=3)
    target = plot_reward_field(task, np.empty((0, 4)), tmp_path / "empty.png")
    assert target.read_bytes()[:8] == PNG_SIGNATURE
    target = plot_reward_field(task, np.empty((0, 1)), tmp_path / "empty.png")
    assert target.read_bytes()[:8] == PNG_SIGNATURE


def test_failed_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_savefig(self: Figure, *args: object, **kwargs: object) -> None:
        Path(args[0]).write_bytes(b"partial")  # a half-written file must not survive
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    task = Nav1DTask.from_params(horizon=4)
    with pytest.raises(OSError, match="disk full"):
        plot_reward_field(task, _positions(task, 3), tmp_path / "field.png")
    assert list(tmp_path.iterdir()) == []


def test_rejects_positions_of_the_wrong_length(tmp_path: Path) -> None:
    task = Nav1DTask.from_params(horizon=4)
    with pytest.raises(ValueError, match="positions"):
        plot_reward_field(task, np.zeros((2, 4)), tmp_path / "field.png")
    assert list(tmp_path.iterdir()) == []
