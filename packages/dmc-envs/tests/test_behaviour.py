"""Tests for the behaviour agents (SAC by D4RL's recipe) and the datasets they collect."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from dmc_core.config import load_stage_config
from dmc_core.data import read_dataset
from dmc_core.errors import ConfigError
from dmc_envs.behaviour import sac as sac_module
from dmc_envs.behaviour.actor import ActorShape, SquashedGaussianActor, load_actor
from dmc_envs.behaviour.config import AgentSpec, TrainBehaviourConfig
from dmc_envs.behaviour.sac import SacRun
from dmc_envs.behaviour.train import train_behaviour
from dmc_envs.tasks import build_task

pytest.importorskip("stable_baselines3")

SRC = Path(__file__).resolve().parents[1] / "src" / "dmc_envs"

#: A budget of a few thousand steps with small networks: seconds on a CPU.
TINY = AgentSpec(
    steps=2000,
    medium_level=0.0,
    learning_starts=500,
    batch_size=32,
    hidden=[32, 32],
    eval_every=500,
    eval_episodes=2,
    snapshot_every=500,
    threads=1,
)


@pytest.fixture(scope="module")
def hopper() -> Any:
    return build_task("hopper")


def _run(hopper: Any, spec: AgentSpec, directory: Path, stop_after: int | None = None) -> Any:
    return SacRun(hopper, spec, directory).train(stop_after=stop_after)


# ----- the actor --------------------------------------------------------------------------------


def test_the_actor_acts_and_scores_actions_as_stable_baselines3s_sac_actor(hopper: Any) -> None:
    from stable_baselines3 import SAC

    run = SacRun(hopper, TINY, Path("/nonexistent"))  # builds SAC; nothing is written
    model: SAC = run.model
    actor = SquashedGaussianActor(run.shape)
    actor.load_state_dict(sac_module._actor_weights(model))
    obs = torch.randn(64, run.shape.obs_dim)
    with torch.no_grad():
        theirs = model.actor(obs, deterministic=True)
        ours = actor.act(obs, None, deterministic=True)
        torch.testing.assert_close(ours, theirs)
        mean, log_std, _ = model.actor.get_action_dist_params(obs)
        actions = model.actor.action_dist.actions_from_params(mean, log_std)
        theirs_log = model.actor.action_dist.log_prob(actions)
        ours_log = actor.log_density(obs, actions)
    # stable-baselines3 adds 1e-6 inside log(1 - tanh^2): a relative difference of that order.
    torch.testing.assert_close(ours_log, theirs_log, rtol=1e-3, atol=1e-3)


def test_the_actor_density_integrates_to_one_over_the_action_box() -> None:
    torch.manual_seed(0)
    shape = ActorShape(obs_dim=3, act_dim=2, hidden=(8,), action_low=(-1, -2), action_high=(1, 2))
    actor = SquashedGaussianActor(shape)
    obs = torch.randn(1, 3).expand(400_000, 3)
    box = torch.rand(400_000, 2) * torch.tensor([2.0, 4.0]) - torch.tensor([1.0, 2.0])
    with torch.no_grad():
        volume = 8.0
        integral = actor.log_density(obs, box).exp().mean() * volume
    assert integral.item() == pytest.approx(1.0, abs=0.03)


# ----- the trainer ------------------------------------------------------------------------------


def _scripted_scores(monkeypatch: pytest.MonkeyPatch, hopper: Any, scores: list[float]) -> None:
    """Make the evaluations return these normalised scores, in order."""
    queue = iter(scores)
    low, high = hopper.returns.low, hopper.returns.high

    def returns(envs: Any, act: Any, seed: int) -> np.ndarray:
        return np.full(envs.num_envs, low + next(queue) / 100.0 * (high - low))

    monkeypatch.setattr(sac_module, "first_episode_returns", returns)


def test_medium_is_the_first_evaluation_at_its_level_and_its_replay_the_buffer_until_then(
    hopper: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _scripted_scores(monkeypatch, hopper, [5.0, 50.0, 30.0, 80.0, 60.0])
    spec = replace(TINY, medium_level=40.0)
    outcome = _run(hopper, spec, tmp_path)
    assert (outcome.medium.step, outcome.medium.score) == (1000, pytest.approx(50.0))
    assert (outcome.expert.step, outcome.expert.score) == (2000, pytest.approx(80.0))
    # The run's own buffer, as its last snapshot holds it: medium-replay is its first rows.
    _, tensors, _ = run_snapshot(hopper, spec, tmp_path)
    for field, rows in outcome.replay.items():
        np.testing.assert_array_equal(rows, tensors[f"buffer/{field}"].numpy()[:1000, 0])
    assert outcome.replay["observations"].shape == (1000, 11)
    assert not np.array_equal(
        outcome.medium.weights["mu.weight"], outcome.expert.weights["mu.weight"]
    )


def test_a_sampled_medium_evaluation_decides_medium_by_the_policys_samples(
    hopper: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each evaluation before medium is two calls: the mean's actions, then sampled ones.
    scores = iter([50.0, 30.0, 60.0, 45.0, 70.0, 90.0])
    first_actions: list[np.ndarray] = []
    low, high = hopper.returns.low, hopper.returns.high

    def returns(envs: Any, act: Any, seed: int) -> np.ndarray:
        first_actions.append(np.asarray(act(np.zeros((envs.num_envs, 11), np.float32))))
        return np.full(envs.num_envs, low + next(scores) / 100.0 * (high - low))

    monkeypatch.setattr(sac_module, "first_episode_returns", returns)
    spec = replace(TINY, medium_level=40.0, medium_evaluation="sampled")
    outcome = _run(hopper, spec, tmp_path)
    # Deterministic 50 at step 500 would have been medium; the samples reach 45 at step 1000.
    assert (outcome.medium.step, outcome.medium.score) == (1000, pytest.approx(60.0))
    assert outcome.medium.sampled_score == pytest.approx(45.0)
    assert (outcome.expert.step, outcome.expert.score) == (2000, pytest.approx(90.0))
    assert len(first_actions) == 6  # no sampled evaluation once medium is kept
    mean_actions, sampled_actions = first_actions[0], first_actions[1]
    assert not np.allclose(mean_actions, sampled_actions)  # samples, not the mean


def run_snapshot(hopper: Any, spec: AgentSpec, directory: Path) -> Any:
    return SacRun(hopper, spec, directory).snapshot.read()


def test_a_budget_never_reaching_medium_names_the_key(
    hopper: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _scripted_scores(monkeypatch, hopper, [5.0, 7.0])
    params = tmp_path / "params.yaml"
    agent = {"steps": 1000, "medium_level": 40.0, "learning_starts": 500, "hidden": [8]}
    agent |= {"eval_every": 500, "eval_episodes": 1, "snapshot_every": 500, "batch_size": 8}
    params.write_text(yaml.safe_dump({"train_behaviour": {"agents": {"hopper": agent}}}))
    config = load_stage_config(TrainBehaviourConfig, "train_behaviour", params)
    args = argparse.Namespace(
        name="hopper", out=tmp_path / "out", replay=tmp_path / "r.hdf5", params=params
    )
    with pytest.raises(ConfigError, match=r"train_behaviour.agents.hopper.medium_level: .* 40.0"):
        train_behaviour(config, args)
    assert not (tmp_path / "out" / "medium.safetensors").exists()


def test_a_stopped_run_resumed_and_extended_ends_as_one_uninterrupted_run(
    hopper: Any, tmp_path: Path
) -> None:
    straight = _run(hopper, TINY, tmp_path / "straight")
    parts = tmp_path / "parts"
    assert _run(hopper, replace(TINY, steps=1000), parts, stop_after=700) is None  # a "kill"
    _run(hopper, replace(TINY, steps=1000), parts)  # resumed, to a shorter budget
    extended = _run(hopper, TINY, parts)  # the budget raised: the same run continues
    assert (extended.steps, extended.updates, extended.episodes) == (
        straight.steps,
        straight.updates,
        straight.episodes,
    )
    for name in ("medium", "expert"):
        a, b = getattr(straight, name), getattr(extended, name)
        assert (a.step, a.score) == (b.step, b.score)
        for key, value in a.weights.items():
            assert torch.equal(value, b.weights[key]), (name, key)
    _, ours, _ = run_snapshot(hopper, TINY, parts)
    _, theirs, _ = run_snapshot(hopper, TINY, tmp_path / "straight")
    assert ours.keys() == theirs.keys()
    for key in theirs:  # networks, target critics, optimisers, alpha, the whole buffer
        assert torch.equal(ours[key], theirs[key]), key
    assert "buffer/observations" in theirs and "optim_critic/0/exp_avg" in theirs
    assert (
        tmp_path / "straight" / "live" / "plots" / "metrics" / "eval" / "normalized_return.tsv"
    ).read_text() == (
        parts / "live" / "plots" / "metrics" / "eval" / "normalized_return.tsv"
    ).read_text()


# ----- the stages, through the command line -----------------------------------------------------


def _params(root: Path, agents: str) -> Path:
    tiny = {
        "steps": TINY.steps,
        "medium_level": 0.0,
        "learning_starts": TINY.learning_starts,
        "batch_size": TINY.batch_size,
        "hidden": TINY.hidden,
        "eval_every": TINY.eval_every,
        "eval_episodes": TINY.eval_episodes,
        "snapshot_every": TINY.snapshot_every,
        "threads": 1,
    }
    params = {
        "base": {"seed": 0, "task": "hopper"},
        "make_dataset": {
            "datasets": {"random": {"behaviour": "uniform", "transitions": 1500, "seed": 0}},
            "plot_trajectories": 2,
        },
        "train_behaviour": {"agents": {"hopper": tiny}},
        "behaviour_datasets": {
            "tasks": {"hopper": {"agents": agents, "transitions": 1500, "seed": 3}}
        },
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _stage(root: Path, *argv: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "dmc_envs", *argv],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen[str]) -> str:
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, out
    return out


TRAIN = ("train_behaviour", "--name", "hopper", "--out", "data/behaviour/hopper")
REPLAY = ("--replay", "data/datasets/hopper/medium_replay.hdf5")
OUTPUTS = (
    "data/behaviour/hopper/medium.safetensors",
    "data/behaviour/hopper/expert.safetensors",
    "data/behaviour/hopper/medium.yaml",
    "data/behaviour/hopper/expert.yaml",
    "data/datasets/hopper/medium_replay.hdf5",
    "data/behaviour/hopper/live/plots/metrics/eval/normalized_return.tsv",
    "data/behaviour/hopper/live/plots/metrics/train/episode_return.tsv",
)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A tiny budget end to end through the command line: random, the agent, the datasets."""
    root = tmp_path_factory.mktemp("behaviour")
    _params(root, "data/behaviour/hopper")
    _finish(_stage(root, *TRAIN, *REPLAY))
    _finish(_stage(root, "behaviour_datasets", "--name", "hopper", "--out", "data/datasets/hopper"))
    random = ("--out", "data/datasets/hopper/random.hdf5", "--plot", "data/random.png")
    _finish(_stage(root, "make_dataset", "--name", "random", *random))
    yield root


