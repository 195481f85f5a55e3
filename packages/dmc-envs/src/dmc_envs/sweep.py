"""Command `sweep`: one DVC experiment per (task, dataset), its flags derived from the params.

    python -m dmc_envs sweep --tasks hopper walker2d --datasets medium medium_replay   # print
    python -m dmc_envs sweep --tasks hopper walker2d --datasets medium --queue         # queue
    python -m dmc_envs sweep --tasks drawer-open button-press --datasets medium \
        --set button-press:make_dataset.datasets.medium.random_fraction=0.75           # per task
    python -m dmc_envs sweep --tasks drawer-open sweep-into --datasets medium \
        --profile sweep-into:pipelines/profiles/metaworld-sweep-into.yaml              # per task
    dvc queue start
    python -m dmc_envs report --exps --out report.md --plot report.png

An experiment on another dataset must set the dataset of every params entry that names one: the
models, critics, passes, cascades, baseline policies and evaluation runs. Which sections those
are is read off `check_params.REFERENCES` (its `dataset` references), and their entries off the
params file, so an entry a profile adds (a baseline policy, its evaluation run) is swept without
a change here. Each experiment gets `-S base.task=<task>`, `-S <section>.<entry>.dataset=<dataset>`
for every such entry, and the name `<task>-<dataset>`. `--set TASK:KEY=VALUE` adds `-S KEY=VALUE`
to TASK's experiments only (a data level that differs between tasks, say). A key the params file
does not hold (a knob left at its schema default) goes as `-S +KEY=VALUE`, the form DVC's
overrides need to add a key rather than change one. `--profile TASK:PATH` gives TASK's
experiments a profile (`dmc_core.profile`'s format) as one `-S` per value it sets, before that
task's `--set` values: a whole entry it adds (a critic) goes key by key, each with its `+`; a
mapping marked `_replace` cannot be said with `-S` and is refused. Each experiment
targets `summarize`, so it runs only what its results need: without a target `dvc exp run` would
also run every other stage of the params, such as the SAC agents of the other tasks (hours each).

Every pair is checked before anything is printed or queued: its overrides, applied to a copy of
the params, must leave every reference intact (`check_params.broken_references`). A dataset the
task cannot produce (`medium` for a task without a `behaviour_datasets.tasks.<task>` entry)
stops the command, naming the pair and the key, and nothing is queued.

The params file is only read: `dvc exp run -S` applies the flags to the repository's
`params.yaml` when the experiment is queued, so `--params` should name that file (the default)
or a copy of it.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import yaml

from dmc_core.check_params import (
    AGENTS,
    BEHAVIOUR,
    BEHAVIOUR_KINDS,
    DATASETS,
    IMPORTED,
    REFERENCES,
    REPLAY_KIND,
    ROLLOUTS,
    broken_references,
    entries_at,
)
from dmc_core.cli import Arg, Command
from dmc_core.config import read_params
from dmc_core.errors import ConfigError, DmcError
from dmc_core.profile import EXTEND_MARKER, REPLACE_MARKER
from dmc_envs.tasks.registry import task_names

__all__ = [
    "SWEEP_COMMAND",
    "Experiment",
    "applied",
    "check_tasks",
    "command_line",
    "dataset_sections",
    "experiment_name",
    "find_dvc",
    "overrides",
    "parse_task_profiles",
    "parse_task_settings",
    "plan",
    "profile_overrides",
    "queue",
]

NAME = "sweep"
TASK_KEY = ("base", "task")
#: The stage every experiment reproduces, with what it needs (every model, critic, evaluation).
TARGET = "summarize"
#: What to run once the experiments are queued.
NEXT_STEPS = "dvc queue start", "python -m dmc_envs report --exps --out report.md --plot report.png"
#: The sections that collect datasets per task, and the datasets an entry of theirs writes.
_BEHAVIOUR_SECTIONS = {BEHAVIOUR: BEHAVIOUR_KINDS, AGENTS: (REPLAY_KIND,)}
#: The sections whose entries are datasets by name, whatever the task.
_NAMED_DATASETS = (DATASETS, IMPORTED, ROLLOUTS)
#: A name DVC accepts for an experiment (a git ref component, kept to plain characters).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+-]*(\.[A-Za-z0-9_+-]+)*")

#: A params override: the key as its path of names, and the value.
Override = tuple[tuple[str, ...], str]
#: `--set` values: TASK:KEY=VALUE.
_TASK_SETTING = re.compile(r"(?P<task>[^:=\s]+):(?P<key>[A-Za-z0-9_.+-]+)=(?P<value>.*)")
#: `--profile` values: TASK:PATH.
_TASK_PROFILE = re.compile(r"(?P<task>[^:=\s]+):(?P<path>.+)")
#: A string value that goes into an override as it is (anything else is quoted).
_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
#: Runs one command line; a test passes a fake one, never real DVC.
Runner = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]


@dataclass(frozen=True)
class Experiment:
    """One queued experiment: its pair, its name and the `dvc exp run` command line."""

    task: str
    dataset: str
    name: str
    argv: tuple[str, ...]


def dataset_sections() -> tuple[str, ...]:
    """The params sections whose entries name a dataset (the `dataset` references checked by
    `check_params`), in the order of `REFERENCES`."""
    found = (reference.entries for reference in REFERENCES if reference.field == "dataset")
    return tuple(dict.fromkeys(found))


def overrides(
    params: Mapping[str, Any], task: str, dataset: str, extra: Sequence[Override] = ()
) -> list[Override]:
    """The overrides of one pair: `base.task`, then the `dataset` of every entry that has one,
    section by section in `dataset_sections()` order and entries in the file's order, then
    `extra` (the task's `--set` values)."""
    found: list[Override] = [(TASK_KEY, task)]
    for section in dataset_sections():
        path = tuple(section.split("."))
        for entry, values in entries_at(params, section).items():
            if isinstance(values, Mapping) and "dataset" in values:
                found.append(((*path, str(entry), "dataset"), dataset))
    return found + list(extra)


def parse_task_settings(values: Sequence[str], tasks: Sequence[str]) -> dict[str, list[Override]]:
    """`--set` values (TASK:KEY=VALUE) as overrides per task, in the order given.

    Raises:
        ConfigError: a value not of that form, or a TASK that is not among `tasks`.
    """
    settings: dict[str, list[Override]] = {}
    for value in values:
        found = _TASK_SETTING.fullmatch(value)
        if found is None:
            raise ConfigError(f"--set {value}: expected TASK:KEY=VALUE, e.g. hopper:seed=1")
        _check_swept(found["task"], tasks, f"--set {value}")
        # `+KEY`, as one would write it for `dvc exp run -S`: the `+` is added where needed
        key = tuple(found["key"].removeprefix("+").split("."))
        settings.setdefault(found["task"], []).append((key, found["value"]))
    return settings


def parse_task_profiles(values: Sequence[str], tasks: Sequence[str]) -> dict[str, list[Override]]:
    """`--profile` values (TASK:PATH) as overrides per task (`profile_overrides`), in the
    order given.

    Raises:
        ConfigError: a value not of that form, a TASK that is not among `tasks`, or a profile
            that cannot be read or said as overrides.
    """
    settings: dict[str, list[Override]] = {}
    for value in values:
        found = _TASK_PROFILE.fullmatch(value)
        if found is None:
            raise ConfigError(
                f"--profile {value}: expected TASK:PATH, e.g. "
                "sweep-into:pipelines/profiles/metaworld-sweep-into.yaml"
            )
        _check_swept(found["task"], tasks, f"--profile {value}")
        settings.setdefault(found["task"], []).extend(profile_overrides(Path(found["path"])))
    return settings


def profile_overrides(path: Path) -> list[Override]:
    """Every value a profile sets, as an override, in the file's order (`a: {b: 1}` gives
    `(("a", "b"), "1")`). `_extend` is dropped: a key the params lack is added anyway
    (`-S +KEY`).

    Raises:
        ConfigError: the file cannot be read, is not a mapping, or marks a mapping `_replace`
            (which replaces it whole: overrides can only set keys).
    """
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read the profile: {err}") from err
    if not isinstance(document, Mapping):
        raise ConfigError(f"{path}: a profile is a mapping of params sections")
    return list(_leaves(document, (), path))


def _leaves(node: Mapping[str, Any], prefix: tuple[str, ...], path: Path) -> Iterator[Override]:
    for key, value in node.items():
        if key == EXTEND_MARKER:
            continue
        if key == REPLACE_MARKER:
            raise ConfigError(
                f"{path}: {'.'.join(prefix)}: {REPLACE_MARKER} replaces the mapping whole, which "
                "-S overrides cannot do; apply the profile to the params instead"
            )
        if isinstance(value, Mapping):
            yield from _leaves(value, (*prefix, str(key)), path)
        else:
            yield (*prefix, str(key)), _override_value(value)


def _override_value(value: Any) -> str:
    """A YAML value as DVC's `-S` grammar reads it back: `true`, `0.9`, `[1,4,16]`, `medium`,
    and a string that would read as something else (`'1'`, `'a b'`) quoted."""
    if isinstance(value, str):
        return value if _BARE.fullmatch(value) and yaml.safe_load(value) == value else repr(value)
    if isinstance(value, list):
        return "[" + ",".join(_override_value(item) for item in value) + "]"
    return json.dumps(value)


def _check_swept(task: str, tasks: Sequence[str], flag: str) -> None:
    if task not in tasks:
        raise ConfigError(f"{flag}: task '{task}' is not swept (--tasks {' '.join(tasks)})")


def applied(params: Mapping[str, Any], changes: Sequence[Override]) -> dict[str, Any]:
    """A deep copy of the params with the overrides set (the params themselves untouched),
    each value read as YAML, as DVC reads it (`4` an int, `[1,4]` a list)."""
    result = copy.deepcopy(dict(params))
    for path, value in changes:
        node = result
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}  # a section left empty (`base:`) or absent
            node = node[part]
        node[path[-1]] = _read_value(value)
    return result


