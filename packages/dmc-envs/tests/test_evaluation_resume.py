"""A killed `evaluate` started again plays only the rollouts it had not finished, and writes what
an uninterrupted evaluation writes; rollouts kept under other settings are played again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from dmc_core.cli import run_cli
from dmc_core.data import read_dataset
from dmc_core.models import ModelSpec, build_model, save_model
from dmc_core.testing import torch_threads
from dmc_critic.stages import STAGES as CRITIC_STAGES
from dmc_envs.evaluation import evaluate as evaluate_module
from dmc_envs.stages import STAGES

TRAIN = {"steps": 50, "batch_size": 64, "checkpoint_every": 50, "log_every": 25}
RUN = {"model": "diffusion", "dataset": "pro", "critic": "pro", "stage": "foundation"}
PARAMS: dict[str, Any] = {
    "base": {"seed": 0},
    "make_dataset": {
        "nav1d": {"horizon": 8},
        "datasets": {"pro": {"behaviour": "noisy_optimal", "episodes": 40, "seed": 6}},
        "optimum_grid_per_step": 10,
        "plot_trajectories": 1,
    },
    "fit_critic": {"critics": {"pro": {"dataset": "pro", "hidden": 16, "train": TRAIN}}},
    "evaluate": {
        "protocol": {
            "policy": {"episodes": 4, "candidates": 2},
            "plot_trajectories": 1,
            "entropy_candidates": 2,
        },
        "runs": {"diffusion": {**RUN, "rules": ["none", "q_argmax"], "sweep": False}},
    },
}


class KilledError(Exception):
    """Stands for a SIGKILL during a rollout."""


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with a dataset, its critic and an (untrained) tiny diffusion policy."""
    work = tmp_path_factory.mktemp("resume")
    (work / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    dataset = str(work / "pro.hdf5")
    argv = ["--name", "pro", "--params", str(work / "params.yaml")]
    with torch_threads(1):
        made = ["make_dataset", *argv, "--out", dataset, "--plot", str(work / "pro.png")]
        assert run_cli("dmc_envs", STAGES, made) == 0
        fitted = ["fit_critic", *argv, "--dataset", dataset, "--out", str(work / "critic")]
        assert run_cli("dmc_critic", CRITIC_STAGES, fitted) == 0
    spec = ModelSpec(
        kind="diffusion_policy",
        dataset="pro",
        horizon=2,
        inpainting="none",
        backbone={"name": "mlp", "hidden": 8},  # type: ignore[arg-type]
    )
    save_model(work / "model.safetensors", build_model(spec, read_dataset(dataset)))
    return work


def evaluate(work: Path, out: str) -> int:
    argv = [
        "evaluate", "--name", "diffusion", "--params", str(work / "params.yaml"),
        "--model", str(work / "model.safetensors"), "--dataset", str(work / "pro.hdf5"),
        "--critic", str(work / "critic" / "critic.safetensors"),
        "--out", str(work / out), "--plots", str(work / out / "plots"),
    ]  # fmt: skip
    with torch_threads(1):
        return run_cli("dmc_envs", STAGES, argv)


def played(monkeypatch: pytest.MonkeyPatch, killed_at: int | None = None) -> list[str]:
    """The rollouts `evaluate` plays from now on, by `rule@n`; the one numbered `killed_at`
    (from 1) is killed before it ends."""
    rollouts: list[str] = []
    play = evaluate_module.evaluate_proposer

    def counted(bench, proposer, scorer, rule, candidates, *rest):  # type: ignore[no-untyped-def]
        rollouts.append(f"{rule}@{candidates}")
        if len(rollouts) == killed_at:
            raise KilledError
        return play(bench, proposer, scorer, rule, candidates, *rest)

    monkeypatch.setattr(evaluate_module, "evaluate_proposer", counted)
    return rollouts


def outputs(work: Path, out: str) -> tuple[Any, Any]:
    read = [
        json.loads((work / out / f"{name}.json").read_text()) for name in ("results", "episodes")
    ]
    return read[0], read[1]


def test_a_killed_evaluation_plays_only_the_rollouts_it_had_not_finished(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catches: an evaluation that plays every rollout again after a kill, keeps its rollouts
    after it finished, or writes other results from kept rollouts than from played ones."""
    with monkeypatch.context() as patch:
        played(patch)
        assert evaluate(work, "whole") == 0
    assert not (work / "whole" / ".resume").exists()  # removed once the outputs are written
    with monkeypatch.context() as patch:
        rollouts = played(patch, killed_at=2)
        with pytest.raises(KilledError):
            evaluate(work, "parts")
    assert rollouts == ["none@1", "q_argmax@2"]
    assert sorted(p.name for p in (work / "parts" / ".resume").glob("*.npz")) == ["none@1.npz"]
    with monkeypatch.context() as patch:
        rollouts = played(patch)
        assert evaluate(work, "parts") == 0
    assert rollouts == ["q_argmax@2"]
    assert outputs(work, "parts") == outputs(work, "whole")
    assert not (work / "parts" / ".resume").exists()


def test_rollouts_kept_under_other_settings_are_played_again(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catches: a changed protocol (or input) finishing with a stale rollout."""
    with monkeypatch.context() as patch:
        played(patch, killed_at=2)
        with pytest.raises(KilledError):
            evaluate(work, "stale")
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["evaluate"]["protocol"]["seed"] = 7
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    try:
        with monkeypatch.context() as patch:
            rollouts = played(patch)
            assert evaluate(work, "stale") == 0
    finally:
        (work / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    assert rollouts == ["none@1", "q_argmax@2"]
