"""Contact sheets: frames of one episode the evaluation played, on one PNG.

The sheet shows an episode the evaluation itself played (by default its first: env 0 of the
vector env reset with the protocol's seed). Its recorded actions are replayed from the same
seed in the task's rendering env (`Task.render_env`), which starts and steps as env 0 does, and
`count` frames evenly spaced over the episode (the start and the end included) are rendered.
Replaying samples no model again, and the frames are of the very episode behind the results
row: the replay's observations are compared with the recorded ones (`EpisodeFrames.replay_gap`)
and a divergence is logged.

Cost, measured on 2 busy CPU cores with software EGL, 12 frames of 240 x 240 pixels, the PNG
included: 2.9-3.7 s for a 500-step MetaWorld episode (button-press, drawer-open; about 0.2 s
of it replays the steps, the rest renders and draws) and 0.9-1.0 s for a 300-step PushT one.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import gymnasium
import numpy as np

from dmc_core.atomic import atomic_path
from dmc_envs.evaluation.episodes import EpisodeResult
from dmc_envs.tasks.base import Task
from dmc_envs.tasks.rendering import RenderUnavailableError

__all__ = [
    "FRAME_PIXELS",
    "EpisodeFrames",
    "RenderUnavailableError",
    "SheetLayout",
    "draw_contact_sheet",
    "episode_frames",
    "frame_steps",
    "replay_frames",
    "write_contact_sheet",
]

log = logging.getLogger(__name__)

#: Side of a rendered frame, in pixels.
FRAME_PIXELS = 240
#: Frames per row of a contact sheet.
SHEET_COLUMNS = 6
#: A replay gap above this means the replay left the evaluated episode (the recorded
#: observations are float32, which rounds them by about 1e-7 relative).
REPLAY_TOLERANCE = 1e-4
#: Inches of one panel of the sheet, and of the figure's title.
_PANEL_INCHES, _TITLE_INCHES = 2.0, 0.8


@dataclass(frozen=True)
class EpisodeFrames:
    """Frames of one replayed episode, and where each was taken.

    `successes` is None where the task defines no success. `replay_gap` is the largest
    difference of a replayed observation from the recorded one, relative to 1 + |recorded|
    (about 1e-7 for a faithful replay, float32's rounding; inf if the replay ended early).

    Shapes:
        steps, returns, successes: (N,), frame k taken after `steps[k]` steps (0: the start),
        when the episode had collected `returns[k]`; images: (N, size, size, 3) uint8.
    """

    steps: np.ndarray
    images: np.ndarray
    returns: np.ndarray
    successes: np.ndarray | None
    length: int
    replay_gap: float

    @property
    def episode_return(self) -> float:
        """The return of the whole episode (the last frame's)."""
        return float(self.returns[-1])

    @property
    def success(self) -> bool | None:
        """Whether the episode succeeded at any step (None: the task has no success)."""
        return None if self.successes is None else bool(self.successes[-1])


@dataclass(frozen=True)
class SheetLayout:
    """How a contact sheet is laid out: `panels` frames in a `rows` x `columns` grid."""

    rows: int
    columns: int
    panels: int


def frame_steps(length: int, count: int) -> np.ndarray:
    """`count` steps evenly spaced over an episode of `length` steps, 0 and `length` included
    (fewer when the episode has fewer than `count` states).

    Shapes: -> (min(count, length + 1),) increasing ints.
    """
    if count < 1 or length < 0:
        raise ValueError(f"frame_steps needs count >= 1 and length >= 0, got {count}, {length}")
    if count == 1:
        return np.array([length])
    return np.unique(np.round(np.linspace(0, length, count)).astype(int))


def replay_frames(
    task: Task,
    actions: np.ndarray,
    seed: int,
    count: int,
    observations: np.ndarray | None = None,
    size: int = FRAME_PIXELS,
) -> EpisodeFrames:
    """Replay `actions` from `reset(seed=seed)` in the task's rendering env; render `count`
    frames evenly spaced over the episode (`frame_steps`).

    `observations` (if given) are the episode's recorded ones, which the replay's are
    compared with (`EpisodeFrames.replay_gap`).

    Shapes:
        actions: (T, act_dim); observations: (T + 1, obs_dim).

    Raises:
        MissingPieceError: the task has no `render_env`.
        RenderUnavailableError: the task's env cannot render here (`Task.render_env`).
    """
    make_env = task.require("render_env", "the evaluation's contact sheet")
    length = int(actions.shape[0])
    wanted = set(frame_steps(length, count).tolist())
    env = make_env(size)
    try:
        observation, _ = env.reset(seed=seed)
        taken: list[tuple[int, np.ndarray, float, bool]] = []
        running, succeeded, gap = 0.0, False, _gap(observation, observations, 0)
        for t in range(length + 1):
            if t in wanted:
                taken.append((t, _render(env), running, succeeded))
            if t == length:
                break
            # float64, as the evaluation's vector env received them.
            observation, reward, terminated, truncated, info = env.step(
                np.asarray(actions[t], dtype=np.float64)
            )
            running += float(reward)
            succeeded |= bool(info.get("success", False))
            gap = max(gap, _gap(observation, observations, t + 1))
            if (terminated or truncated) and t + 1 < length:
                log.warning("%s: the replay ended after %d of %d steps", task.name, t + 1, length)
                taken.append((t + 1, _render(env), running, succeeded))
                gap = math.inf
                break
    finally:
        env.close()
    if gap > REPLAY_TOLERANCE:
        log.warning("%s: the replay differs from the evaluated episode by %.3g", task.name, gap)
    steps, images, returns, successes = zip(*taken, strict=True)
    return EpisodeFrames(
        steps=np.array(steps),
        images=np.stack(images),
        returns=np.array(returns),
        successes=np.array(successes) if task.success else None,
        length=int(steps[-1]),
        replay_gap=gap,
    )


def episode_frames(
    task: Task,
    result: EpisodeResult,
    seed: int,
    count: int,
    episode: int = 0,
    size: int = FRAME_PIXELS,
) -> EpisodeFrames:
    """Frames of episode `episode` of an evaluation's `result`, rolled out with `seed` (env
    `episode` of the vector env starts from `seed + episode`)."""
    part = result.transitions.episode_slices()[episode]
    return replay_frames(
        task,
        result.transitions.actions[part],
        seed + episode,
        count,
        observations=result.observations()[episode],
        size=size,
    )


def draw_contact_sheet(frames: EpisodeFrames, path: Path, title: str) -> SheetLayout:
    """Draw the frames in a grid of `SHEET_COLUMNS` columns into the PNG `path`, atomically;
    each panel titled with its step, the return so far and (where defined) success so far."""
    from matplotlib.figure import Figure  # here: matplotlib costs every stage's start-up

    panels = len(frames.steps)
    columns = min(panels, SHEET_COLUMNS)
    rows = -(-panels // columns)
    size = (columns * _PANEL_INCHES, rows * (_PANEL_INCHES + 0.3) + _TITLE_INCHES)
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for k, axis in enumerate(axes):
        axis.set_axis_off()
        if k < panels:
            axis.imshow(frames.images[k])
            axis.set_title(_panel_title(frames, k), fontsize="small")
    fig.suptitle(title, fontsize="medium")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return SheetLayout(rows, columns, panels)


def write_contact_sheet(
    task: Task,
    result: EpisodeResult,
    seed: int,
    count: int,
    path: Path,
    heading: str,
) -> SheetLayout:
    """The contact sheet of an evaluation's first episode, titled `heading` and a line on the
    episode (return, normalised score, success, length)."""
    frames = episode_frames(task, result, seed, count)
    return draw_contact_sheet(frames, path, f"{heading}\n{_episode_line(task, frames, seed)}")


def _render(env: gymnasium.Env) -> np.ndarray:
    """One frame. Shapes: (size, size, 3) uint8."""
    return np.asarray(env.render(), dtype=np.uint8)


def _gap(observation: np.ndarray, recorded: np.ndarray | None, t: int) -> float:
    """How far a replayed observation is from the recorded one at step `t`: the largest
    |replayed - recorded| / (1 + |recorded|) over its dimensions (0 without a record)."""
    if recorded is None:
        return 0.0
    expected = np.asarray(recorded[t], dtype=np.float64)
    difference = np.abs(np.asarray(observation, dtype=np.float64) - expected)
    return float((difference / (1.0 + np.abs(expected))).max(initial=0.0))


def _panel_title(frames: EpisodeFrames, k: int) -> str:
    line = f"step {frames.steps[k]}\nreturn {frames.returns[k]:.4g}"
    if frames.successes is not None:
        line += ", success" if frames.successes[k] else ", no success yet"
    return line


def _episode_line(task: Task, frames: EpisodeFrames, seed: int) -> str:
    score = task.returns.normalized(frames.episode_return)
    line = (
        f"episode from seed {seed}: return {frames.episode_return:.4g} (normalised "
        f"{score:.1f}), {frames.length} steps"
    )
    if frames.success is not None:
        line += f", {'success' if frames.success else 'no success'}"
    return line
