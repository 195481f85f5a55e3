"""The make_dataset stage: files, provenance, statistics, and errors that name the input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from dmc_core.data import read_dataset
from dmc_core.testing import check_entry_point, run_module
from dmc_envs.nav1d import Nav1DTask, policy_from_dict
from dmc_envs.pictures import episode_observations
from dmc_envs.stages import STAGES

PARAMS = {
    "base": {"seed": 0},
    "make_dataset": {
        "nav1d": {"horizon": 6},
        "datasets": {
            "tiny": {"episodes": 20, "start_low": -1.0, "start_high": 0.0, "seed": 5},
            "pro": {"behaviour": "noisy_optimal", "noise_std": 0.05, "episodes": 20, "seed": 6},
        },
        "optimum_grid_per_step": 10,
        "plot_trajectories": 5,
    },
}


def run_stage(tmp_path: Path, name: str, params: dict | None = None) -> tuple[int, str, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params or PARAMS))
    out = tmp_path / "datasets" / f"{name}.hdf5"
    result = run_module(
        "dmc_envs", "make_dataset", "--name", name, "--out", str(out),
        "--plot", str(tmp_path / "plots" / f"{name}.png"), "--params", str(params_file),
    )  # fmt: skip
    return result.returncode, result.stderr, out


def test_entry_point_lists_make_dataset() -> None:
    check_entry_point("dmc_envs", STAGES)


def test_stage_writes_dataset_config_stats_and_picture(tmp_path: Path) -> None:
    code, err, out = run_stage(tmp_path, "tiny")
    assert code == 0, err
    data = read_dataset(out)
    assert (data.num_episodes, len(data)) == (20, 120)
    assert data.observations[::6, 0].max() <= 0.0  # starts in [start_low, start_high]
    assert data.attrs["dataset_kind"] == "tiny" and data.attrs["seed"] == 5
    assert (data.attrs["action_low"], data.attrs["action_high"]) == ([-1.0], [1.0])
    task = Nav1DTask.from_params(**data.attrs["env_kwargs"])
    assert task.horizon == 6
    policy = policy_from_dict(data.attrs["behavior_policy_spec"], task)
    np.testing.assert_allclose(policy.density(np.zeros(3), 0, np.zeros(3)), 0.5)
    resolved = yaml.safe_load(out.with_suffix(".config.yaml").read_text())
    assert resolved["make_dataset"]["datasets"]["tiny"]["episodes"] == 20
    stats = json.loads(out.with_suffix(".stats.json").read_text())
    returns = [data.rewards[part].sum() for part in data.episode_slices()]
    assert stats["return_mean"] == pytest.approx(float(np.mean(returns)), rel=1e-6)
    assert (tmp_path / "plots" / "tiny.png").read_bytes()[:4] == b"\x89PNG"


def test_expert_data_scores_near_the_optimum_and_random_data_near_zero(tmp_path: Path) -> None:
    scores = {}
    for name in ("tiny", "pro"):
        assert run_stage(tmp_path, name)[0] == 0
        stats = json.loads((tmp_path / "datasets" / f"{name}.stats.json").read_text())
        scores[name] = stats["normalized_score"]
    assert scores["pro"] > 90 and abs(scores["tiny"]) < 40


def test_same_params_give_byte_identical_datasets(tmp_path: Path) -> None:
    first = run_stage(tmp_path / "a", "tiny")[2].read_bytes()
    assert first == run_stage(tmp_path / "b", "tiny")[2].read_bytes()


def test_episode_observations_rebuild_the_trajectories(tmp_path: Path) -> None:
    out = run_stage(tmp_path, "tiny")[2]
    data = read_dataset(out)
    episodes = episode_observations(
        data.observations, data.next_observations, data.episode_slices()
    )
    positions = np.stack([episode[:, 0] for episode in episodes])
    assert positions.shape == (20, 7)
    np.testing.assert_array_equal(positions[:, 1:], data.next_observations[:, 0].reshape(20, 6))


def test_unknown_dataset_name_and_bad_values_name_the_key(tmp_path: Path) -> None:
    code, err, out = run_stage(tmp_path, "nope")
    assert code == 2 and "make_dataset.datasets has no entry 'nope'" in err
    bad = yaml.safe_load(yaml.safe_dump(PARAMS))
    bad["make_dataset"]["datasets"]["tiny"]["behaviour"] = "greedy"
    code, err, _ = run_stage(tmp_path, "tiny", bad)
    assert code == 2 and "task 'nav1d' (dmc/Nav1D-v0) has no behaviour 'greedy'" in err
    assert "Traceback" not in err and not out.exists()


def test_an_option_the_task_does_not_read_names_the_entry_and_the_tasks_options(
    tmp_path: Path,
) -> None:
    bad = yaml.safe_load(yaml.safe_dump(PARAMS))
    bad["make_dataset"]["datasets"]["tiny"]["options"] = {"successful_only": False}
    code, err, out = run_stage(tmp_path, "tiny", bad)
    assert code == 2, err
    assert "make_dataset.datasets.tiny.options: task 'nav1d'" in err
    assert "reads no option successful_only (its options: none)" in err
    assert not out.exists()


def test_a_family_option_reaches_the_tasks_collection(tmp_path: Path) -> None:
    """PushT's `successful_only` set in params: the failed episodes of random targets stay."""
    params = {
        "base": {"seed": 0, "task": "pusht"},
        "make_dataset": {
            "datasets": {
                "noisy": {
                    "behaviour": "expert",
                    "episodes": 1,
                    "seed": 3,
                    "options": {"successful_only": False, "expert_noise": 500.0},
                }
            },
            "plot_trajectories": 1,
        },
    }
    code, err, out = run_stage(tmp_path, "noisy", params)
    assert code == 0, err
    data = read_dataset(out)
    # Targets drowned in noise never push the T home: the one episode runs to the limit and
    # is kept only because successful_only is off.
    assert data.attrs["successful_only"] is False
    assert (data.num_episodes, len(data)) == (1, 300)
