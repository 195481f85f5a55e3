"""Command export_minari: a project dataset becomes a Minari dataset that Minari loads episode by
episode (terminations, truncations, references, provenance) and that the project's own Minari
import turns back into the same arrays; taken or malformed ids are refused in one line."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from dmc_core.cli import run_cli
from dmc_core.data import ARRAY_KEYS, TransitionDataset, read_dataset, write_dataset
from dmc_core.errors import ConfigError, DatasetError
from dmc_core.testing import episode_arrays, run_module
from dmc_envs.export_minari import EXPORT_COMMAND, PROVENANCE_KEY, export_minari
from dmc_envs.import_dataset import IMPORT_STAGE
from dmc_envs.importing.minari import read_minari

# Episodes of different lengths, ending in terminal states and in timeouts: rows 0-4, 5,
# 6-11, 12-14.
EPISODES = ((5, "terminal"), (1, "timeout"), (6, "timeout"), (3, "terminal"))
HOPPER_ID = "dmc/hopper-tiny-v0"


def write_project_dataset(
    path: Path, env_id: str, obs_dim: int, act_dim: int, seed: int = 0, **attrs: Any
) -> TransitionDataset:
    """A dataset in the project's layout with the provenance `make_dataset` records."""
    dataset = TransitionDataset(
        **episode_arrays(EPISODES, obs_dim, act_dim, seed),
        attrs={
            "env_id": env_id,
            "env_kwargs": {},
            "task": "hopper",
            "dataset_kind": "tiny",
            "behavior_policy": "uniform on the action box",
            "seed": seed,
            "action_low": [-1.0] * act_dim,
            "action_high": [1.0] * act_dim,
            "ref_min_score": -20.0,
            "ref_max_score": 3234.3,
            "ref_score_source": "D4RL's hopper references",
            **attrs,
        },
    )
    write_dataset(path, dataset)
    return dataset


@pytest.fixture
def hopper(tmp_path: Path) -> tuple[Path, TransitionDataset]:
    path = tmp_path / "hopper" / "tiny.hdf5"
    path.parent.mkdir()
    return path, write_project_dataset(path, "Hopper-v5", 11, 3)


def load(root: Path, dataset_id: str) -> Any:
    """The Minari dataset `dataset_id` under `root`, loaded by Minari itself."""
    import minari

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(root))
        return minari.load_dataset(dataset_id, download=False)


def assert_episodes_equal(loaded: Any, dataset: TransitionDataset) -> None:
    """Every Minari episode holds its project episode's rows exactly."""
    episodes = list(loaded.iterate_episodes())
    assert len(episodes) == dataset.num_episodes == len(EPISODES)
    for episode, rows in zip(episodes, dataset.episode_slices(), strict=True):
        last = dataset.next_observations[rows.stop - 1 : rows.stop]
        observations = np.concatenate([dataset.observations[rows], last])
        np.testing.assert_array_equal(episode.observations, observations)
        np.testing.assert_array_equal(episode.actions, dataset.actions[rows])
        np.testing.assert_array_equal(episode.rewards, dataset.rewards[rows])
        np.testing.assert_array_equal(episode.terminations, dataset.terminals[rows])
        np.testing.assert_array_equal(episode.truncations, dataset.timeouts[rows])
    ends = [(bool(ep.terminations[-1]), bool(ep.truncations[-1])) for ep in episodes]
    assert ends == [(True, False), (False, True), (False, True), (True, False)]