def _read_value(value: str) -> Any:
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def experiment_name(task: str, dataset: str) -> str:
    """`<task>-<dataset>`, refused unless DVC accepts it as an experiment name (a git ref
    component: no `/`, spaces, `..`, ...; `_` and `-` are fine)."""
    name = f"{task}-{dataset}"
    if not _NAME.fullmatch(name) or name.endswith(".lock"):
        raise ConfigError(
            f"{task} {dataset}: '{name}' is no valid DVC experiment name "
            "(letters, digits, '_', '-', '+' and single dots only)"
        )
    return name


def check_tasks(tasks: Sequence[str]) -> None:
    """Refuse a task name the registry does not know, naming the known ones."""
    known = task_names()
    unknown = [task for task in tasks if task not in known]
    if unknown:
        raise ConfigError(f"unknown task {', '.join(unknown)} (known tasks: {', '.join(known)})")


def plan(
    params: Mapping[str, Any],
    tasks: Sequence[str],
    datasets: Sequence[str],
    settings: Mapping[str, Sequence[Override]] | None = None,
) -> list[Experiment]:
    """The experiments of every (task, dataset) pair, tasks outer; each checked first.
    `settings` adds overrides to a task's experiments (`parse_task_settings`).

    Raises:
        ConfigError: an unknown task, no entry that names a dataset, an invalid experiment name,
            or a pair whose overrides break a reference (every such pair is named).
    """
    check_tasks(tasks)
    pairs = list(product(dict.fromkeys(tasks), dict.fromkeys(datasets)))  # repeats dropped
    if pairs and len(overrides(params, *pairs[0])) == 1:
        sections = ", ".join(dataset_sections())
        raise ConfigError(f"no entry of {sections} names a dataset: there is nothing to sweep")
    settings = settings or {}
    changes = {pair: overrides(params, *pair, settings.get(pair[0], ())) for pair in pairs}
    broken = [_first_broken(params, *pair, changes[pair]) for pair in pairs]
    problems = [problem for problem in broken if problem is not None]
    if problems:
        listed = "\n  ".join(problems)
        raise ConfigError(
            f"{len(problems)} pair(s) would break a reference, nothing queued:\n  {listed}"
        )
    return [_experiment(*pair, _flags(params, changes[pair])) for pair in pairs]


