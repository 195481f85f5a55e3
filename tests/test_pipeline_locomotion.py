"""End to end on a real simulator: the locomotion profile (Hopper-v5), shrunk, in a temporary
copy, on a dataset a user brings as D4RL published it plus one `make_dataset` makes.

The user's file is written here in D4RL's exact layout (no provenance attributes, `infos/*` and
`metadata/*` groups, a last episode that ends without a terminal or timeout); the pipeline
imports it and trains, aligns and evaluates on it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from support import ROOT
from test_pipeline import COPY_IGNORE, dvc, ran_stages, set_param

from dmc_core.data import read_dataset
from dmc_core.profile import apply_profile
from dmc_envs.tasks import CollectSpec, build_task

pytestmark = pytest.mark.slow

# D4RL's hopper references (d4rl/infos.py), which the hopper task normalises by.
HOPPER_MIN, HOPPER_MAX = -20.272305, 3234.3
USER_ROWS = 1500
#: A second critic as small as the smoke profile's.
FIT_SMALL = {
    "hidden": 16,
    "train": {"steps": 20, "batch_size": 16, "checkpoint_every": 10, "log_every": 10},
}


def write_d4rl_file(path: Path) -> int:
    """Hopper transitions in D4RL's layout; the last episode is left open. Returns its rows."""
    data, _ = build_task("hopper").collect(CollectSpec("uniform", 0, USER_ROWS, 7, {}))
    ends = data.episode_ends
    path.parent.mkdir(parents=True)
    with h5py.File(path, "w") as handle:
        for key, values in data.arrays().items():
            handle[key] = values
        handle["timeouts"][ends[-1]] = False  # the file ends mid-episode
        handle["terminals"][ends[-1]] = False
        handle["infos/qpos"] = np.zeros((len(data), 6))
        handle["metadata/algorithm"] = "random"
    return int(ends[-1] - ends[-2])


def locomotion_copy(factory: pytest.TempPathFactory, name: str, *profiles: str) -> Path:
    """A copy of the project with these profiles, then the smoke sizes, applied."""
    work = factory.mktemp(name) / "dmc"
    shutil.copytree(ROOT, work, ignore=COPY_IGNORE)
    (work / "data").mkdir()
    for profile in (*profiles, "locomotion-smoke.yaml"):
        apply_profile(work / "params.yaml", work / "pipelines" / "profiles" / profile)
    dvc(work, "config", "--local", "core.no_scm", "true")
    return work


def policy_learns_from(work: Path, dataset: str) -> None:
    """The policy, its critic, pass and runs on `dataset`; the planners keep the made random
    data with a critic of their own."""
    passes = ("align.passes.policy_sft", "align.passes.policy_qvpg")
    for key in ("pretrain.models.policy", "fit_critic.critics.full", *passes):
        set_param(work, f"{key}.dataset", dataset)
    for run in ("policy", "policy_sft", "policy_qvpg"):
        set_param(work, f"evaluate.runs.{run}.dataset", dataset)
    set_param(work, "fit_critic.critics.made", {**FIT_SMALL, "dataset": "random"})
    for planner in ("diffuser", "decision_diffuser"):
        set_param(work, f"align.passes.{planner}_qvpg.critic", "made")
        for run in (planner, f"{planner}_qvpg"):
            set_param(work, f"evaluate.runs.{run}.critic", "made")


