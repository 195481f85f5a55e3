"""Evaluation over a vector environment whose episodes end at different steps.

The toy task (`dmc_envs.testing.Countdown`): env i of a batch terminates after `lengths[i]`
steps (or is truncated at its limit), pays the action's value at every step, and reports success
once its running sum passes 1 (and keeps going). Exact returns, lengths, success counts and the
recorded transitions are known by hand.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dmc_envs.evaluation import Selection, roll_out
from dmc_envs.tasks import MissingPieceError
from dmc_envs.testing import Constant, Countdown


def play(task: Countdown, proposer: Constant):
    return roll_out(task, proposer, Selection("none", 1), None, episodes=len(task.lengths), seed=0)


def test_episodes_of_different_lengths_count_every_return_exactly() -> None:
    task = Countdown([1, 3, 5, 2])
    proposer = Constant(0.5)
    result = play(task, proposer)
    np.testing.assert_array_equal(result.lengths, [1, 3, 5, 2])
    np.testing.assert_allclose(result.returns, [0.5, 1.5, 2.5, 1.0])
    # Only running episodes decide: 4, then 3, 2, 1, 1 of them.
    assert proposer.batches == [4, 3, 2, 1, 1] and result.decisions == 5
    data = result.transitions
    assert len(data) == 11 and data.num_episodes == 4
    np.testing.assert_array_equal(data.terminals.nonzero()[0], [0, 3, 8, 10])
    assert not data.timeouts.any()
    np.testing.assert_allclose(data.rewards, 0.5)
    # Every recorded row is its own episode's: (env index, step) observations in order.
    np.testing.assert_array_equal(data.observations[:, 0], [0, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3])
    np.testing.assert_array_equal(data.next_observations[:, 1], [1, 1, 2, 3, 1, 2, 3, 4, 5, 1, 2])


def test_a_time_limit_is_recorded_as_a_timeout_and_chunks_stop_at_the_end() -> None:
    task = Countdown([10, 2], limit=3)
    proposer = Constant(1.0, action_exec=2)
    result = play(task, proposer)
    np.testing.assert_array_equal(result.lengths, [3, 2])
    np.testing.assert_allclose(result.returns, [3.0, 2.0])
    data = result.transitions
    np.testing.assert_array_equal(data.timeouts, [False, False, True, False, False])
    np.testing.assert_array_equal(data.terminals, [False, False, False, False, True])


def test_a_success_counts_once_per_episode_however_long_it_lasts() -> None:
    # Returns pass 1 after 3 steps of 0.4: env 0 (2 steps) never succeeds, env 1 succeeds at
    # step 3 and stays successful for 5 more steps, env 2 at step 3 and ends there.
    task = Countdown([2, 8, 3])
    result = play(task, Constant(0.4))
    np.testing.assert_array_equal(result.successes, [False, True, True])
    assert result.successes.mean() == pytest.approx(2 / 3)


def test_outcomes_list_each_episode_in_order() -> None:
    task = Countdown([2, 8, 3])
    outcomes = play(task, Constant(0.4)).outcomes()
    assert outcomes["lengths"] == [2, 8, 3] and outcomes["successes"] == [False, True, True]
    np.testing.assert_allclose(outcomes["returns"], [0.8, 3.2, 1.2])
    assert outcomes["scores"] == {}
    json.dumps(outcomes)  # plain lists, ready for episodes.json


def test_a_stage_asking_for_a_missing_piece_is_told_which_and_of_which_task() -> None:
    task = Countdown([1])
    with pytest.raises(MissingPieceError, match=r"needs the task's plan reward, and task "):
        task.require("plan_reward", "align.passes.p.reward plan_return")
    with pytest.raises(MissingPieceError, match=r"'countdown' \(test/Countdown-v0\) has none"):
        task.require("dynamics", "planner coherency")
