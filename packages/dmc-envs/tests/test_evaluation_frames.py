"""Contact sheets of evaluation episodes (`dmc_envs.evaluation.frames`) and the seam behind
them (`Task.render_env`): the panels, that the frames are of the evaluated episode, tasks that
cannot render, and MetaWorld rendering offscreen."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from torch import Tensor

from dmc_envs.evaluation import EvalProtocol, Proposal, Selection, roll_out
from dmc_envs.evaluation.episodes import EpisodeResult
from dmc_envs.evaluation.evaluate import write_contact_sheets
from dmc_envs.evaluation.frames import (
    REPLAY_TOLERANCE,
    draw_contact_sheet,
    episode_frames,
    frame_steps,
    replay_frames,
)
from dmc_envs.tasks import Task, build_task
from dmc_envs.tasks.base import MissingPieceError

#: Small frames keep the tests fast (PushT draws none smaller); the layout does not depend on them.
PIXELS = 96
SEED = 21


class UniformProposer:
    """Uniform random actions on the task's box (one step per decision)."""

    role = "policy"
    history_len = 1
    action_exec = 1
    device = torch.device("cpu")

    def __init__(self, task: Task) -> None:
        low, high = task.action_bounds()
        self.low, self.high = torch.tensor(low).float(), torch.tensor(high).float()

    def propose(self, history: Tensor, n: int, generator: torch.Generator) -> Proposal:
        """Shapes: history (B, To, obs_dim); returns (B, n, 1, act_dim)."""
        draws = torch.rand(history.shape[0], n, 1, self.low.numel(), generator=generator)
        return Proposal(actions=self.low + draws * (self.high - self.low))


@functools.cache
def _task(name: str) -> Task:
    return build_task(name)


@functools.cache
def _evaluated(name: str, episodes: int = 2) -> EpisodeResult:
    """What the evaluation plays from `SEED` with uniform random actions."""
    task = _task(name)
    return roll_out(
        task, UniformProposer(task), Selection("none", 1), None, episodes=episodes, seed=SEED
    )


def _first_frame(task: Task, seed: int) -> np.ndarray:
    env = task.render_env(PIXELS)  # type: ignore[misc]
    try:
        env.reset(seed=seed)
        return np.asarray(env.render())
    finally:
        env.close()


def _egl_unavailable() -> str | None:
    """Why MuJoCo cannot render offscreen with EGL here (None: it can)."""
    try:
        from mujoco.egl import GLContext

        GLContext(8, 8).free()
    except Exception as err:  # a missing library or device fails with its own error types
        return f"EGL is unavailable: {type(err).__name__}: {err}"
    return None


def test_frames_are_spread_over_the_episode_with_its_start_and_its_end() -> None:
    steps = frame_steps(300, 12)
    assert steps[0] == 0 and steps[-1] == 300 and steps.size == 12
    assert np.all(np.diff(steps) > 0) and np.ptp(np.diff(steps)) <= 1
    np.testing.assert_array_equal(frame_steps(4, 12), [0, 1, 2, 3, 4])  # fewer states than asked
    np.testing.assert_array_equal(frame_steps(7, 1), [7])


def test_a_pusht_sheet_is_a_png_of_one_panel_per_frame(tmp_path: Path) -> None:
    pytest.importorskip("gym_pusht")
    task = _task("pusht")
    frames = episode_frames(task, _evaluated("pusht"), SEED, count=9, size=PIXELS)
    path = tmp_path / "sheet.png"
    layout = draw_contact_sheet(frames, path, "pusht: uniform actions")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (layout.rows, layout.columns, layout.panels) == (2, 6, 9)
    assert frames.images.shape == (9, PIXELS, PIXELS, 3) and frames.images.dtype == np.uint8
    # 2 inches a panel, 2.3 a row plus 0.8 for the title, 100 dpi.
    assert imread(path).shape[:2] == (540, 1200)


