"""The `sweep` command: one `dvc exp run --queue` per (task, dataset), its flags read off the
params, every pair checked before anything is printed or queued (never real DVC here)."""

from __future__ import annotations

import copy
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from dmc_core.check_params import REFERENCES
from dmc_core.cli import run_cli
from dmc_core.config import read_params
from dmc_core.errors import ConfigError, DmcError
from dmc_core.testing import run_module
from dmc_envs import sweep
from dmc_envs.sweep import SWEEP_COMMAND, Experiment, dataset_sections, plan, queue

#: A locomotion-like params file: datasets made (`random`), collected by behaviour agents
#: (`medium`, `expert`, `medium_expert` of hopper; `medium_replay` of hopper) and entries naming
#: them in several sections; `align.passes.pass.critic` is a reference of another field.
PARAMS: dict[str, Any] = {
    "base": {"seed": 0, "task": "hopper"},
    "make_dataset": {"datasets": {"random": {"behaviour": "uniform"}}},
    "train_behaviour": {"agents": {"hopper": {"steps": 10}}},
    "behaviour_datasets": {"tasks": {"hopper": {"agents": "pipelines/behaviour/hopper"}}},
    "pretrain": {"models": {"diffuser": {"dataset": "random", "horizon": 16}}},
    "fit_critic": {"critics": {"full": {"dataset": "random"}}},
    "align": {"passes": {"pass": {"model": "diffuser", "after": "diffuser", "dataset": "random"}}},
    "fit_policy": {"policies": {"bc": {"kind": "bc", "dataset": "random", "critic": "full"}}},
    "evaluate": {
        "protocol": {"planner": {"episodes": 4}},
        "runs": {
            "diffuser": {"model": "diffuser", "dataset": "random", "critic": "full"},
            "bc": {"model": "bc", "dataset": "random", "critic": "full", "stage": "baseline"},
        },
    },
}


def hopper_medium(*extra: str) -> list[str]:
    """The full command of the pair (hopper, medium) with PARAMS, `extra` flags inserted after
    the baseline policy `bc`'s. It targets `summarize`: without a target the experiment would run
    every stage of the params, the SAC agents of other tasks included."""
    return [
        "dvc", "exp", "run", "--queue", "-n", "hopper-medium",
        "-S", "base.task=hopper",
        "-S", "pretrain.models.diffuser.dataset=medium",
        "-S", "fit_critic.critics.full.dataset=medium",
        "-S", "align.passes.pass.dataset=medium",
        "-S", "fit_policy.policies.bc.dataset=medium",
        *extra,
        "-S", "evaluate.runs.diffuser.dataset=medium",
        "-S", "evaluate.runs.bc.dataset=medium",
        "summarize",
    ]  # fmt: skip


def write_params(directory: Path, params: dict[str, Any]) -> Path:
    """`params` as `params.yaml` in `directory`."""
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def main(*argv: str) -> int:
    """Run the command as `python -m dmc_envs sweep argv...` would, in this process."""
    return run_cli("dmc_envs", [], ["sweep", *argv], commands=(SWEEP_COMMAND,))