def test_a_tiny_budget_makes_all_five_datasets_with_their_provenance(pipeline: Path) -> None:
    folder = pipeline / "data" / "datasets" / "hopper"
    task = build_task("hopper")
    sizes = {"random": 1500, "medium": 1500, "expert": 1500, "medium_expert": 3000}
    datasets = {}
    for kind in ("random", "medium", "medium_replay", "expert", "medium_expert"):
        dataset = read_dataset(folder / f"{kind}.hdf5")  # validates the layout and attributes
        datasets[kind] = dataset
        assert dataset.attrs["env_id"] == "Hopper-v5"
        assert dataset.attrs["dataset_kind"] == kind
        assert len(dataset) == sizes.get(kind, len(dataset))
        stats = yaml.safe_load((folder / f"{kind}.stats.json").read_text())
        returns = [dataset.rewards[s].sum() for s in dataset.episode_slices()]
        assert stats["return_mean"] == pytest.approx(float(np.mean(returns)), rel=1e-5)
    for kind in ("medium", "expert"):
        attrs = datasets[kind].attrs
        assert attrs["agent"].startswith("SAC (stable-baselines3")
        assert attrs["agent_seed"] == 0 and attrs["seed"] == (3 if kind == "medium" else 4)
        about = yaml.safe_load((pipeline / f"data/behaviour/hopper/{kind}.yaml").read_text())
        assert attrs["checkpoint_step"] == about["metadata"]["checkpoint_step"]
        assert attrs["eval_normalized_return"] == about["metadata"]["eval_normalized_return"]
        level = yaml.safe_load((folder / f"{kind}.stats.json").read_text())["d4rl_level"]
        assert level["dataset"] == f"hopper-{kind}-v2" and level["normalized_score"] > 40
    # medium_replay: the buffer up to the medium checkpoint, as the agent recorded it
    replay = datasets["medium_replay"]
    medium_step = datasets["medium"].attrs["checkpoint_step"]
    assert len(replay) == medium_step == replay.attrs["checkpoint_step"]
    assert "behavior_policy_spec" not in replay.attrs
    assert task.behaviour_density(replay.attrs) is None


