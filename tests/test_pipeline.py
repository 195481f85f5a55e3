"""End to end: `dvc repro` on the smoke profile in a temporary copy of the repository.

The pipeline is reproduced once per module (`reproduced`). A test that reads its outputs takes
`pristine`, that copy, and must leave it as it found it; a test that edits params takes `workdir`,
a private up-to-date copy of it, and re-runs only what the edit invalidates. So every test passes
alone and in any order.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from support import ROOT

from dmc_core.data import read_dataset
from dmc_core.models import load_model
from dmc_core.models.cascade import load_cascade
from dmc_core.profile import apply_profile
from dmc_core.seeding import torch_generator

pytestmark = pytest.mark.slow

DATASETS = ("partial", "full", "expert")
MODELS = ("diffuser", "policy")  # the recipe's foundations, each with an `aligned` run
PRETRAIN = {f"pretrain@{name}" for name in (*MODELS, "bdm")}
PASSES = {
    "diffuser": ("diffuser_sft",),
    "policy": ("policy_sft", "policy_qvpg"),
    "bdm": ("bdm_eda", "bdm_eda_preference"),  # EDA: both variants after the BDM
}
ALIGN = {f"align@{p}" for passes in PASSES.values() for p in passes}
RUNS = {name: {name, *PASSES[name]} for name in MODELS}  # the last pass's rows: also `aligned`
RUNS["bdm"] = {"bdm", *PASSES["bdm"]}
#: evaluate run -> the `stage` of its rows (the Diffuser's cascades, one and two passes)
CASCADE_RUNS = {
    "diffuser_cascade": "cascade",
    "diffuser_aligned_cascade": "cascade_aligned",
    "diffuser_aligned_cascade_x2": "cascade_aligned_x2",
    "diffuser_aligned_cascade_sft": "cascade_aligned_sft",  # the cascade, aligned by a pass
}
CASCADE_PASS = "diffuser_sft_cascade_sft"  # SFT of the aligned Diffuser's cascade (added here)
CASCADES = {"fit_cascade@diffuser_cascade", "fit_cascade@diffuser_sft_cascade"}
CASCADES |= {f"align@{CASCADE_PASS}"}
EVALUATE = {f"evaluate@{run}" for runs in RUNS.values() for run in runs} | {"summarize"}
EVALUATE |= {f"evaluate@{run}" for run in CASCADE_RUNS}
DOWNSTREAM = PRETRAIN | {"fit_critic@full"} | ALIGN | CASCADES | EVALUATE
CONTRACT_KEYS = {
    "task",
    "dataset",
    "model",
    "formulation",
    "stage",
    "selection",
    "n_candidates",
    "episodes",
    "return_mean",
    "return_std",
    "normalized_score",
    "coherency",
    "candidate_entropy",
}
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv*", ".nox", "data", "cache", "tmp", "__pycache__", "*.egg-info", ".*_cache"
)


def dvc(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `dvc <args>` in `workdir` with this interpreter's environment first on the PATH."""
    # `dvc` and the stages' `python -m dmc_*` then resolve to the environment running the tests,
    # activated or not.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": path}
    result = subprocess.run(
        ["dvc", *args], cwd=workdir, capture_output=True, text=True, check=False, env=env
    )
    if check and result.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def ran_stages(output: str) -> set[str]:
    """The stages a `dvc repro` output says it ran (not those it skipped or restored)."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def stale_stages(workdir: Path) -> set[str]:
    """The stages `dvc status` reports as changed (their own dependencies or parameters)."""
    return set(json.loads(dvc(workdir, "status", "--json").stdout))


def set_param(workdir: Path, dotted: str, value: object) -> None:
    """Set one `params.yaml` key (a dotted path) in `workdir`, as a user's edit would."""
    path = workdir / "params.yaml"
    params = yaml.safe_load(path.read_text())
    *parents, leaf = dotted.split(".")
    node = params
    for key in parents:
        node = node[key]
    node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def fingerprint(workdir: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of the pipeline's definition, lock, parameters and outputs."""
    files = [workdir / name for name in ("dvc.yaml", "dvc.lock", "params.yaml")]
    files += [p for p in (workdir / "data").rglob("*") if p.is_file()]
    return {
        str(p.relative_to(workdir)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in files
        if p.exists()
    }


@dataclass(frozen=True)
class Reproduced:
    """The smoke pipeline reproduced once: its working copy, its first run, its state after."""

    path: Path
    ran: frozenset[str]  # the stages the first `dvc repro` ran
    state: dict[str, tuple[int, int]]  # its `fingerprint`, which no test may change


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> Reproduced:
    """`dvc repro` of the smoke profile, once, in a copy of the repository."""
    work = tmp_path_factory.mktemp("pristine") / "dmc"
    shutil.copytree(ROOT, work, ignore=COPY_IGNORE)
    (work / "data").mkdir()
    apply_profile(work / "params.yaml", work / "pipelines" / "profiles" / "smoke.yaml")
    add_a_pass_on_the_aligned_cascade(work)
    dvc(work, "config", "--local", "core.no_scm", "true")
    first = dvc(work, "repro")
    return Reproduced(work, frozenset(ran_stages(first.stdout)), fingerprint(work))


@pytest.fixture
def pristine(reproduced: Reproduced) -> Iterator[Path]:
    """The reproduced repository, for a test that only reads it (checked when the test ends)."""
    yield reproduced.path
    assert fingerprint(reproduced.path) == reproduced.state, "the test changed the pristine copy"


def _tree_only(directory: str, names: list[str]) -> list[str]:
    """`shutil.copytree` filter: DVC's cache (linked apart) and its locks and hash index."""
    return ["cache", "tmp"] if Path(directory).name == ".dvc" else []


@pytest.fixture
def workdir(reproduced: Reproduced, tmp_path: Path) -> Iterator[Path]:
    """A private copy of the reproduced repository, up to date, for one test to edit and re-run.

    The working tree is copied; the DVC cache, whose files DVC never rewrites, is hard-linked into a
    cache of the copy's own, so the copy re-runs only what its edit invalidates and what it adds
    (outputs, run-cache entries) is seen by no other test.
    """
    work = tmp_path / "dmc"
    shutil.copytree(reproduced.path, work, ignore=_tree_only)
    cache = reproduced.path / ".dvc" / "cache"
    shutil.copytree(cache, work / ".dvc" / "cache", copy_function=os.link)
    yield work
    assert fingerprint(reproduced.path) == reproduced.state, "the test changed the pristine copy"


def add_a_pass_on_the_aligned_cascade(work: Path) -> None:
    """A user's recipe entry (README, "Cascading"): SFT of a fit_cascade output, evaluated."""
    set_param(
        work,
        f"align.passes.{CASCADE_PASS}",
        {
            "model": "diffuser_sft_cascade",
            "after": "diffuser_sft_cascade",
            "method": "sft",
            "dataset": "full",
            "critic": "full",
            "max_steps": 3,
            "conditions": 8,
            "held_out": 8,
            "eval_every": 2,
            "sft": {
                "candidates": 2,
                "keep_fraction": 0.5,
                "generator": "current",
                "batch_size": 8,
                "updates_per_batch": 2,
            },
            "dynamics_weight": 0.5,
        },
    )
    set_param(
        work,
        "evaluate.runs.diffuser_aligned_cascade_sft",
        {
            "model": CASCADE_PASS,
            "label": "diffuser",
            "dataset": "full",
            "critic": "full",
            "stage": "cascade_aligned_sft",
            "cascade_passes": 1,
            "sweep": False,
            "rules": ["none"],
        },
    )


def test_repro_makes_the_three_datasets_their_stats_and_pictures(
    reproduced: Reproduced, pristine: Path
) -> None:
    datasets = {f"make_dataset@{name}" for name in DATASETS}
    assert reproduced.ran == {"check_params"} | datasets | DOWNSTREAM
    for name in DATASETS:
        data = read_dataset(pristine / "data" / "datasets" / "nav1d" / f"{name}.hdf5")
        assert data.attrs["dataset_kind"] == name
        assert data.num_episodes == {"partial": 50, "full": 100, "expert": 50}[name]
        assert data.observations.shape[1] == 2 and len(data) == 8 * data.num_episodes
        png = pristine / "data" / "plots" / f"nav1d_{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        stats = json.loads(
            (pristine / "data" / "datasets" / "nav1d" / f"{name}.stats.json").read_text()
        )
        assert stats["ref_min_score"] < stats["ref_max_score"]
        resolved = yaml.safe_load(
            (pristine / "data" / "datasets" / "nav1d" / f"{name}.config.yaml").read_text()
        )
        assert resolved["make_dataset"]["nav1d"]["horizon"] == 8
    expert = json.loads((pristine / "data/datasets/nav1d/expert.stats.json").read_text())
    full = json.loads((pristine / "data/datasets/nav1d/full.stats.json").read_text())
    assert expert["normalized_score"] > 80 > 20 > full["normalized_score"]


def sample_actions(workdir: Path, name: str) -> torch.Tensor:
    model = load_model(workdir / "data" / "models" / name / "model.safetensors")
    history = torch.zeros(3, model.history_len, model.obs_dim)
    return model.act(history, torch_generator(0))


def test_repro_trains_the_foundation_models_with_learning_curves(pristine: Path) -> None:
    for name, kind in zip(MODELS, ("diffuser", "diffusion_policy"), strict=True):
        model = load_model(pristine / "data" / "models" / name / "model.safetensors")
        assert model.kind == kind and model.spec.dataset == "full"
        assert sample_actions(pristine, name).shape == (3, 1, 1)
        live = pristine / "data" / "models" / name / "live"
        assert json.loads((live / "metrics.json").read_text())["train"]["loss"] > 0
        assert (live / "plots" / "metrics" / "train" / "loss.tsv").is_file()
        assert not (pristine / "data" / "models" / name / ".resume").exists()
    shown = dvc(pristine, "metrics", "show", "--json").stdout
    assert "data/models/diffuser/live/metrics.json" in shown


def test_repro_fits_the_critic_with_a_learning_curve(pristine: Path) -> None:
    critic = pristine / "data" / "critics" / "full"
    sidecar = yaml.safe_load((critic / "critic.yaml").read_text())
    assert sidecar["config"]["spec"]["dataset"] == "full"
    assert sidecar["metadata"]["steps"] == 40
    assert (critic / "live" / "plots" / "metrics" / "train" / "q_loss.tsv").is_file()


def test_repro_evaluates_every_model_into_the_results_contract(pristine: Path) -> None:
    rows = json.loads((pristine / "data" / "metrics" / "summary.json").read_text())
    assert isinstance(rows, list)
    seen = {(r["model"], r["selection"], r["n_candidates"]) for r in rows}
    policy_rows = {(rule, n) for rule, n in (("none", 1), ("q_argmax", 2))}
    assert seen == {("diffuser", "none", 1), ("diffuser", "q_argmax", 4)} | {
        (policy, *row) for policy in ("policy", "bdm") for row in policy_rows
    }
    stages = {(r["model"], r["stage"]) for r in rows}
    passes = {(m, p) for m, names in PASSES.items() for p in names}
    cascades = {("diffuser", stage) for stage in CASCADE_RUNS.values()}
    aligned = {(m, s) for m in MODELS for s in ("foundation", "aligned")}
    assert stages == aligned | {("bdm", "foundation")} | passes | cascades
    # the recipe's end: the last pass's rows once more, not a second evaluation
    last = {"diffuser": "diffuser_sft", "policy": "policy_qvpg"}
    for row in (r for r in rows if r["stage"] == "aligned"):
        assert row["same_as"] == last[row["model"]] and row["run"] == f"{row['model']}_aligned"
    headline = json.loads((pristine / "data" / "metrics" / "headline.json").read_text())
    assert {"diffuser_aligned", "policy_aligned"} <= set(headline)
    for row in rows:
        assert set(row) >= CONTRACT_KEYS
        assert row["task"] == "nav1d" and row["dataset"] == "full"
        assert row["formulation"] == "ddpm"
        assert row["episodes"] == 4 and row["protocol"]["episodes"] == 4
        assert row["coherency"] >= 0.0 and 0.0 <= row["candidate_entropy"] <= 2.0
    plots = pristine / "data" / "plots"
    for name in MODELS:
        for picture in ("none.png", "q_argmax.png", "candidates.png"):
            assert (plots / "evaluate" / name / picture).read_bytes()[:4] == b"\x89PNG"
        curve = json.loads(
            (pristine / "data" / "metrics" / "evaluate" / name / "candidates.json").read_text()
        )
        assert {(p["rule"], p["n_candidates"]) for p in curve} == {("q_argmax", 1), ("q_argmax", 2)}
    assert (plots / "summary" / "learning_curves.png").is_file()
    shown = json.loads(dvc(pristine, "metrics", "show", "--json").stdout)
    assert "diffuser" in json.dumps(shown) and "headline.json" in json.dumps(shown)


def test_repro_aligns_every_pass_and_records_its_schedule(pristine: Path) -> None:
    for name, passes in PASSES.items():
        for key in passes:
            directory = pristine / "data" / "models" / key
            record = json.loads((directory / "metrics.json").read_text())
            assert record["pass"] == key and record["foundation"] == name
            assert record["stop_reason"] in {"max_steps", "converged", "gave_up"}
            assert isinstance(record["events"], list)
            assert (directory / "adapter.safetensors").is_file()
            model = load_model(directory / "model.safetensors")
            assert (
                model.kind
                == load_model(pristine / "data" / "models" / name / "model.safetensors").kind
            )
            assert (directory / "live" / "plots" / "metrics" / "align" / "objective.tsv").is_file()
    assert (pristine / "data" / "plots" / "summary" / "alignment_curves.png").is_file()


def test_repro_aligns_a_cascade_into_a_cascade_that_refines_the_same_model(
    pristine: Path,
) -> None:
    models = pristine / "data" / "models"
    record = json.loads((models / CASCADE_PASS / "metrics.json").read_text())
    assert record["foundation"] == "diffuser_sft_cascade" and record["method"] == "sft"
    aligned = load_cascade(models / CASCADE_PASS / "model.safetensors")
    fitted = load_cascade(models / "diffuser_sft_cascade" / "model.safetensors")
    assert aligned.source is not None and fitted.source is not None
    for (name, a), b in zip(
        aligned.source.state_dict().items(), fitted.source.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    changed = [
        not torch.equal(a, b)
        for a, b in zip(
            aligned.refiner.state_dict().values(), fitted.refiner.state_dict().values(), strict=True
        )
    ]
    assert any(changed) or record["best_step"] == 0


def test_editing_a_later_pass_reruns_only_that_pass_onward(workdir: Path) -> None:
    set_param(workdir, "align.passes.policy_qvpg.qvpg.bc_weight", 0.2)
    ran = ran_stages(dvc(workdir, "repro").stdout)
    assert ran == {
        "check_params",  # it reads align.passes; its output does not change
        "align@policy_qvpg",
        "evaluate@policy_qvpg",
        "summarize",
    }


def test_a_byte_identical_retrain_leaves_every_later_stage_up_to_date(workdir: Path) -> None:
    """Catches: wall time (or anything else that varies between identical runs) in a file a
    later stage depends on: the retrained model would re-run the whole chain after it."""
    weights = workdir / "data" / "models" / "policy" / "model.safetensors"
    before = weights.read_bytes()
    ran = ran_stages(dvc(workdir, "repro", "--force", "--single-item", "pretrain@policy").stdout)
    assert ran == {"pretrain@policy"} and weights.read_bytes() == before
    assert stale_stages(workdir) == set()


def test_a_critic_of_the_policys_own_episodes_runs_after_the_policy(workdir: Path) -> None:
    """Catches: a `roll_out` dataset that DVC does not run after the model that plays it, and a
    critic of it that check_params or the evaluation refuses as learned from another dataset
    than the policy's (README, "PushT")."""
    entry = {"model": "policy", "dataset": "full", "episodes": 6, "batch": 4}
    set_param(workdir, "roll_out.datasets", {"full-policy": entry})
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    critic = params["fit_critic"]["critics"]["full"] | {"dataset": "full-policy"}
    set_param(workdir, "fit_critic.critics.own", critic)
    set_param(workdir, "evaluate.runs.policy.critic", "own")
    ran = ran_stages(dvc(workdir, "repro").stdout)
    assert ran == {
        "check_params",
        "roll_out@full-policy",
        "fit_critic@own",
        "evaluate@policy",
        "summarize",
    }
    full = read_dataset(workdir / "data" / "datasets" / "nav1d" / "full.hdf5")
    extended = read_dataset(workdir / "data" / "datasets" / "nav1d" / "full-policy.hdf5")
    assert extended.attrs["extends"] == "full"
    assert extended.num_episodes == full.num_episodes + 6
    sidecar = workdir / "data" / "critics" / "own" / "critic.yaml"
    assert yaml.safe_load(sidecar.read_text())["metadata"]["dataset_extends"] == "full"


def test_second_repro_does_nothing(workdir: Path) -> None:
    again = dvc(workdir, "repro")
    assert ran_stages(again.stdout) == set()
    assert "up to date" in again.stdout


def test_editing_a_dataset_knob_reruns_only_that_dataset(workdir: Path) -> None:
    set_param(workdir, "make_dataset.datasets.expert.noise_std", 0.3)
    assert ran_stages(dvc(workdir, "repro").stdout) == {"check_params", "make_dataset@expert"}


@pytest.mark.parametrize(
    ("model", "formulation"), [("diffuser", "ddim"), ("diffuser", "sm"), ("policy", "fm")]
)
def test_switching_the_formulation_retrains_only_that_model(
    workdir: Path, model: str, formulation: str
) -> None:
    set_param(workdir, f"pretrain.models.{model}.formulation.name", formulation)
    ran = ran_stages(dvc(workdir, "repro").stdout)
    aligned = {f"align@{p}" for p in PASSES[model]}
    evaluated = {f"evaluate@{run}" for run in RUNS[model]}
    if model == "diffuser":  # its cascades refine the Diffuser's plans
        evaluated |= CASCADES | {f"evaluate@{run}" for run in CASCADE_RUNS}
    assert ran == {"check_params", f"pretrain@{model}", *aligned, *evaluated, "summarize"}
    rows = json.loads((workdir / "data" / "metrics" / "summary.json").read_text())
    assert {r["formulation"] for r in rows if r["model"] == model} == {formulation}
    loaded = load_model(workdir / "data" / "models" / model / "model.safetensors")
    assert loaded.spec.formulation.name == formulation
    assert torch.isfinite(sample_actions(workdir, model)).all()


def test_editing_a_nav1d_parameter_invalidates_every_dataset_and_all_that_reads_them(
    workdir: Path,
) -> None:
    # What DVC would re-run, read from `dvc status` (a full re-run costs as much as the first).
    set_param(workdir, "make_dataset.nav1d.step_size", 0.25)
    datasets = {f"make_dataset@{n}" for n in DATASETS}
    assert stale_stages(workdir) == datasets
    dvc(workdir, "repro", "--single-item", "make_dataset@full")
    data = read_dataset(workdir / "data" / "datasets" / "nav1d" / "full.hdf5")
    assert data.attrs["env_kwargs"]["step_size"] == 0.25
    # every stage that reads the new dataset is now stale (summarize reads only their outputs)
    assert stale_stages(workdir) == datasets - {"make_dataset@full"} | DOWNSTREAM - {"summarize"}


def test_a_wrong_params_key_stops_the_stage_with_one_line(workdir: Path) -> None:
    set_param(workdir, "make_dataset.nav1d.horizon", 0)
    failed = dvc(workdir, "repro", check=False)
    assert failed.returncode != 0
    line = "make_dataset.nav1d.horizon: 0 is out of range: must be >= 1"
    assert line in failed.stderr + failed.stdout
    assert "Traceback" not in failed.stderr + failed.stdout