def _first_broken(
    params: Mapping[str, Any], task: str, dataset: str, changes: Sequence[Override]
) -> str | None:
    """The pair and its first broken reference (key: problem) once its `changes` are applied,
    or None if it has none."""
    broken = next(broken_references(applied(params, changes)), None)
    if broken is None:
        return None
    key, problem = broken
    return f"task {task}, dataset {dataset}: {key}: {problem}{_hint(params, task, dataset)}"


def _hint(params: Mapping[str, Any], task: str, dataset: str) -> str:
    """Which entry would make `dataset` for `task`, if a behaviour section would and lacks it
    and no section that names datasets itself (`make_dataset`, ...) has it."""
    if any(dataset in entries_at(params, section) for section in _NAMED_DATASETS):
        return ""
    for section, kinds in _BEHAVIOUR_SECTIONS.items():
        if dataset in kinds and task not in entries_at(params, section):
            return f"; '{dataset}' of {task} needs an entry {section}.{task}"
    return ""


def _flags(params: Mapping[str, Any], changes: Sequence[Override]) -> list[str]:
    """`-S KEY=VALUE` for each change; `-S +KEY=VALUE` where `params` lacks the key, which
    `dvc exp run` refuses to change ("Key ... is not in struct") but adds."""
    flags: list[str] = []
    for path, value in changes:
        append = "" if _holds(params, path) else "+"
        flags += ["-S", f"{append}{'.'.join(path)}={value}"]
    return flags


