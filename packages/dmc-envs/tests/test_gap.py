"""The `gap` command's measurement, on the countdown toy task (`dmc_envs.testing`).

Episodes of lengths 2, 8 and 3; a constant action 0.4 passes a return of 1 in episodes 1 and 2
only. The foundation proposes the grid -1, -0.5, 0, 0.5, 1 at every state; the critic scores an
action by its value plus the state's env index (observation 0), so the expected means are known.
"""

from __future__ import annotations

import argparse
import re

import numpy as np
import pytest
import torch
from torch import Tensor

from dmc_core.errors import ConfigError
from dmc_envs.evaluation import Proposal, Selection, roll_out
from dmc_envs.gap import GAP_COMMAND, measure_gap, render_gap, visited_histories
from dmc_envs.testing import Constant, Countdown


class Grid:
    """Candidate k of n is the action -1 + 2k / (n - 1)."""

    role, history_len, action_exec, device = "policy", 1, 1, torch.device("cpu")

    def propose(self, history: Tensor, n: int, generator: torch.Generator) -> Proposal:
        grid = torch.linspace(-1.0, 1.0, n)
        return Proposal(actions=grid[None, :, None, None].expand(len(history), n, 1, 1).clone())


def value_plus_env(obs: Tensor, actions: Tensor) -> Tensor:
    """Q = the first action + the env index the observation holds."""
    return actions[:, 0, 0] + obs[:, 0]


def test_each_history_holds_its_own_episode_padded_with_its_first_observation() -> None:
    task = Countdown([2, 4])
    played = roll_out(task, Constant(0.4), Selection("none", 1), None, episodes=2, seed=0)
    histories = visited_histories(played.transitions, 3)
    assert histories.shape == (6, 3, 2)
    # Rows of episode 1 (env index 1), steps 0..3: never a row of episode 0 in the window.
    np.testing.assert_array_equal(histories[2:, :, 0], np.ones((4, 3)))
    np.testing.assert_array_equal(histories[2:, :, 1], [[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3]])
    np.testing.assert_array_equal(histories[:2, :, 1], [[0, 0, 0], [0, 0, 1]])


def test_the_gap_compares_both_models_at_the_aligned_models_states_split_by_success() -> None:
    task = Countdown([2, 8, 3])
    gap = measure_gap(
        task, Grid(), Constant(0.4), value_plus_env, episodes=3, states=100, candidates=5, seed=0
    )
    assert gap.states == 13 and gap.success_rate == pytest.approx(2 / 3)
    # Failed: episode 0 (offset 0, 2 states); succeeded: episode 1 (offset 1, 8) and 2 (2, 3).
    offsets = {"all": (8 + 6) / 13, "success": (8 + 6) / 11, "failure": 0.0}
    expected = {
        "foundation one sample": 0.0,
        "foundation best of n": 1.0,
        "aligned one sample": 0.4,
        "aligned best of n": 0.4,
    }
    for row, value in expected.items():
        for column, offset in offsets.items():
            assert gap.rows[row][column] == pytest.approx(value + offset), (row, column)
    assert gap.closed == pytest.approx(0.4)
    assert gap.beaten == pytest.approx(3 / 5)  # 0.4 beats -1, -0.5 and 0
    table = render_gap(gap)
    assert "| foundation best of 5 | 2.077 | 2.273 | 1.000 |" in table
    assert "gap closed: 40%" in table and "beats 60%" in table


def test_a_subset_of_states_is_drawn_when_fewer_are_asked_for() -> None:
    task = Countdown([2, 8, 3])
    gap = measure_gap(
        task, Grid(), Grid(), value_plus_env, episodes=3, states=4, candidates=3, seed=0
    )
    assert gap.states == 4
    # The same model on both sides closes none of the gap and beats a third of the candidates
    # (each grid value beats the lower ones: 0, 1 or 2 of 3).
    assert gap.closed == pytest.approx(0.0)
    assert gap.beaten == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("flag", "value"),
    [("episodes", "0"), ("states", "many"), ("candidates", "-3"), ("seed", "1.5")],
)
def test_a_count_that_is_no_whole_number_is_refused_naming_its_flag_before_loading(
    flag: str, value: str
) -> None:
    args = {"episodes": None, "states": None, "candidates": None, "seed": None, "out": None}
    args |= {"aligned": "missing.safetensors", "foundation": "missing.safetensors"}
    args |= {"critic": "missing.safetensors", "dataset": "missing.hdf5", flag: value}
    with pytest.raises(ConfigError, match=rf"gap --{flag}: '{re.escape(value)}' is not a whole"):
        GAP_COMMAND.run(argparse.Namespace(**args))


def test_no_gap_to_close_is_said_so_not_divided_by_zero() -> None:
    task = Countdown([2, 3])
    gap = measure_gap(
        task,
        Constant(0.1),
        Constant(0.4),
        value_plus_env,
        episodes=2,
        states=5,
        candidates=4,
        seed=0,
    )
    assert gap.closed is None and gap.beaten == pytest.approx(1.0)
    assert "gap closed: n/a (no gap" in render_gap(gap)
