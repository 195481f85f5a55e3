"""Stage import_dataset: D4RL files, Minari datasets and project files, written here in their
exact layouts, become validated datasets with provenance; every refusal names its file or key."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import yaml

from dmc_core.cli import run_cli
from dmc_core.data import ARRAY_KEYS, TransitionDataset, read_dataset, write_dataset
from dmc_core.testing import episode_arrays as random_episodes
from dmc_envs.import_dataset import IMPORT_STAGE, _bounds_in
from dmc_envs.tasks import build_task, task_for_dataset

OBS, ACT = 11, 3  # Hopper-v5's widths
# Four episodes: one ending in a terminal state, a one-row one cut by the time limit, another
# cut by it, and one the file's end stops (neither flag): rows 0-4, 5, 6-11, 12-15.
EPISODES = ((5, "terminal"), (1, "timeout"), (6, "timeout"), (4, "open"))
ROWS = sum(length for length, _ in EPISODES)
MINARI_ID = "test/hopper/tiny-v0"
MINARI_EPISODES = ((4, "terminal"), (5, "timeout"), (3, "open"))


def episode_arrays(episodes: tuple[tuple[int, str], ...], seed: int = 0) -> dict[str, np.ndarray]:
    """Random episodes of this file's sizes (see `dmc_core.testing.episode_arrays`)."""
    return random_episodes(episodes, OBS, ACT, seed)


def write_d4rl(path: Path, arrays: dict[str, np.ndarray], drop: tuple[str, ...] = ()) -> Path:
    """A file as D4RL publishes them: arrays, `infos/*`, `metadata/*`, no attributes."""
    with h5py.File(path, "w") as handle:
        for key, array in arrays.items():
            if key not in drop:
                handle.create_dataset(key, data=array)
        rows = len(arrays["observations"])
        handle.create_dataset("infos/qpos", data=np.zeros((rows, 6)))
        handle.create_dataset("infos/qvel", data=np.zeros((rows, 6)))
        handle.create_dataset("infos/action_log_probs", data=np.zeros(rows))
        handle.create_dataset("metadata/algorithm", data=b"SAC")
        handle.create_dataset("metadata/iteration", data=np.int64(3))
        handle.create_dataset("metadata/policy/nonlinearity", data=b"relu")
        handle.create_dataset("metadata/policy/fc0/weight", data=np.ones((4, OBS)))
    return path