def _holds(params: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    """Whether `params` has a value at `path`."""
    node: Any = params
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _experiment(task: str, dataset: str, flags: Sequence[str]) -> Experiment:
    """The `dvc exp run --queue` command line of one (checked) pair with its `-S` flags."""
    name = experiment_name(task, dataset)
    return Experiment(
        task, dataset, name, ("dvc", "exp", "run", "--queue", "-n", name, *flags, TARGET)
    )


def command_line(experiment: Experiment) -> str:
    """The experiment's command, shell-quoted, ready to paste."""
    return shlex.join(experiment.argv)


def find_dvc() -> str:
    """The `dvc` executable: on PATH, or else beside this Python (an unactivated venv)."""
    found = shutil.which("dvc") or shutil.which("dvc", path=str(Path(sys.executable).parent))
    if found is None:
        raise DmcError("--queue needs the dvc command, found neither on PATH nor beside Python")
    return found


def queue(experiments: Sequence[Experiment], runner: Runner) -> None:
    """Run each experiment's command in order, printing progress; stop at the first failure.

    Raises:
        DmcError: a command failed (its exit status and stderr, and what was queued before it).
    """
    for number, experiment in enumerate(experiments, start=1):
        print(f"[{number}/{len(experiments)}] queueing {experiment.name}", flush=True)
        done = runner(experiment.argv)
        if done.returncode != 0:
            before = ", ".join(e.name for e in experiments[: number - 1]) or "none"
            raise DmcError(
                f"{experiment.name}: dvc exp run exited with status {done.returncode} "
                f"(queued before it: {before}): {(done.stderr or '').strip()}"
            )


def _dvc_runner(dvc: str) -> Runner:
    """A runner that runs a command line with `dvc` resolved to its executable."""

    def run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([dvc, *argv[1:]], capture_output=True, text=True, check=False)

    return run


def _run(args: argparse.Namespace) -> None:
    """The command: plan and check every pair, then print the commands or queue them."""
    if not args.tasks or not args.datasets:
        raise DmcError("name at least one task and one dataset: --tasks ... --datasets ...")
    settings = parse_task_profiles(args.profile or (), args.tasks)
    for task, values in parse_task_settings(args.set or (), args.tasks).items():
        settings.setdefault(task, []).extend(values)
    experiments = plan(
        read_params(args.params or "params.yaml"), args.tasks, args.datasets, settings
    )
    if args.queue:
        queue(experiments, _dvc_runner(find_dvc()))
        print(f"queued {len(experiments)} experiment(s); next: {' && '.join(NEXT_STEPS)}")
        return
    for experiment in experiments:
        print(command_line(experiment))
    print(f"# then: {' && '.join(NEXT_STEPS)}")


SWEEP_COMMAND = Command(
    name=NAME,
    summary="One DVC experiment per (task, dataset): print its dvc exp run command, or queue it.",
    args=(
        Arg("--tasks", "the tasks (registered task names)", many=True),
        Arg("--datasets", "the datasets, by the names the params give them", many=True),
        Arg("--params", "the params file the flags are derived from (default: params.yaml)", False),
        Arg("--set", "TASK:KEY=VALUE: one more -S for TASK's experiments only", False, many=True),
        Arg(
            "--profile",
            "TASK:PATH: a profile's values as -S flags of TASK's experiments (before its --set)",
            False,
            many=True,
        ),
        Arg("--queue", "run the `dvc exp run --queue` commands, not print them", switch=True),
    ),
    run=_run,
)