def test_hopper_runs_end_to_end_on_a_d4rl_file_and_on_made_data(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    work = locomotion_copy(tmp_path_factory, "locomotion", "locomotion.yaml")
    open_rows = write_d4rl_file(work / "raw" / "hopper-random-v2.hdf5")
    entry = {"format": "d4rl", "path": "raw/hopper-random-v2.hdf5", "task": "hopper"}
    set_param(work, "import_dataset.datasets", {"users": entry})
    policy_learns_from(work, "users")

    ran = ran_stages(dvc(work, "repro").stdout)

    assert {"import_dataset@users", "make_dataset@random", "summarize"} <= ran
    assert {"align@diffuser_qvpg", "align@policy_sft", "evaluate@policy_sft"} <= ran
    assert {"align@policy_qvpg", "evaluate@policy_qvpg"} <= ran
    imported = read_dataset(work / "data" / "datasets" / "hopper" / "users.hdf5")
    assert imported.attrs["env_id"] == "Hopper-v5" and imported.attrs["source_format"] == "d4rl"
    assert len(imported) == USER_ROWS and imported.timeouts[-1]  # the open episode, cut
    assert imported.episode_slices()[-1].stop - imported.episode_slices()[-1].start == open_rows
    made = read_dataset(work / "data" / "datasets" / "hopper" / "random.hdf5")
    assert len(made) == 2000 and made.attrs["env_id"] == "Hopper-v5"

    rows = json.loads((work / "data" / "metrics" / "summary.json").read_text())
    assert {(r["model"], r["stage"]) for r in rows} >= {
        ("policy", "aligned"),
        ("diffuser", "aligned"),
        ("decision_diffuser", "foundation"),
        ("decision_diffuser", "aligned"),
    }
    for row in rows:
        assert row["task"] == "hopper"
        assert row["dataset"] == ("users" if row["model"] == "policy" else "random")
        expected = 100 * (row["return_mean"] - HOPPER_MIN) / (HOPPER_MAX - HOPPER_MIN)
        assert row["normalized_score"] == pytest.approx(expected)
        assert row["protocol"]["max_episode_steps"] == 1000
        assert row["episodes"] == 2 and "success_rate" not in row
        if row["model"] == "policy":  # a D4RL file records no behaviour density
            assert row["coherency"] is None
            assert "no behaviour policy" in row["coherency_missing"]
        else:  # planned Hopper transitions checked in MuJoCo
            assert 0.0 <= row["coherency"] <= 1.0
    aligned = json.loads((work / "data" / "models" / "policy_qvpg" / "metrics.json").read_text())
    assert any(e["kind"] == "critic_updated" for e in aligned["events"])  # online in Hopper


def test_d4rl_protocol_data_is_made_and_learned_from_through_dvc(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The d4rl-data profile, shrunk: a SAC agent trains for a few thousand steps, its actors
    collect medium, expert and medium-expert, and the policy learns from `medium`, whose
    behaviour density (the actor's) gives the policy rows a coherency."""
    work = locomotion_copy(tmp_path_factory, "d4rl-data", "locomotion.yaml", "d4rl-data.yaml")
    tiny = {"steps": 2000, "medium_level": 0.0, "learning_starts": 500, "batch_size": 32}
    tiny |= {"hidden": [32, 32], "eval_every": 500, "eval_episodes": 2, "snapshot_every": 500}
    set_param(work, "train_behaviour.agents", {"hopper": tiny})
    entry = {"agents": "data/behaviour/hopper", "transitions": 1500, "seed": 0}
    set_param(work, "behaviour_datasets.tasks", {"hopper": entry})
    policy_learns_from(work, "medium")

    ran = ran_stages(dvc(work, "repro").stdout)

    assert {"train_behaviour@hopper", "behaviour_datasets@hopper", "evaluate@policy"} <= ran
    folder = work / "data" / "datasets" / "hopper"
    medium = read_dataset(folder / "medium.hdf5")
    assert (
        medium.attrs["behavior_policy_spec"]["path"] == "data/behaviour/hopper/medium.safetensors"
    )
    assert len(read_dataset(folder / "medium_expert.hdf5")) == 3000
    assert len(read_dataset(folder / "medium_replay.hdf5")) == medium.attrs["checkpoint_step"]
    rows = json.loads((work / "data" / "metrics" / "summary.json").read_text())
    policy_rows = [r for r in rows if r["model"] == "policy"]
    assert policy_rows and all(r["dataset"] == "medium" for r in policy_rows)
    assert all(r["coherency"] is not None and r["coherency"] > 0 for r in policy_rows)
    assert not dvc(work, "status", "--json").stdout.strip("{}\n ")  # nothing left to run