def write_native(path: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> Path:
    """A project-layout file; without provenance the contract's writer refuses it, so by hand."""
    if attrs:
        return write_dataset(path, TransitionDataset(**arrays, attrs=attrs))
    with h5py.File(path, "w") as handle:
        for key in ARRAY_KEYS:
            handle.create_dataset(key, data=arrays[key])
    return path


@pytest.fixture(scope="module")
def minari_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A Minari root holding MINARI_ID, made through Minari's own API."""
    import gymnasium
    import minari
    from minari.data_collector import EpisodeBuffer

    root = tmp_path_factory.mktemp("minari")
    rng = np.random.default_rng(1)
    buffers = []
    for index, (steps, end) in enumerate(MINARI_EPISODES):
        ends = {kind: [False] * (steps - 1) + [end == kind] for kind in ("terminal", "timeout")}
        buffers.append(
            EpisodeBuffer(
                id=index,
                observations=rng.normal(size=(steps + 1, OBS)),
                actions=rng.uniform(-1, 1, size=(steps, ACT)).astype(np.float32),
                rewards=list(rng.normal(2.0, 1.0, size=steps)),
                terminations=ends["terminal"],
                truncations=ends["timeout"],
            )
        )
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Minari asks for an author, a permalink, ...
        patch.setenv("MINARI_DATASETS_PATH", str(root))
        minari.create_dataset_from_buffers(
            MINARI_ID,
            buffers,
            env=gymnasium.make("Hopper-v5"),
            algorithm_name="hand-made",
            ref_min_score=-1.0,
            ref_max_score=5.0,
            data_format="hdf5",
        )
    yield root


def run_import(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], entry: dict[str, Any], name: str = "src"
) -> tuple[int, str, Path]:
    """Run the stage in-process on one entry; (exit status, stderr, output path)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    params = tmp_path / "params.yaml"
    sections = {"base": {"seed": 0}, "import_dataset": {"datasets": {name: entry}}}
    params.write_text(yaml.safe_dump(sections))
    out = tmp_path / "out" / f"{name}.hdf5"
    argv = ["import_dataset", "--name", name, "--out", str(out), "--params", str(params)]
    code = run_cli("dmc_envs", (IMPORT_STAGE,), argv)
    return code, capsys.readouterr().err, out


def stats_of(out: Path) -> dict[str, Any]:
    return json.loads(out.with_suffix(".stats.json").read_text())


def episode_returns(data: TransitionDataset) -> np.ndarray:
    return np.array([data.rewards[part].sum() for part in data.episode_slices()])


def test_d4rl_file_imports_with_provenance_and_its_open_last_episode_cut(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Catches: a last episode dropped or merged instead of cut, infos/* copied into the output,
    # provenance a later stage cannot rebuild the task from, scores by the wrong references.
    arrays = episode_arrays(EPISODES)
    path = write_d4rl(tmp_path / "hopper-medium-v2.hdf5", arrays)
    entry = {"format": "d4rl", "path": str(path), "task": "hopper", "seed": 7}
    code, err, out = run_import(tmp_path, capsys, entry, "hopper_medium")
    assert code == 0, err
    data = read_dataset(out)  # every provenance attribute the contract requires is there
    for key in ARRAY_KEYS:
        expected = arrays[key].copy()
        if key == "timeouts":
            expected[-1] = True  # the file's end cut the last episode
        np.testing.assert_array_equal(getattr(data, key), expected, err_msg=key)
    assert data.episode_ends.tolist() == [4, 5, 11, 15]
    assert data.terminals[4] and not data.terminals[15] and data.timeouts[15]
    with h5py.File(out) as handle:
        assert sorted(handle.keys()) == sorted(ARRAY_KEYS)
    task = build_task("hopper")
    low, high = task.action_bounds()
    attrs = data.attrs
    assert (attrs["env_id"], attrs["env_kwargs"], attrs["task"]) == ("Hopper-v5", {}, "hopper")
    assert (attrs["dataset_kind"], attrs["seed"], attrs["source_format"]) == (
        "hopper_medium",
        7,
        "d4rl",
    )
    assert attrs["behavior_policy"] == f"unknown: imported from d4rl file {path}"
    assert attrs["source_path"] == str(path)
    assert (attrs["action_low"], attrs["action_high"]) == (low.tolist(), high.tolist())
    assert (attrs["ref_min_score"], attrs["ref_max_score"]) == (
        task.returns.low,
        task.returns.high,
    )
    assert attrs["ref_score_source"] == task.returns.source
    assert attrs["imported_by"] == "dmc_envs import_dataset"
    assert attrs["source_metadata"] == {
        "algorithm": "SAC",
        "iteration": 3,
        "policy/nonlinearity": "relu",
    }
    rebuilt = task_for_dataset(attrs, str(out))
    assert (rebuilt.name, rebuilt.returns) == ("hopper", task.returns)
    stats = stats_of(out)
    returns = episode_returns(data)
    scores = 100 * (returns - task.returns.low) / (task.returns.high - task.returns.low)
    assert (stats["episodes"], stats["transitions"], stats["source_rows"]) == (4, ROWS, ROWS)
    assert stats["return_mean"] == pytest.approx(returns.mean(), rel=1e-6)
    assert stats["return_std"] == pytest.approx(returns.std(), rel=1e-6)
    assert stats["normalized_score"] == pytest.approx(scores.mean(), rel=1e-6)
    assert stats["normalized_score_std"] == pytest.approx(scores.std(), rel=1e-6)
    assert stats["changes"] == {
        "episodes_cut": 1,
        "rows_dropped_no_next_observation": 0,
        "terminal_rows_dropped": 0,
        "actions_clipped_rows": 0,
        "actions_clipped_max": 0.0,
    }
    resolved = yaml.safe_load(out.with_suffix(".config.yaml").read_text())
    assert resolved["import_dataset"]["datasets"]["hopper_medium"]["seed"] == 7


def test_d4rl_file_without_next_observations_rebuilds_them_and_drops_unknown_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Catches: next observations shifted by one row or taken across episodes, an episode's
    # last row kept with an invented next observation, episodes left without an end.
    arrays = episode_arrays(EPISODES)
    path = write_d4rl(tmp_path / "old.hdf5", arrays, drop=("next_observations",))
    code, err, out = run_import(
        tmp_path, capsys, {"format": "d4rl", "path": str(path), "task": "hopper"}
    )
    assert code == 0, err
    data = read_dataset(out)
    # Each episode's last row (4, 5, 11, 15) has no next observation in the file; the
    # one-row episode vanishes and the row before each dropped one ends its episode, cut.
    kept = np.array([0, 1, 2, 3, 6, 7, 8, 9, 10, 12, 13, 14])
    np.testing.assert_array_equal(data.observations, arrays["observations"][kept])
    np.testing.assert_array_equal(data.next_observations, arrays["observations"][kept + 1])
    np.testing.assert_array_equal(data.actions, arrays["actions"][kept])
    np.testing.assert_array_equal(data.rewards, arrays["rewards"][kept])
    assert data.episode_ends.tolist() == [3, 8, 11]
    assert data.timeouts[[3, 8, 11]].all() and not data.terminals.any()
    stats = stats_of(out)
    assert (stats["episodes"], stats["transitions"], stats["source_rows"]) == (3, 12, ROWS)
    assert stats["changes"]["rows_dropped_no_next_observation"] == 4
    assert stats["changes"]["terminal_rows_dropped"] == 1
    assert stats["changes"]["episodes_cut"] == 1


def test_minari_dataset_imports_through_minari_with_its_references(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    minari_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Catches: observation t + 1 misaligned with action t, Minari's recorded references
    # ignored, an open episode left open, MINARI_DATASETS_PATH left changed after the read.
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "elsewhere"))
    entry = {"format": "minari", "path": str(minari_root), "minari_id": MINARI_ID, "task": "hopper"}
    code, err, out = run_import(tmp_path, capsys, entry, "tiny")
    assert code == 0, err
    assert os.environ["MINARI_DATASETS_PATH"] == str(tmp_path / "elsewhere")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_root))
    episodes = list(minari.load_dataset(MINARI_ID).iterate_episodes())
    data = read_dataset(out)
    expected_obs = np.concatenate([ep.observations[:-1] for ep in episodes])
    expected_next = np.concatenate([ep.observations[1:] for ep in episodes])
    np.testing.assert_array_equal(data.observations, expected_obs)
    np.testing.assert_array_equal(data.next_observations, expected_next)
    np.testing.assert_array_equal(data.actions, np.concatenate([ep.actions for ep in episodes]))
    np.testing.assert_array_equal(data.rewards, np.concatenate([ep.rewards for ep in episodes]))
    assert data.episode_ends.tolist() == [3, 8, 11]
    assert data.terminals.tolist().count(True) == 1 and data.terminals[3]
    assert data.timeouts[8] and data.timeouts[11]  # truncated; left open, so cut
    attrs = data.attrs
    assert (attrs["minari_id"], attrs["env_id"], attrs["source_format"]) == (
        MINARI_ID,
        "Hopper-v5",
        "minari",
    )
    assert (attrs["ref_min_score"], attrs["ref_max_score"]) == (-1.0, 5.0)
    assert "Minari" in attrs["ref_score_source"] and MINARI_ID in attrs["ref_score_source"]
    assert attrs["source_metadata"]["algorithm_name"] == "hand-made"
    assert attrs["source_metadata"]["env_id"] == "Hopper-v5"
    stats = stats_of(out)
    scores = 100 * (episode_returns(data) + 1.0) / 6.0
    assert stats["normalized_score"] == pytest.approx(scores.mean(), rel=1e-6)
    assert stats["normalized_score_std"] == pytest.approx(scores.std(), rel=1e-6)
    assert stats["changes"]["episodes_cut"] == 1


def test_native_file_without_provenance_takes_the_params_references(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Catches: params references ignored (both-zero is "unset", anything else wins), a file
    # without provenance refused, its rows changed on the way.
    arrays = episode_arrays(((4, "terminal"), (3, "timeout")), seed=2)
    path = write_native(tmp_path / "mine.hdf5", arrays, {})
    entry = {
        "format": "dmc",
        "path": str(path),
        "task": "hopper",
        "ref_min_score": 0.0,
        "ref_max_score": 10.0,
        "ref_score_source": "my expert",
    }
    code, err, out = run_import(tmp_path, capsys, entry, "mine")
    assert code == 0, err
    data = read_dataset(out)
    for key in ARRAY_KEYS:
        np.testing.assert_array_equal(getattr(data, key), arrays[key], err_msg=key)
    assert (data.attrs["ref_min_score"], data.attrs["ref_max_score"]) == (0.0, 10.0)
    assert data.attrs["ref_score_source"] == "my expert"
    assert data.attrs["behavior_policy"] == f"unknown: imported from dmc file {path}"
    returns = episode_returns(data)
    assert stats_of(out)["normalized_score"] == pytest.approx(10 * returns.mean(), rel=1e-6)


def test_native_file_keeps_its_recorded_policy_and_references(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Catches: a known behaviour policy (and its density) replaced by "unknown", the file's
    # recorded references replaced by the task's.
    arrays = episode_arrays(((4, "timeout"),), seed=3)
    spec = {"type": "uniform", "low": [-1.0] * ACT, "high": [1.0] * ACT}
    attrs = {
        "env_id": "Hopper-v5",
        "dataset_kind": "old_name",
        "behavior_policy": "uniform on the action box",
        "behavior_policy_spec": spec,
        "seed": 4,
        "ref_min_score": 1.0,
        "ref_max_score": 3.0,
    }
    path = write_native(tmp_path / "made.hdf5", arrays, attrs)
    code, err, out = run_import(
        tmp_path, capsys, {"format": "dmc", "path": str(path), "task": "hopper"}, "made"
    )
    assert code == 0, err
    data = read_dataset(out)
    assert data.attrs["behavior_policy"] == "uniform on the action box"
    assert data.attrs["behavior_policy_spec"] == spec
    assert (data.attrs["dataset_kind"], data.attrs["seed"]) == ("made", 0)
    assert data.attrs["source_metadata"]["dataset_kind"] == "old_name"
    assert (data.attrs["ref_min_score"], data.attrs["ref_max_score"]) == (1.0, 3.0)
    assert build_task("hopper").behaviour_density(data.attrs) is not None


def test_actions_a_hair_outside_are_clipped_only_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Catches: out-of-bound actions written silently, a refusal that does not say how to
    # accept them, clipping that touches rows inside the bounds or leaves rows outside.
    arrays = episode_arrays(EPISODES)
    arrays["actions"][2, 0] = np.nextafter(np.float32(1.0), np.float32(2.0))
    arrays["actions"][7, 2] = np.float32(-1.02)
    path = write_d4rl(tmp_path / "hair.hdf5", arrays)
    entry = {"format": "d4rl", "path": str(path), "task": "hopper"}
    code, err, out = run_import(tmp_path / "refused", capsys, entry, "hair")
    assert code == 2 and not out.exists()
    assert f"{path}: 'actions' lie outside the recorded action space" in err
    assert "import_dataset.datasets.hair.clip_actions: true" in err
    code, err, out = run_import(
        tmp_path / "clipped", capsys, {**entry, "clip_actions": True}, "hair"
    )
    assert code == 0, err
    data = read_dataset(out)
    assert (data.actions[2, 0], data.actions[7, 2]) == (1.0, -1.0)
    untouched = np.ones(ROWS, dtype=bool)
    untouched[[2, 7]] = False
    np.testing.assert_array_equal(data.actions[untouched], arrays["actions"][untouched])
    changes = stats_of(out)["changes"]
    assert changes["actions_clipped_rows"] == 2
    assert changes["actions_clipped_max"] == pytest.approx(0.02, abs=1e-6)


def test_clip_bounds_round_inward_in_the_actions_dtype() -> None:
    # Catches: float32 actions clipped to a bound like 0.4, which rounds outward in float32,
    # and then refused by the validator as outside the float64 bound.
    lo, hi = _bounds_in(np.dtype(np.float32), np.array([-0.4, -1.0]), np.array([0.4, 1.0]))
    assert lo.dtype == hi.dtype == np.float32
    assert (lo >= np.array([-0.4, -1.0])).all() and (hi <= np.array([0.4, 1.0])).all()
    assert hi[0] == np.nextafter(np.float32(0.4), np.float32(0.0)) and hi[1] == 1.0


def _d4rl_missing_rewards(tmp_path: Path) -> tuple[dict[str, Any], list[str]]:
    path = write_d4rl(tmp_path / "norew.hdf5", episode_arrays(EPISODES), drop=("rewards",))
    return {"format": "d4rl", "path": str(path)}, [str(path), "array 'rewards' is missing"]


def _d4rl_short_actions(tmp_path: Path) -> tuple[dict[str, Any], list[str]]:
    arrays = episode_arrays(EPISODES)
    arrays["actions"] = arrays["actions"][:-1]
    path = write_d4rl(tmp_path / "short.hdf5", arrays)
    return {"format": "d4rl", "path": str(path)}, [
        f"{path}: 'actions' has {ROWS - 1} rows, but 'observations' has {ROWS}"
    ]


def _d4rl_wide_actions(tmp_path: Path) -> tuple[dict[str, Any], list[str]]:
    arrays = episode_arrays(EPISODES)
    arrays["actions"] = np.zeros((ROWS, 6), dtype=np.float32)
    path = write_d4rl(tmp_path / "cheetah.hdf5", arrays)
    return {"format": "d4rl", "path": str(path)}, [
        f"{path}: 'actions' have 6 dimension(s), but task 'hopper' (Hopper-v5) has 3"
    ]


def _d4rl_broken_episode(tmp_path: Path) -> tuple[dict[str, Any], list[str]]:
    arrays = episode_arrays(EPISODES)
    arrays["next_observations"][1] += 1.0
    path = write_d4rl(tmp_path / "broken.hdf5", arrays)
    return {"format": "d4rl", "path": str(path)}, [f"{path}: episode continuity broken at row 1"]


def _missing_file(tmp_path: Path) -> tuple[dict[str, Any], list[str]]:
    path = tmp_path / "nowhere.hdf5"
    return {"format": "d4rl", "path": str(path)}, [
        f"import_dataset.datasets.src.path: no file {path}"
    ]


def _unknown_task(tmp_path: Path) -> tuple[dict[str, Any], list[str]]:
    path = write_d4rl(tmp_path / "ok.hdf5", episode_arrays(EPISODES))
    entry = {"format": "d4rl", "path": str(path), "task": "hoper"}
    return entry, ["import_dataset.datasets.src.task: unknown task 'hoper'", "hopper"]


def _other_env(tmp_path: Path) -> tuple[dict[str, Any], list[str]]:
    attrs = {"env_id": "HalfCheetah-v5", "dataset_kind": "x", "behavior_policy": "x", "seed": 0}
    path = write_native(tmp_path / "cheetah.hdf5", episode_arrays(((3, "timeout"),)), attrs)
    return {"format": "dmc", "path": str(path)}, [
        "import_dataset.datasets.src.task: task 'hopper' (Hopper-v5) does not fit",
        f"{path}, which records env 'HalfCheetah-v5'",
    ]


def _minari_without_id(tmp_path: Path) -> tuple[dict[str, Any], list[str]]:
    return {"format": "minari", "path": str(tmp_path)}, [
        "import_dataset.datasets.src.minari_id: format 'minari' needs the dataset id"
    ]


def _reversed_references(tmp_path: Path) -> tuple[dict[str, Any], list[str]]:
    path = write_d4rl(tmp_path / "ok.hdf5", episode_arrays(EPISODES))
    entry = {"format": "d4rl", "path": str(path), "ref_min_score": 5.0, "ref_max_score": 1.0}
    return entry, ["import_dataset.datasets.src.ref_max_score: 1.0 must be above"]


@pytest.mark.parametrize(
    "make",
    [
        _d4rl_missing_rewards,
        _d4rl_short_actions,
        _d4rl_wide_actions,
        _d4rl_broken_episode,
        _missing_file,
        _unknown_task,
        _other_env,
        _minari_without_id,
        _reversed_references,
    ],
)
def test_refusals_name_the_file_or_key_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any
) -> None:
    # Catches: a traceback or a message that leaves the user guessing which file or key.
    entry, needles = make(tmp_path)
    code, err, out = run_import(tmp_path, capsys, {"task": "hopper", **entry})
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for needle in needles:
        assert needle in err
    assert not out.exists()


def test_unknown_minari_id_lists_the_datasets_under_the_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], minari_root: Path
) -> None:
    # Catches: Minari's own error (or a download attempt) instead of naming the id and root.
    entry = {"format": "minari", "path": str(minari_root), "minari_id": "test/hopper/nope-v0"}
    code, err, out = run_import(tmp_path, capsys, {"task": "hopper", **entry})
    assert code == 2 and not out.exists()
    assert (
        f"import_dataset.datasets.src.minari_id: no Minari dataset 'test/hopper/nope-v0' "
        f"under {minari_root} (datasets there: ['{MINARI_ID}'])"
    ) in err


def test_unknown_entry_names_the_entries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Catches: a --name typo reported as a KeyError.
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"import_dataset": {"datasets": {}}}))
    argv = [
        "import_dataset",
        "--name",
        "x",
        "--out",
        str(tmp_path / "x.hdf5"),
        "--params",
        str(params),
    ]
    assert run_cli("dmc_envs", (IMPORT_STAGE,), argv) == 2
    assert "import_dataset.datasets has no entry 'x' (entries: [])" in capsys.readouterr().err