def test_hopper_dataset_exports_episode_by_episode_with_spec_references_and_provenance(
    tmp_path: Path, hopper: tuple[Path, TransitionDataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Catches: observation t + 1 misaligned with action t or taken across episodes, the last
    # next observation lost, flags swapped, references or provenance dropped, no env spec,
    # MINARI_DATASETS_PATH left changed after the call.
    import minari

    path, dataset = hopper
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "elsewhere"))
    root = tmp_path / "minari"
    written = export_minari(path, root, HOPPER_ID, author="A. Author", code_permalink="https://x")
    assert written == root / HOPPER_ID
    assert os.environ["MINARI_DATASETS_PATH"] == str(tmp_path / "elsewhere")
    loaded = load(root, HOPPER_ID)
    assert_episodes_equal(loaded, dataset)
    assert loaded.spec.env_spec.id == "Hopper-v5"
    assert (loaded.total_episodes, loaded.total_steps) == (4, 15)
    metadata = loaded.storage.metadata
    assert (metadata["ref_min_score"], metadata["ref_max_score"]) == (-20.0, 3234.3)
    returns = np.array([3234.3])
    np.testing.assert_allclose(minari.get_normalized_score(loaded, returns), [1.0])
    assert metadata["author"] == {"A. Author"} and metadata["code_permalink"] == "https://x"
    assert metadata["algorithm_name"] == "uniform on the action box"
    assert "'tiny'" in metadata["description"] and "Hopper-v5" in metadata["description"]
    assert json.loads(metadata[PROVENANCE_KEY]) == dict(dataset.attrs)


def test_export_imports_back_through_the_project_importer_to_the_same_arrays(
    tmp_path: Path, hopper: tuple[Path, TransitionDataset], capsys: pytest.CaptureFixture[str]
) -> None:
    # Catches: a round trip that changes a row, an episode end, or the reference returns.
    path, dataset = hopper
    root = tmp_path / "minari"
    export_minari(path, root, HOPPER_ID)
    params = tmp_path / "params.yaml"
    entry = {"format": "minari", "path": str(root), "minari_id": HOPPER_ID, "task": "hopper"}
    params.write_text(
        yaml.safe_dump({"base": {"seed": 0}, "import_dataset": {"datasets": {"back": entry}}})
    )
    out = tmp_path / "back.hdf5"
    argv = ["import_dataset", "--name", "back", "--out", str(out), "--params", str(params)]
    assert run_cli("dmc_envs", (IMPORT_STAGE,), argv) == 0, capsys.readouterr().err
    back = read_dataset(out)
    for key in ARRAY_KEYS:
        np.testing.assert_array_equal(getattr(back, key), getattr(dataset, key), err_msg=key)
    assert (back.attrs["ref_min_score"], back.attrs["ref_max_score"]) == (-20.0, 3234.3)
    assert back.attrs["source_metadata"]["algorithm_name"] == "uniform on the action box"


def test_env_gymnasium_cannot_build_is_recorded_by_its_spaces(tmp_path: Path) -> None:
    # Catches: an export that needs a buildable env, spaces of the wrong width or bounds,
    # references dropped when Minari has no env spec to compute them with. (The project's Nav1D
    # datasets record `dmc/Nav1D-v0`, which importing dmc_envs registers; `Nav1D-v0` is not.)
    path = tmp_path / "nav.hdf5"
    attrs = {"task": "nav1d", "action_low": [-1.0], "action_high": [2.0]}
    dataset = write_project_dataset(path, "Nav1D-v0", 2, 1, seed=3, **attrs)
    root = tmp_path / "minari"
    export_minari(path, root, "nav-v1")
    loaded = load(root, "nav-v1")
    assert loaded.spec.env_spec is None
    assert_episodes_equal(loaded, dataset)
    obs_space, act_space = loaded.observation_space, loaded.action_space
    assert obs_space.shape == (2,) and np.isinf(obs_space.low).all()
    assert (act_space.low.tolist(), act_space.high.tolist()) == ([-1.0], [2.0])
    source = read_minari(root, "nav-v1", "test")
    for key in ARRAY_KEYS:
        np.testing.assert_array_equal(source.arrays[key], getattr(dataset, key), err_msg=key)
    assert source.references is not None and source.references[:2] == (-20.0, 3234.3)
    assert source.env_id is None