class FakeRunner:
    """Records every command line; the `fail_at`-th call (from 1) exits with status 3."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_at = fail_at

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        status = 3 if len(self.calls) == self.fail_at else 0
        error = "ERROR: experiment name already used" if status else ""
        return subprocess.CompletedProcess(list(argv), status, "", error)


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> FakeRunner:
    """A fake DVC: `--queue` runs its commands through it (and finds `dvc` wherever it is)."""
    fake = FakeRunner()
    monkeypatch.setattr(sweep, "find_dvc", lambda: "/nowhere/dvc")
    monkeypatch.setattr(sweep, "_dvc_runner", lambda dvc: fake)
    return fake


def test_sections_are_the_dataset_references_of_check_params() -> None:
    expected = [r.entries for r in REFERENCES if r.field == "dataset"]
    assert list(dataset_sections()) == expected
    assert "fit_policy.policies" in expected and "evaluate.runs" in expected


def test_a_pair_sets_the_task_and_every_entry_that_names_a_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = write_params(tmp_path, PARAMS)
    assert main("--tasks", "hopper", "--datasets", "medium", "--params", str(params)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert shlex.split(lines[0]) == hopper_medium()
    assert "dvc queue start" in lines[1] and "report --exps" in lines[1]
    assert lines[1].startswith("#")  # the output can be piped into a shell as it is


def test_an_entry_a_profile_adds_is_swept_without_a_code_change(tmp_path: Path) -> None:
    params = copy.deepcopy(PARAMS)
    params["fit_policy"]["policies"]["iql"] = {"kind": "awr", "dataset": "random"}
    params["fit_policy"]["policies"]["nodata"] = {"kind": "bc"}  # names no dataset: left alone
    read = read_params(write_params(tmp_path, params))
    (experiment,) = plan(read, ["hopper"], ["medium"])
    assert list(experiment.argv) == hopper_medium("-S", "fit_policy.policies.iql.dataset=medium")


def test_pairs_run_tasks_outer_and_names_keep_underscores() -> None:
    experiments = plan(PARAMS, ["hopper", "hopper"], ["medium_replay", "random", "medium_replay"])
    assert [(e.task, e.dataset, e.name) for e in experiments] == [
        ("hopper", "medium_replay", "hopper-medium_replay"),
        ("hopper", "random", "hopper-random"),
    ]
    assert "pretrain.models.diffuser.dataset=medium_replay" in experiments[0].argv


def test_a_dataset_the_task_cannot_make_names_the_pair_and_key_and_queues_nothing(
    tmp_path: Path, runner: FakeRunner, capsys: pytest.CaptureFixture[str]
) -> None:
    params = write_params(tmp_path, PARAMS)
    argv = ["--tasks", "hopper", "walker2d", "--datasets", "medium", "expert"]
    assert main(*argv, "--params", str(params), "--queue") == 2
    out, err = capsys.readouterr()
    assert runner.calls == [] and out == ""
    assert "2 pair(s)" in err and "task hopper" not in err  # hopper has behaviour datasets
    for dataset in ("medium", "expert"):
        assert f"task walker2d, dataset {dataset}: pretrain.models.diffuser.dataset: " in err
    assert "needs an entry behaviour_datasets.tasks.walker2d" in err


def test_a_broken_pair_prints_no_command_either(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = write_params(tmp_path, PARAMS)
    assert main("--tasks", "hopper", "--datasets", "random", "nope", "--params", str(params)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "task hopper, dataset nope: pretrain.models.diffuser.dataset: 'nope' names no" in err


def test_a_task_setting_goes_to_that_tasks_experiments_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = copy.deepcopy(PARAMS)
    params["behaviour_datasets"]["tasks"]["walker2d"] = {"agents": "pipelines/behaviour/walker2d"}
    path = write_params(tmp_path, params)
    argv = ["--tasks", "hopper", "walker2d", "--datasets", "medium", "--params", str(path)]
    settings = ["hopper:make_dataset.datasets.random.seed=7", "hopper:base.seed=3"]
    assert main(*argv, "--set", settings[0], "--set", settings[1]) == 0  # flags add up
    hopper, walker2d = (shlex.split(line) for line in capsys.readouterr().out.splitlines()[:2])
    # `seed` of the random dataset is not in the params file (its schema default): it is added.
    extra = ["-S", "+make_dataset.datasets.random.seed=7", "-S", "base.seed=3"]
    assert hopper == [*hopper_medium()[:-1], *extra, "summarize"]
    assert "make_dataset.datasets.random.seed=7" not in " ".join(walker2d)
    assert "base.task=walker2d" in walker2d


def test_a_key_the_params_file_lacks_is_added_and_one_it_holds_is_changed(
    tmp_path: Path,
) -> None:
    # DVC refuses `-S fit_critic.critics.full.action_chunk=4` when the file holds no such key
    # ("Key 'action_chunk' is not in struct") and refuses `+` for one it holds.
    settings = {
        "hopper": [
            (("fit_critic", "critics", "full", "action_chunk"), "4"),
            (("base", "seed"), "3"),
            (("new_section", "knob"), "1"),
        ]
    }
    (experiment,) = plan(PARAMS, ["hopper"], ["medium"], settings)
    flags = list(experiment.argv[experiment.argv.index("-S") : -1])
    assert flags[-6:] == [
        "-S", "+fit_critic.critics.full.action_chunk=4",
        "-S", "base.seed=3",
        "-S", "+new_section.knob=1",
    ]  # fmt: skip
    assert experiment.argv[:-7] == tuple(hopper_medium()[:-1])  # the dataset flags: changed


def test_a_task_setting_is_checked_like_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_params(tmp_path, PARAMS)
    argv = ["--tasks", "hopper", "--datasets", "medium", "--params", str(path), "--set"]
    assert main(*argv, "walker2d:base.seed=1") == 2
    assert "task 'walker2d' is not swept (--tasks hopper)" in capsys.readouterr().err
    assert main(*argv, "hopper-base.seed") == 2
    assert "expected TASK:KEY=VALUE" in capsys.readouterr().err
    # a setting that breaks a reference stops the command like a bad dataset does
    assert main(*argv, "hopper:evaluate.runs.bc.critic=nope") == 2
    out, err = capsys.readouterr()
    assert out == "" and "task hopper, dataset medium: evaluate.runs.bc.critic" in err


def test_a_task_profile_goes_in_value_by_value_before_the_tasks_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Catches: a profile's entry added as one flag DVC cannot read, a lost `+` on the keys of
    an entry the params lack, values that DVC would read back as another type, or a profile
    given to the other tasks too."""
    params = copy.deepcopy(PARAMS)
    params["behaviour_datasets"]["tasks"]["walker2d"] = {"agents": "pipelines/behaviour/walker2d"}
    path = write_params(tmp_path, params)
    profile = tmp_path / "plan.yaml"
    profile.write_text(
        "fit_critic:\n"
        "  critics:\n"
        "    _extend: true\n"
        "    plan: {dataset: medium, action_chunk: 4, layer_norm: true, note: '7',\n"
        "           train: {lr: 0.001}}\n"
        "align: {passes: {pass: {critic: plan}}}\n"
        "evaluate: {protocol: {sweep_candidates: [1, 4]}}\n"
    )
    argv = ["--tasks", "hopper", "walker2d", "--datasets", "medium", "--params", str(path)]
    assert main(*argv, "--profile", f"hopper:{profile}", "--set", "hopper:base.seed=3") == 0
    hopper, walker2d = (shlex.split(line) for line in capsys.readouterr().out.splitlines()[:2])
    assert hopper[len(hopper_medium()) - 1 : -1] == [
        "-S", "+fit_critic.critics.plan.dataset=medium",
        "-S", "+fit_critic.critics.plan.action_chunk=4",
        "-S", "+fit_critic.critics.plan.layer_norm=true",
        "-S", "+fit_critic.critics.plan.note='7'",
        "-S", "+fit_critic.critics.plan.train.lr=0.001",
        "-S", "+align.passes.pass.critic=plan",
        "-S", "+evaluate.protocol.sweep_candidates=[1,4]",
        "-S", "base.seed=3",
    ]  # fmt: skip
    assert "plan" not in " ".join(walker2d)


