"""Stage `roll_out`: a dataset extended by a model's own episodes, resumable by batch."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from dmc_core.data import read_dataset
from dmc_core.errors import ConfigError
from dmc_core.models import ModelSpec, build_model, save_model
from dmc_core.models.spec import FormulationSpec
from dmc_core.testing import run_module
from dmc_core.training import World
from dmc_core.training.resume import RESUME_ROOT
from dmc_critic import CriticSpec, CriticTrainSpec, critic_learned_from, load_critic
from dmc_critic.fit_critic import CriticRun
from dmc_envs import roll_out as stage
from dmc_envs.roll_out import RollOutConfig, RollOutSpec, roll_out_stage

HORIZON = 6  # Nav1D's episode length in these data


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A Nav1D dataset `tiny` (made by the real stage) and an untrained policy of it."""
    root = tmp_path_factory.mktemp("roll_out")
    params = {
        "base": {"seed": 0},
        "make_dataset": {
            "nav1d": {"horizon": HORIZON},
            "datasets": {"tiny": {"episodes": 12, "seed": 5}},
            "optimum_grid_per_step": 10,
            "plot_trajectories": 2,
        },
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    data = root / "tiny.hdf5"
    done = run_module(
        "dmc_envs", "make_dataset", "--name", "tiny", "--out", str(data),
        "--plot", str(root / "tiny.png"), "--params", str(root / "params.yaml"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    spec = ModelSpec(
        kind="diffusion_policy",
        dataset="tiny",
        horizon=2,
        history=1,
        action_exec=1,
        inpainting="none",
        backbone={"name": "mlp", "hidden": 8, "blocks": 1},  # type: ignore[arg-type]
        formulation=FormulationSpec(steps=3),
    )
    torch.manual_seed(0)
    model = save_model(root / "model.safetensors", build_model(spec, read_dataset(data)))
    return data, model


def run(made: tuple[Path, Path], out: Path, **entry: Any) -> Path:
    data, model = made
    spec = RollOutSpec(
        **({"model": "policy", "dataset": "tiny", "episodes": 5, "batch": 2} | entry)
    )
    config = RollOutConfig(datasets={"tiny-policy": spec}, device="cpu")
    args = argparse.Namespace(
        name="tiny-policy", model=str(model), dataset=str(data), out=str(out), params="p.yaml"
    )
    roll_out_stage(config, args)
    return out


def test_the_output_is_the_dataset_then_the_models_episodes_with_their_lineage(
    made: tuple[Path, Path], tmp_path: Path
) -> None:
    base = read_dataset(made[0])
    out = read_dataset(run(made, tmp_path / "tiny-policy.hdf5"))
    assert len(out) == len(base) + 5 * HORIZON and out.num_episodes == base.num_episodes + 5
    for key, value in base.arrays().items():
        np.testing.assert_array_equal(out.arrays()[key][: len(base)], value)
    assert out.attrs["extends"] == "tiny" and out.attrs["dataset_kind"] == "tiny-policy"
    assert out.attrs["rollouts"]["model"] == "policy"
    assert out.attrs["rollouts"]["first_row"] == len(base)
    assert out.attrs["env_id"] == base.attrs["env_id"]
    # The episodes are the model's: its actions differ from the dataset's uniform ones.
    assert not (tmp_path / "tiny-policy.hdf5.parts").exists()
    again = read_dataset(run(made, tmp_path / "again.hdf5"))
    np.testing.assert_array_equal(again.actions, out.actions)
    other = read_dataset(run(made, tmp_path / "other.hdf5", seed=777))
    assert not np.array_equal(other.observations[len(base) :], out.observations[len(base) :])


def test_a_killed_run_plays_only_the_batches_it_had_not_kept(
    made: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = run(made, tmp_path / "whole" / "d.hdf5").read_bytes()
    played: list[int] = []
    real = stage.roll_out

    def counted(*args: Any, **kwargs: Any) -> Any:
        played.append(kwargs["seed"])
        if len(played) == 2 and killed:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(stage, "roll_out", counted)
    killed = True
    with pytest.raises(KeyboardInterrupt):
        run(made, tmp_path / "split" / "d.hdf5")
    assert len(list((tmp_path / "split" / "d.hdf5.parts").glob("batch-*.hdf5"))) == 1
    killed = False
    resumed = run(made, tmp_path / "split" / "d.hdf5")
    # Seeds 20000 (before the kill), 20002 (killed), then 20002 and 20004 only.
    assert played == [20000, 20002, 20002, 20004]
    assert resumed.read_bytes() == whole
    # Killed again, then started with another seed: the kept batch is not read back.
    played.clear()
    killed = True
    with pytest.raises(KeyboardInterrupt):
        run(made, tmp_path / "other" / "d.hdf5")
    killed = False
    run(made, tmp_path / "other" / "d.hdf5", seed=500)
    assert played == [20000, 20002, 500, 502, 504]


def test_a_model_of_another_dataset_is_refused_naming_the_key(
    made: tuple[Path, Path], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"roll_out.datasets.tiny-policy.dataset is 'full'"):
        run(made, tmp_path / "d.hdf5", dataset="full")


def test_a_critic_of_the_output_counts_as_learned_from_the_dataset_it_extends(
    made: tuple[Path, Path], tmp_path: Path
) -> None:
    out = read_dataset(run(made, tmp_path / "tiny-policy.hdf5"))
    world = World(0, 1, torch.device("cpu"))
    schedule = CriticTrainSpec(steps=2, batch_size=8, checkpoint_every=2, log_every=1)
    spec = CriticSpec(dataset="tiny-policy", hidden=8, train=schedule)
    path = CriticRun(spec, out, tmp_path / "critic", world, 0, "c").train()
    assert path is not None
    assert critic_learned_from(path, load_critic(path)) == "tiny"
    plain = CriticRun(spec, read_dataset(made[0]), tmp_path / "plain", world, 0, "c").train()
    assert plain is not None
    assert critic_learned_from(plain, load_critic(plain)) == "tiny-policy"


def test_under_a_resume_root_a_copy_of_the_workspace_plays_only_what_was_not_kept(
    made: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A queued DVC experiment runs again in a new copy of the workspace: the batches it kept
    # must be found outside the first copy (a key of the entry and the model, not of the path).
    whole = run(made, tmp_path / "whole" / "d.hdf5").read_bytes()
    root = tmp_path / "root"
    monkeypatch.setenv(RESUME_ROOT, str(root))
    played: list[int] = []
    real = stage.roll_out

    def killed_in_the_second_batch(*args: Any, **kwargs: Any) -> Any:
        played.append(kwargs["seed"])
        if len(played) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(stage, "roll_out", killed_in_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        run(made, tmp_path / "copy1" / "d.hdf5")
    assert not (tmp_path / "copy1" / "d.hdf5.parts").exists()
    assert len(list(root.glob("*/batch-*.hdf5"))) == 1
    monkeypatch.setattr(
        stage, "roll_out", lambda *a, **k: played.append(k["seed"]) or real(*a, **k)
    )
    resumed = run(made, tmp_path / "copy2" / "d.hdf5")
    assert played == [20000, 20002, 20002, 20004]
    assert resumed.read_bytes() == whole
    assert list(root.iterdir()) == []  # the kept batches go once the output is written