def test_the_frames_are_of_the_episode_the_evaluation_played() -> None:
    pytest.importorskip("gym_pusht")
    task, result = _task("pusht"), _evaluated("pusht")
    second = episode_frames(task, result, SEED, count=3, episode=1, size=PIXELS)
    # Episode 1 is env 1 of the evaluation's vector env: it starts from seed + 1.
    np.testing.assert_array_equal(second.images[0], _first_frame(task, SEED + 1))
    assert not np.array_equal(second.images[0], _first_frame(task, SEED))
    assert second.length == result.lengths[1] and second.steps[-1] == result.lengths[1]
    assert second.episode_return == pytest.approx(result.returns[1], rel=1e-6)
    assert second.success == bool(result.successes[1])
    assert second.replay_gap < REPLAY_TOLERANCE


def test_a_metaworld_replay_stays_on_the_evaluated_episode() -> None:
    """The rendering env starts as env 0 of the evaluation's (metaworld's reset ignores its
    seed: the task's wrapper reseeds it) and rendering does not disturb the simulation."""
    pytest.importorskip("metaworld")
    if reason := _egl_unavailable():
        pytest.skip(reason)
    task, result = _task("button-press"), _evaluated("button-press", episodes=1)
    frames = episode_frames(task, result, SEED, count=2, size=PIXELS)
    assert frames.length == task.max_episode_steps
    assert frames.episode_return == pytest.approx(result.returns[0], rel=1e-6)
    assert frames.replay_gap < REPLAY_TOLERANCE


def test_metaworld_renders_a_frame_offscreen() -> None:
    pytest.importorskip("metaworld")
    if reason := _egl_unavailable():
        pytest.skip(reason)
    frame = _first_frame(_task("button-press"), SEED)
    assert frame.shape == (PIXELS, PIXELS, 3) and frame.dtype == np.uint8
    colours = np.unique(frame.reshape(-1, 3), axis=0)
    assert len(colours) > 50 and frame.std() > 10.0  # a scene, not a blank or flat image


def _rows(task: str) -> list[dict[str, Any]]:
    row = {
        "task": task,
        "run": "policy",
        "model": "policy",
        "kind": "policy",
        "stage": "foundation",
    }
    return [{**row, "selection": "none", "n_candidates": 1}]


def test_the_evaluate_stage_writes_a_sheet_per_rule(tmp_path: Path) -> None:
    pytest.importorskip("gym_pusht")
    results = {("none", 1): (_evaluated("pusht"), 0.0)}
    protocol = EvalProtocol(seed=SEED, frames=3)
    written = write_contact_sheets(_task("pusht"), _rows("pusht"), results, tmp_path, protocol)
    assert written == [tmp_path / "none_frames.png"] and written[0].is_file()
    off = EvalProtocol(seed=SEED, frames=0)
    assert (
        write_contact_sheets(_task("pusht"), _rows("pusht"), results, tmp_path / "off", off) == []
    )
    assert not (tmp_path / "off").exists()


def test_a_task_without_frames_is_skipped_with_a_log_line(tmp_path: Path, caplog) -> None:
    nav1d = _task("nav1d")
    results = {("none", 1): (_evaluated("nav1d"), 0.0)}
    with caplog.at_level(logging.INFO, logger="dmc_envs.evaluation.evaluate"):
        written = write_contact_sheets(nav1d, _rows("nav1d"), results, tmp_path, EvalProtocol())
    assert written == [] and list(tmp_path.iterdir()) == []
    assert "renders no frames" in caplog.text
    with pytest.raises(MissingPieceError, match=r"render env.*'nav1d'"):
        replay_frames(nav1d, np.zeros((3, 1)), SEED, count=2)


def test_a_task_that_cannot_render_here_leaves_the_stage_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("metaworld")
    monkeypatch.setenv("MUJOCO_GL", "no-such-backend")  # as a machine without a GL backend
    results = {("none", 1): (_evaluated("button-press", episodes=1), 0.0)}
    protocol = EvalProtocol(seed=SEED, frames=3)
    rows = _rows("button-press")
    with caplog.at_level(logging.WARNING, logger="dmc_envs.evaluation.evaluate"):
        written = write_contact_sheets(_task("button-press"), rows, results, tmp_path, protocol)
    assert written == [] and "MUJOCO_GL is 'no-such-backend'" in caplog.text


def test_pusht_refuses_frames_too_small_to_draw() -> None:
    pytest.importorskip("gym_pusht")
    with pytest.raises(ValueError, match="at least 96 pixels"):
        _task("pusht").render_env(48)  # type: ignore[misc]