def test_env_kwargs_reach_the_recorded_env_spec(tmp_path: Path) -> None:
    # Catches: the env rebuilt with its defaults instead of the dataset's kwargs.
    path = tmp_path / "nav.hdf5"
    kwargs = {"horizon": 6, "step_size": 0.3}
    write_project_dataset(path, "dmc/Nav1D-v0", 2, 1, env_kwargs=kwargs)
    export_minari(path, tmp_path / "minari", "nav-v0")
    spec = load(tmp_path / "minari", "nav-v0").spec.env_spec
    assert spec.id == "dmc/Nav1D-v0" and spec.kwargs == kwargs


def test_cli_prints_what_it_wrote(
    tmp_path: Path, hopper: tuple[Path, TransitionDataset], capsys: pytest.CaptureFixture[str]
) -> None:
    # Catches: the verb not wired to its flags, a silent run.
    path, _ = hopper
    root = tmp_path / "minari"
    argv = ["export_minari", "--dataset", str(path), "--root", str(root), "--id", HOPPER_ID]
    assert run_cli("dmc_envs", (), [*argv, "--author", "me"], commands=(EXPORT_COMMAND,)) == 0
    out = capsys.readouterr().out
    assert (
        f"wrote Minari dataset '{HOPPER_ID}': 4 episodes, 15 transitions, in {root / HOPPER_ID}"
        in out
    )
    assert load(root, HOPPER_ID).storage.metadata["author"] == {"me"}


def test_existing_id_is_refused_in_one_line_unless_forced(
    tmp_path: Path, hopper: tuple[Path, TransitionDataset]
) -> None:
    # Catches: a dataset silently overwritten (or Minari's own traceback), --force ignored.
    path, dataset = hopper
    root = tmp_path / "minari"
    export_minari(path, root, HOPPER_ID)
    other = write_project_dataset(tmp_path / "other.hdf5", "Hopper-v5", 11, 3, seed=9)
    argv = ["export_minari", "--dataset", str(tmp_path / "other.hdf5"), "--root", str(root)]
    refused = run_module("dmc_envs", *argv, "--id", HOPPER_ID)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"dmc_envs export_minari: error: a Minari dataset '{HOPPER_ID}' already "
        f"exists under {root} (--force replaces it)"
    ]
    kept = load(root, HOPPER_ID)
    np.testing.assert_array_equal(next(kept.iterate_episodes()).actions, dataset.actions[:5])
    forced = run_module("dmc_envs", *argv, "--id", HOPPER_ID, "--force")
    assert forced.returncode == 0, forced.stderr
    assert_episodes_equal(load(root, HOPPER_ID), other)


@pytest.mark.parametrize("bad_id", ["hopper-random", "dmc/hopper random-v0", "../up-v0", "a.b-v0"])
def test_malformed_id_is_refused_before_anything_is_written(
    tmp_path: Path, hopper: tuple[Path, TransitionDataset], bad_id: str
) -> None:
    # Catches: Minari's TypeError on an id without a version, a folder made outside the root.
    with pytest.raises(ConfigError, match=re.escape(f"malformed Minari id '{bad_id}'")):
        export_minari(hopper[0], tmp_path / "minari", bad_id)
    assert not (tmp_path / "minari").exists() and not (tmp_path / "up-v0").exists()


def test_widths_that_do_not_fit_the_env_are_refused(tmp_path: Path) -> None:
    # Catches: a Minari dataset whose spec and data disagree.
    path = tmp_path / "wide.hdf5"
    write_project_dataset(path, "Hopper-v5", 11, 6)
    with pytest.raises(DatasetError, match="actions have 6 dimension"):
        export_minari(path, tmp_path / "minari", HOPPER_ID)
    assert not (tmp_path / "minari" / HOPPER_ID).exists()


def test_a_folder_that_is_no_minari_dataset_is_never_replaced(
    tmp_path: Path, hopper: tuple[Path, TransitionDataset]
) -> None:
    # Catches: --force deleting a namespace or any other folder that happens to have the id.
    folder = tmp_path / "minari" / "dmc" / "mine-v0"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="exists and is not a Minari dataset"):
        export_minari(hopper[0], tmp_path / "minari", "dmc/mine-v0", overwrite=True)
    assert (folder / "notes.txt").read_text() == "keep"
