"""Stage `fit_policy`: the resumable run, its outputs, and the stage's errors."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from dmc_core.data import TransitionDataset, write_dataset
from dmc_core.errors import ConfigError
from dmc_core.training import World
from dmc_critic import CriticSpec, IQLCritic, build_critic, save_critic
from dmc_critic.fit_policy import FitPolicyConfig, PolicyRun, fit_policy
from dmc_critic.policies import PolicySpec, PolicyTrainSpec, load_policy

CPU = World(0, 1, torch.device("cpu"))


def spec(kind: str = "awr", **train: int) -> PolicySpec:
    schedule = {"steps": 40, "batch_size": 16, "checkpoint_every": 10, "log_every": 5} | train
    return PolicySpec(kind=kind, hidden=16, train=PolicyTrainSpec(**schedule))


def critic_of(dataset: TransitionDataset, name: str = "full", chunk: int = 1) -> IQLCritic:
    torch.manual_seed(1)
    critic_spec = CriticSpec(dataset=name, hidden=8, fourier_frequencies=1, action_chunk=chunk)
    return build_critic(critic_spec, dataset).eval()


def run(kind: str, dataset: TransitionDataset, out: Path, **train: int) -> PolicyRun:
    return PolicyRun(spec(kind, **train), dataset, critic_of(dataset), out, CPU, 0, "p")


@pytest.mark.parametrize("kind", ["bc", "awr"])
def test_a_finished_run_writes_the_policy_and_its_learning_curves(
    tmp_path: Path, bandit: TransitionDataset, one_thread: None, kind: str
) -> None:
    path = run(kind, bandit, tmp_path).train()
    assert path == tmp_path / "model.safetensors"
    policy = load_policy(path)
    assert policy.kind == kind and policy.mean_action(torch.zeros(3, 1)).shape == (3, 1)
    sidecar = yaml.safe_load((tmp_path / "model.yaml").read_text())
    assert sidecar["config"]["checkpoint_kind"] == "dmc-policy"
    assert sidecar["metadata"]["steps"] == 40 and "advantage" in sidecar["metadata"]
    curves = tmp_path / "live" / "plots" / "metrics" / "train"
    assert {"loss.tsv", "advantage.tsv", "lr.tsv", "weight_max.tsv"} <= {
        p.name for p in curves.iterdir()
    }
    lrs = [float(line.split()[-1]) for line in (curves / "lr.tsv").read_text().splitlines()[1:]]
    # the rate of the log point's last step (index 4 of 40): cosine decay from 3e-4, no warm-up
    assert lrs[0] == pytest.approx(3e-4 * 0.5 * (1 + math.cos(math.pi * 4 / 40)))
    assert lrs == sorted(lrs, reverse=True)
    assert json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert not (tmp_path / ".resume").exists()


def test_a_stopped_run_resumes_to_bit_identical_weights(
    tmp_path: Path, bandit: TransitionDataset, one_thread: None
) -> None:
    whole = run("awr", bandit, tmp_path / "whole").train()
    assert run("awr", bandit, tmp_path / "split").train(stop_after=17) is None
    assert (tmp_path / "split" / ".resume").exists()
    resumed = run("awr", bandit, tmp_path / "split").train()
    first, second = load_file(str(whole)), load_file(str(resumed))
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0)
    for curve in ("loss.tsv", "advantage.tsv"):  # every step logged once, the same values
        logged = [
            path.parent / "live" / "plots" / "metrics" / "train" / curve
            for path in (whole, resumed)
        ]
        assert logged[0].read_text() == logged[1].read_text()


def test_a_snapshot_of_other_settings_or_inputs_is_not_resumed(
    tmp_path: Path, bandit: TransitionDataset, one_thread: None
) -> None:
    run("awr", bandit, tmp_path).train(stop_after=20)
    assert run("awr", bandit, tmp_path, batch_size=8).restore_state() == 0
    assert run("bc", bandit, tmp_path).restore_state() == 0
    other = PolicyRun(spec(), bandit, critic_of(bandit), tmp_path, CPU, 0, "p", "another critic")
    assert other.restore_state() == 0
    assert run("awr", bandit, tmp_path).restore_state() == 20


def stage_args(
    tmp_path: Path, bandit: TransitionDataset, critic: str, name: str = "iql", chunk: int = 1
):
    dataset = write_dataset(tmp_path / "full.hdf5", bandit)
    path = save_critic(tmp_path / "critic.safetensors", critic_of(bandit, critic, chunk))
    return argparse.Namespace(
        name=name, dataset=str(dataset), critic=str(path), out=str(tmp_path / "m"), params="p.yaml"
    )


def test_the_stage_names_an_unknown_entry_and_a_critic_of_other_data(
    tmp_path: Path, bandit: TransitionDataset
) -> None:
    config = FitPolicyConfig(policies={"iql": spec()})
    with pytest.raises(ConfigError, match=r"fit_policy.policies has no entry 'nope'"):
        fit_policy(config, stage_args(tmp_path, bandit, "full", "nope"))
    problem = r"fit_policy.policies.iql.critic: the critic .* learned from 'expert', the policy"
    with pytest.raises(ConfigError, match=problem):
        fit_policy(config, stage_args(tmp_path, bandit, "expert"))
    assert not (tmp_path / "m").exists()


def test_the_stage_refuses_a_critic_of_action_chunks(
    tmp_path: Path, bandit: TransitionDataset
) -> None:
    """A Gaussian policy acts one action at a time: a critic of chunks cannot weight it."""
    config = FitPolicyConfig(policies={"iql": spec()})
    with pytest.raises(ConfigError, match=r"scores chunks of 2 actions.*action_chunk 1"):
        fit_policy(config, stage_args(tmp_path, bandit, "full", chunk=2))
    assert not (tmp_path / "m").exists()
