"""Contracts between dvc.yaml, params.yaml, the packages' CLI verbs and their schemas."""

from __future__ import annotations

import ast
import copy
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from dvc.repo import Repo
from support import MODULES, PACKAGE_DIRS, ROOT, cli_stages

from dmc_core.check_params import CHECKED, REFERENCES, broken_references
from dmc_core.cli import build_parser, run_cli
from dmc_core.config import BASE_SECTION, load_stage_config, read_params
from dmc_core.profile import apply_profile
from dmc_core.stages import STAGES

#: Entries for the sections the default params leave empty (an empty `foreach` defines no stage).
EXAMPLE_ENTRIES = {
    "import_dataset": {
        "datasets": {"users": {"format": "d4rl", "path": "raw/users.hdf5", "task": "nav1d"}}
    },
    "train_behaviour": {"agents": {"hopper": {"medium_level": 44.3}}},
    "behaviour_datasets": {"tasks": {"hopper": {"agents": "data/behaviour/hopper"}}},
    "fit_policy": {"policies": {"bc": {"kind": "bc", "dataset": "full", "critic": "full"}}},
    "roll_out": {"datasets": {"full-policy": {"model": "policy", "dataset": "full"}}},
}


@pytest.fixture(scope="module")
def dvc_stages(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    """Every stage of the default pipeline, with one entry in each section left empty."""
    root = tmp_path_factory.mktemp("pipeline")
    params = read_params(ROOT / "params.yaml")
    for section, values in EXAMPLE_ENTRIES.items():
        params[section] = {**params[section], **values}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    Repo.init(str(root), no_scm=True)
    with Repo(str(root)) as repo:
        return list(repo.index.stages)


def verb_of(stage_name: str) -> str:
    return stage_name.split("@", 1)[0]


def test_stages_sections_and_verbs_are_one_set(
    dvc_stages: list[Any], params: dict[str, Any]
) -> None:
    stage_names = {verb_of(s.name) for s in dvc_stages}
    sections = set(params) - {BASE_SECTION}
    assert stage_names == sections == set(cli_stages())


def test_every_section_validates_against_its_schema() -> None:
    for verb, (_, stage) in cli_stages().items():
        config = load_stage_config(stage.schema, verb, ROOT / "params.yaml")
        assert config.base is not None


PROFILES = ROOT / "pipelines" / "profiles"
#: Profiles that apply on top of others (in this order), and the stacks users apply.
BASES = {
    "locomotion-smoke": ["locomotion"],
    "d4rl-data": ["locomotion"],
    "d4rl-data-paper": ["locomotion", "d4rl-data"],
    "d4rl-medium": ["locomotion", "d4rl-data"],
    "locomotion-baselines": ["locomotion"],
    "locomotion-eda": ["locomotion"],
    "metaworld-sweep-into": ["metaworld"],
}
STACKS = [
    ["locomotion", "paper"],
    ["locomotion", "d4rl-data", "d4rl-data-paper", "paper"],
    ["locomotion", "d4rl-data", "locomotion-baselines", "locomotion-eda"],
    ["metaworld", "paper"],
    ["pusht", "paper"],
]


@pytest.mark.parametrize(
    "stack",
    [[*BASES.get(p.stem, []), p.stem] for p in sorted(PROFILES.glob("*.yaml"))] + STACKS,
    ids="+".join,
)
def test_every_profile_applies_validates_and_wires(stack: list[str], tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    for profile in stack:
        apply_profile(params, PROFILES / f"{profile}.yaml")
    for verb, (_, stage) in cli_stages().items():
        load_stage_config(stage.schema, verb, params)
    assert list(broken_references(read_params(params))) == []
    (tmp_path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    Repo.init(str(tmp_path), no_scm=True)
    with Repo(str(tmp_path)) as repo:
        assert_every_data_input_is_made(list(repo.index.stages))


def test_the_default_pipeline_wires(dvc_stages: list[Any]) -> None:
    assert_every_data_input_is_made(dvc_stages)


def assert_every_data_input_is_made(stages: list[Any]) -> None:
    """Every `data/` dependency of a stage is an output of a stage, inside one, or a folder of
    outputs: a model, critic or pass a stage names but nothing trains would stop `dvc repro`
    half-way."""
    made = [str(out.def_path) for stage in stages for out in stage.outs]
    for stage in stages:
        for dep in stage.deps:
            path = str(dep.def_path)
            if path.startswith("data/") and not hasattr(dep, "params"):
                assert any(_nested(path, out) for out in made), (stage.name, path)


def _nested(a: str, b: str) -> bool:
    """Whether one of two repository paths is the other or inside it."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def test_every_command_is_its_packages_verb_with_known_flags(dvc_stages: list[Any]) -> None:
    stages = cli_stages()
    for dvc_stage in dvc_stages:
        words = shlex.split(dvc_stage.cmd)
        verb = verb_of(dvc_stage.name)
        module, stage = stages[verb]
        assert words[:4] == ["python", "-m", module, verb], dvc_stage.cmd
        # The stage's own parser must accept the command's flags (exits on unknown flags).
        build_parser(module, [stage]).parse_args(words[3:])


def tracked_params(dvc_stage: Any) -> list[str]:
    return [key for dep in dvc_stage.deps if hasattr(dep, "params") for key in dep.params]


#: Stages whose entries are tasks, made whatever the pipeline's task is.
TASK_KEYED = {"train_behaviour", "behaviour_datasets"}


def test_every_stage_tracks_base_and_only_its_own_section(dvc_stages: list[Any]) -> None:
    for dvc_stage in dvc_stages:
        verb = verb_of(dvc_stage.name)
        if verb == "check_params":
            continue  # it reads the other sections' entries: see the next test
        keys = tracked_params(dvc_stage)
        # A stage per task (its entry's key names the task, its seed is in the entry) reads no
        # `base`: switching the pipeline's task must not re-run another task's agent.
        assert (BASE_SECTION in keys) != (verb in TASK_KEYED), dvc_stage.name
        for key in keys:
            assert key == BASE_SECTION or key.split(".")[0] == verb, (dvc_stage.name, key)


def test_check_params_tracks_the_entries_references_name_and_every_stage_follows_it(
    dvc_stages: list[Any],
) -> None:
    (check,) = [s for s in dvc_stages if s.name == "check_params"]
    read = {r.entries for r in REFERENCES} | {t for r in REFERENCES for t in r.targets}
    assert set(tracked_params(check)) == {BASE_SECTION, "check_params"} | read
    (mark,) = [str(out.def_path) for out in check.outs]
    for dvc_stage in dvc_stages:
        if dvc_stage is not check:
            assert mark in {str(dep.def_path) for dep in dvc_stage.deps}, dvc_stage.name


def test_every_entry_name_dvc_yaml_turns_into_a_data_path_is_checked(root: Path) -> None:
    """Each `${item.<field>}` in a `data/` dependency of a `foreach` stage is a reference that
    `check_params` checks (otherwise a misspelt name reaches DVC as a missing file)."""
    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())
    checked = {(r.entries, r.field) for r in REFERENCES}
    for name, stage in pipeline["stages"].items():
        if "foreach" not in stage:
            continue
        entries = stage["foreach"].removeprefix("${").removesuffix("}")
        for dep in stage["do"]["deps"]:
            if dep.startswith("data/"):
                for field in re.findall(r"\$\{item\.(\w+)\}", dep):
                    assert (entries, field) in checked, (name, dep)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("align.passes.policy_qvpg.after", "polcy_sft"),
        ("align.passes.policy_sft.model", "polcy"),
        ("align.passes.policy_sft.critic", "ful"),
        ("align.passes.policy_sft.dataset", "fulll"),
        ("pretrain.models.diffuser.dataset", "expret"),
        ("fit_critic.critics.full.dataset", "everything"),
        ("fit_cascade.cascades.diffuser_cascade.foundation", "difuser"),
        ("evaluate.runs.policy.model", "policy_ppo"),
    ],
)
def test_check_params_names_a_reference_that_names_nothing(
    params: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, value: str
) -> None:
    changed = copy.deepcopy(params)
    _set(changed, key, value)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(changed))
    out = tmp_path / "c.json"
    assert run_check(path, out) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"dmc_core check_params: error: {path}: {key}: {value!r} names no entry")
    assert not out.exists()


@pytest.mark.parametrize(
    ("changes", "key", "problem"),
    [
        (
            {"align.passes.policy_sft.dataset": "expert"},
            "align.passes.policy_sft.model",
            "'policy' learned from 'full' (pretrain.models.policy.dataset), this entry's "
            "dataset is 'expert'",
        ),
        (
            {"fit_critic.critics.full.dataset": "expert"},
            "align.passes.bdm_eda.critic",  # the first pass (the file's keys are sorted)
            "'full' learned from 'expert' (fit_critic.critics.full.dataset), this entry's "
            "dataset is 'full'",
        ),
        (
            {"evaluate.runs.policy.dataset": "expert"},
            "evaluate.runs.policy.model",
            "'policy' learned from 'full' (pretrain.models.policy.dataset), this entry's "
            "dataset is 'expert'",
        ),
        (
            {"fit_cascade.cascades.diffuser_cascade.dataset": "expert"},
            "fit_cascade.cascades.diffuser_cascade.model",
            "'diffuser' learned from 'full' (pretrain.models.diffuser.dataset), this entry's "
            "dataset is 'expert'",
        ),
    ],
)
def test_check_params_names_a_model_or_critic_that_learned_from_another_dataset(
    params: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    changes: dict[str, Any],
    key: str,
    problem: str,
) -> None:
    """Catches: a pass, cascade or policy whose inputs learned from different datasets passing
    the check, so the stage refuses them only after everything before it has trained."""
    changed = copy.deepcopy(params)
    for dotted, value in changes.items():
        _set(changed, dotted, value)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(changed))
    assert run_check(path, tmp_path / "c.json") == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert f"{key}: {problem}" in line, line


@pytest.mark.parametrize(
    ("changes", "key", "problem"),
    [
        # the critic every model shares scores two actions; the policies execute one
        ({"fit_critic.critics.full.action_chunk": 2}, "align.passes.bdm_eda.critic",
         "'full' scores chunks of 2 actions (fit_critic.critics.full.action_chunk); a sample of "
         "'bdm' (bdm) holds 1 in its executed chunk"),
        # a critic of the Diffuser's whole plan, used by its pass, runs and cascades: accepted
        ({"fit_critic.critics.plan.action_chunk": 8, "align.passes.diffuser_sft.critic": "plan",
          "evaluate.runs.diffuser.critic": "plan", "evaluate.runs.diffuser_sft.critic": "plan",
          "evaluate.runs.diffuser_aligned_cascade.critic": "plan"}, None, None),
        # one step longer than the plan, on a run of a cascade whose refiner is a pass of it
        ({"fit_critic.critics.plan.action_chunk": 9,
          "evaluate.runs.diffuser_aligned_cascade.critic": "plan"},
         "evaluate.runs.diffuser_aligned_cascade.critic",
         "'plan' scores chunks of 9 actions (fit_critic.critics.plan.action_chunk); a sample of "
         "'diffuser_sft_cascade' (diffuser) holds 8 in its plan"),
    ],
)  # fmt: skip
def test_check_params_names_a_critic_of_longer_chunks_than_the_models_samples(
    params: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    changes: dict[str, Any],
    key: str | None,
    problem: str | None,
) -> None:
    """Catches: a four-action critic shared with a policy that executes two passing the check,
    so that the policy's pass fails in its first round, after the critic and the other model's
    pass have trained (README, "sweep"); and a rule that refuses a critic of a planner's plan,
    or loses the model behind a pass or a cascade."""
    changed = copy.deepcopy(params)
    changed["fit_critic"]["critics"]["plan"] = dict(changed["fit_critic"]["critics"]["full"])
    for dotted, value in changes.items():
        _set(changed, dotted, value)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(changed))
    if key is None:
        assert run_check(path, tmp_path / "c.json") == 0
        return
    assert run_check(path, tmp_path / "c.json") == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert f"{key}: {problem}" in line, line


def test_check_params_accepts_a_pass_on_a_cascade(params: dict[str, Any], tmp_path: Path) -> None:
    """Catches: a table that lets a pass align only foundations (README, "Cascading")."""
    changed = copy.deepcopy(params)
    cascade = next(iter(changed["fit_cascade"]["cascades"]))
    entry = {**changed["align"]["passes"]["policy_sft"], "model": cascade, "after": cascade}
    changed["align"]["passes"]["on_the_cascade"] = entry
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(changed))
    assert run_check(path, tmp_path / "c.json") == 0


@pytest.mark.parametrize(
    ("entry", "critic_dataset", "key", "problem"),
    [
        ({}, "full-policy", None, None),
        ({"model": "polic"}, "full-policy", "roll_out.datasets.full-policy.model", "'polic' names"),
        ({"dataset": "expert"}, "full-policy", "roll_out.datasets.full-policy.model", "'policy' "
         "learned from 'full' (pretrain.models.policy.dataset), this entry's dataset is 'expert'"),
        ({}, "fulll-policy", "fit_critic.critics.full.dataset", "'fulll-policy' names no entry"),
        ({"pass": "full-policy"}, "full-policy", None, None),
    ],
)  # fmt: skip
def test_check_params_lets_a_critic_learn_from_a_dataset_extended_by_rollouts(
    params: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    entry: dict[str, str],
    critic_dataset: str,
    key: str | None,
    problem: str | None,
) -> None:
    """Catches: a critic of `full` + the policy's episodes, or a pass conditioned on them,
    refused where the models of `full` use them, and a roll_out entry whose model learned from
    another dataset (the stage refuses it) or names no model passing the check (README,
    "PushT")."""
    changed = copy.deepcopy(params)
    conditions = entry.pop("pass", None)
    changed["roll_out"]["datasets"] = {
        "full-policy": {"model": "policy", "dataset": "full"} | entry
    }
    changed["fit_critic"]["critics"]["full"]["dataset"] = critic_dataset
    if conditions is not None:  # the pass's conditions: the policy's own states
        changed["align"]["passes"]["policy_sft"]["dataset"] = conditions
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(changed))
    assert run_check(path, tmp_path / "c.json") == (0 if key is None else 2)
    if key is not None:
        assert f"{key}: {problem}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("entry", "key", "problem"),
    [
        ({"critic": "ful"}, "fit_policy.policies.bc.critic", "'ful' names no entry"),
        ({"dataset": "fulll"}, "fit_policy.policies.bc.dataset", "'fulll' names no entry"),
        ({}, "fit_policy.policies.policy", "'policy' is also an entry of pretrain.models"),
    ],
)
def test_check_params_checks_baseline_policies_and_their_folders(
    params: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    entry: dict[str, str],
    key: str,
    problem: str,
) -> None:
    """Catches: a policy naming a missing critic or dataset, and a policy named like a model,
    which would write the same folder data/models/<name>/ (README, "Baselines")."""
    changed = copy.deepcopy(params)
    name = key.split(".")[2]
    policy = {"kind": "bc", "dataset": "full", "critic": "full"} | entry
    changed["fit_policy"]["policies"] = {name: policy}
    changed["evaluate"]["runs"]["bc"] = {"model": name, "stage": "baseline"}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(changed))
    assert run_check(path, tmp_path / "c.json") == 2
    assert f"{key}: {problem}" in capsys.readouterr().err
    changed["fit_policy"]["policies"] = {"bc": {"kind": "bc", "dataset": "full", "critic": "full"}}
    path.write_text(yaml.safe_dump(changed))
    assert run_check(path, tmp_path / "c.json") == 0


def test_check_params_passes_the_default_params_with_constant_output(tmp_path: Path) -> None:
    out = tmp_path / "c.json"
    assert run_check(ROOT / "params.yaml", out) == 0
    assert out.read_text() == CHECKED


def run_check(params: Path, out: Path) -> int:
    return run_cli("dmc_core", STAGES, ["check_params", "--out", str(out), "--params", str(params)])


def declared_siblings(package_dir: Path) -> set[str]:
    meta = tomllib.loads((package_dir / "pyproject.toml").read_text())
    names = {re.split(r"[\s<>=!~;\[]", d, maxsplit=1)[0] for d in meta["project"]["dependencies"]}
    return {n.replace("-", "_") for n in names if n.startswith("dmc-")}


def closure(module: str) -> set[str]:
    direct = {m: declared_siblings(d) for m, d in zip(MODULES, PACKAGE_DIRS, strict=True)}
    seen, todo = set(), [module]
    while todo:
        for dep in direct[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def test_stage_deps_cover_the_code_the_stage_runs(dvc_stages: list[Any]) -> None:
    stages = cli_stages()
    for dvc_stage in dvc_stages:
        module, _ = stages[verb_of(dvc_stage.name)]
        paths = {Path(str(dep.def_path)) for dep in dvc_stage.deps}
        for needed in {module} | closure(module):
            assert Path("packages") / needed.replace("_", "-") / "src" in paths, dvc_stage.name


def imported_siblings(package_dir: Path) -> set[str]:
    found: set[str] = set()
    for path in (package_dir / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found |= {n.split(".")[0] for n in names if n.startswith("dmc_")}
    return found


@pytest.mark.parametrize("package_dir", PACKAGE_DIRS, ids=[p.name for p in PACKAGE_DIRS])
def test_packages_import_only_declared_siblings(package_dir: Path) -> None:
    module = package_dir.name.replace("-", "_")
    undeclared = imported_siblings(package_dir) - {module} - declared_siblings(package_dir)
    assert not undeclared, f"{package_dir.name} imports {undeclared} without declaring them"


def test_packages_are_ours_not_a_namesake_from_an_index() -> None:
    for module in MODULES:
        imported = __import__(module)
        assert Path(imported.__file__).resolve().is_relative_to(ROOT / "packages"), (
            imported.__file__
        )


def test_every_package_has_the_layout(root: Path) -> None:
    for package_dir in PACKAGE_DIRS:
        module = package_dir.name.replace("-", "_")
        for part in ("README.md", "tests", f"src/{module}/py.typed", f"src/{module}/__main__.py"):
            assert (package_dir / part).exists(), f"{package_dir.name}: missing {part}"
    assert (root / ".dvc" / "config").read_text().count("analytics = false") == 1


def _set(params: dict[str, Any], dotted: str, value: Any) -> None:
    """Set the entry at a dotted key (`align.passes.p.after`) in place."""
    *parents, leaf = dotted.split(".")
    node = params
    for part in parents:
        node = node[part]
    node[leaf] = value