def test_medium_expert_is_exactly_medium_then_expert(pipeline: Path) -> None:
    folder = pipeline / "data" / "datasets" / "hopper"
    medium, expert, both = (
        read_dataset(folder / f"{k}.hdf5") for k in ("medium", "expert", "medium_expert")
    )
    for key, value in both.arrays().items():
        np.testing.assert_array_equal(
            value, np.concatenate([medium.arrays()[key], expert.arrays()[key]])
        )
    spec = both.attrs["behavior_policy_spec"]
    assert spec["weights"] == [len(medium), len(expert)]
    assert [c["path"] for c in spec["components"]] == [
        medium.attrs["behavior_policy_spec"]["path"],
        expert.attrs["behavior_policy_spec"]["path"],
    ]


def test_each_collected_dataset_records_the_density_of_the_actor_that_collected_it(
    pipeline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(pipeline)  # datasets record their actors' paths from the pipeline's root
    task = build_task("hopper")
    folder = Path("data/datasets/hopper")
    medium, expert, both = (
        read_dataset(folder / f"{k}.hdf5") for k in ("medium", "expert", "medium_expert")
    )
    actors = {
        k: load_actor(f"data/behaviour/hopper/{k}.safetensors")[0] for k in ("medium", "expert")
    }
    obs, act = medium.observations[:50], medium.actions[:50]
    with torch.no_grad():
        own = {
            k: a.log_density(torch.as_tensor(obs), torch.as_tensor(act)).exp().double().numpy()
            for k, a in actors.items()
        }
    np.testing.assert_allclose(
        task.behaviour_density(medium.attrs).density(obs, act), own["medium"], rtol=1e-6
    )
    np.testing.assert_allclose(
        task.behaviour_density(expert.attrs).density(obs, act), own["expert"], rtol=1e-6
    )
    mixture = (1500 * own["medium"] + 1500 * own["expert"]) / 3000
    np.testing.assert_allclose(
        task.behaviour_density(both.attrs).density(obs, act), mixture, rtol=1e-6
    )
    # the medium actor's own samples are likelier under it than uniform actions are
    assert np.mean(np.log(own["medium"])) > np.log(1 / 8)


def test_a_sigkill_during_train_behaviour_resumes_and_ends_as_the_uninterrupted_run(
    pipeline: Path, tmp_path: Path
) -> None:
    _params(tmp_path, "data/behaviour/hopper")
    snapshot = tmp_path / "data/behaviour/hopper/.resume/state.safetensors"
    process = _stage(tmp_path, *TRAIN, *REPLAY)
    deadline = time.monotonic() + 300
    while not snapshot.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # into the next stretch, past the first snapshot
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / OUTPUTS[0]).exists()
    out = _finish(_stage(tmp_path, *TRAIN, *REPLAY))
    assert "resumed at step" in out
    for name in OUTPUTS:
        assert (tmp_path / name).read_bytes() == (pipeline / name).read_bytes(), name