def test_a_task_profile_is_checked_with_its_values_typed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Catches: overrides checked as strings (`'17'`), so that a critic of longer chunks than
    the Diffuser's 16-step plan passes the check and fails in the pass; `+KEY` in `--set`
    (as for `dvc exp run`) doubled or unchecked; `_replace` silently dropped."""
    path = write_params(tmp_path, PARAMS)
    argv = ["--tasks", "hopper", "--datasets", "medium", "--params", str(path)]
    profile = tmp_path / "chunk.yaml"
    profile.write_text("fit_critic: {critics: {full: {action_chunk: 17}}}\n")
    for given in (["--profile", f"hopper:{profile}"],
                  ["--set", "hopper:+fit_critic.critics.full.action_chunk=17"]):  # fmt: skip
        assert main(*argv, *given) == 2
        out, err = capsys.readouterr()
        assert out == "" and "runs.diffuser.critic: 'full' scores chunks of 17" in err, err
        assert "holds 16 in its plan" in err and "needs an entry" not in err
    assert main(*argv, "--set", "hopper:+fit_critic.critics.full.action_chunk=16") == 0
    assert "-S +fit_critic.critics.full.action_chunk=16 " in capsys.readouterr().out
    profile.write_text("pretrain: {models: {_replace: true, d: {dataset: medium}}}\n")
    assert main(*argv, "--profile", f"hopper:{profile}") == 2
    assert f"{profile}: pretrain.models: _replace replaces" in capsys.readouterr().err
    assert main(*argv, "--profile", f"walker2d:{profile}") == 2
    assert "task 'walker2d' is not swept" in capsys.readouterr().err


def test_the_params_are_not_changed_by_the_check() -> None:
    before = yaml.safe_dump(PARAMS)
    plan(PARAMS, ["hopper"], ["medium"])
    assert yaml.safe_dump(PARAMS) == before


def test_an_unknown_task_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown task hoper \(known tasks: .*hopper.*walker2d"):
        plan(PARAMS, ["hoper"], ["medium"])


def test_params_without_dataset_entries_have_nothing_to_sweep() -> None:
    with pytest.raises(ConfigError, match="nothing to sweep"):
        plan({"base": {"task": "hopper"}}, ["hopper"], ["random"])


def test_an_invalid_experiment_name_is_refused() -> None:
    params = {**PARAMS, "make_dataset": {"datasets": {"a/b": {}}}}
    with pytest.raises(ConfigError, match="'hopper-a/b' is no valid DVC experiment name"):
        plan(params, ["hopper"], ["a/b"])


def test_queue_runs_every_pair_in_order(
    tmp_path: Path, runner: FakeRunner, capsys: pytest.CaptureFixture[str]
) -> None:
    params = write_params(tmp_path, PARAMS)
    argv = ["--tasks", "hopper", "--datasets", "medium", "medium_replay", "--queue"]
    assert main(*argv, "--params", str(params)) == 0
    expected = plan(PARAMS, ["hopper"], ["medium", "medium_replay"])
    assert runner.calls == [list(e.argv) for e in expected]
    assert runner.calls[0] == hopper_medium()
    out = capsys.readouterr().out
    assert "[1/2] queueing hopper-medium" in out and "[2/2] queueing hopper-medium_replay" in out
    assert "queued 2 experiment(s)" in out


def test_queue_stops_at_the_first_failure_with_its_status_and_stderr() -> None:
    experiments = [
        Experiment("hopper", data, f"hopper-{data}", ("dvc", "exp", "run", data))
        for data in ("random", "medium", "expert")
    ]
    fake = FakeRunner(fail_at=2)
    with pytest.raises(DmcError) as caught:
        queue(experiments, fake)
    assert fake.calls == [["dvc", "exp", "run", "random"], ["dvc", "exp", "run", "medium"]]
    message = str(caught.value)
    assert "hopper-medium: dvc exp run exited with status 3" in message
    assert "queued before it: hopper-random" in message
    assert "experiment name already used" in message


def test_printed_commands_split_back_into_their_argv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = copy.deepcopy(PARAMS)
    params["fit_policy"]["policies"]["it's mine"] = {"dataset": "random"}  # to be quoted
    path = write_params(tmp_path, params)
    assert main("--tasks", "hopper", "--datasets", "medium", "random", "--params", str(path)) == 0
    lines = capsys.readouterr().out.splitlines()[:-1]
    expected = plan(params, ["hopper"], ["medium", "random"])
    assert [shlex.split(line) for line in lines] == [list(e.argv) for e in expected]
    assert "'fit_policy.policies.it'\"'\"'s mine.dataset=medium'" in lines[0]


def test_a_missing_dvc_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sweep.shutil, "which", lambda name, path=None: None)
    with pytest.raises(DmcError, match="needs the dvc command"):
        sweep.find_dvc()


def test_the_runner_runs_the_found_dvc(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def fake_run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        seen.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(sweep.subprocess, "run", fake_run)
    sweep._dvc_runner("/opt/bin/dvc")(["dvc", "exp", "run", "-n", "x"])
    assert seen == [["/opt/bin/dvc", "exp", "run", "-n", "x"]]


def test_the_command_is_a_verb_of_the_package() -> None:
    done = run_module("dmc_envs", "sweep", "--help")
    assert done.returncode == 0, done.stderr
    assert "--tasks" in done.stdout and "--datasets" in done.stdout and "--queue" in done.stdout