def test_no_stage_but_the_trainer_unpickles_or_imports_stable_baselines3(pipeline: Path) -> None:
    # Every source file but the trainer's is free of pickle and stable-baselines3 ...
    trainer = SRC / "behaviour" / "sac.py"
    imports = re.compile(r"^\s*(import|from)\s+(pickle|cloudpickle|dill|stable_baselines3)\b", re.M)
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        if path != trainer:
            assert not imports.search(text) and "torch.load(" not in text, path
    # ... and the datasets stage and the densities run with unpickling made impossible.
    probe = """
import pickle, sys
def refuse(*a, **k):
    raise AssertionError("unpickled")
pickle.load = pickle.loads = refuse
pickle.Unpickler = refuse
from dmc_core.cli import run_cli
from dmc_envs.stages import STAGES
from dmc_core.config import load_stage_config
from dmc_core.data import read_dataset
from dmc_envs.tasks import build_task
argv = ["behaviour_datasets", "--name", "hopper", "--out", "again"]
assert run_cli("dmc_envs", STAGES, argv) == 0
data = read_dataset("again/medium_expert.hdf5")
density = build_task("hopper").behaviour_density(data.attrs)
assert density.density(data.observations[:5], data.actions[:5]).shape == (5,)
assert "stable_baselines3" not in sys.modules, "a stage imported stable-baselines3"
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=pipeline, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
