"""Baselines through the stages: `fit_policy` outputs are evaluated into rows of their own.

On a small Nav1D dataset of the noisy optimal behaviour, `make_dataset`, `fit_critic`,
`fit_policy` (behaviour cloning and IQL's policy) and `evaluate` run through their command lines
as DVC runs them. Each baseline's run gives one row (stage `baseline`, rule `none`, the policy's
mean action) that beats uniform random actions rolled out from the same starts, `summarize`
gathers the rows, and `report` gives the baselines columns of their own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from dmc_core.checkpoint import checkpoint_metadata
from dmc_core.cli import run_cli
from dmc_core.data import read_dataset
from dmc_core.models import ModelSpec, build_model, save_model
from dmc_core.testing import torch_threads
from dmc_critic.stages import STAGES as CRITIC_STAGES
from dmc_envs.evaluation import EvalProtocol, RandomProposer
from dmc_envs.evaluation.evaluate import Bench, evaluate_proposer
from dmc_envs.report import Sources, render_report
from dmc_envs.stages import STAGES

TRAIN = {"batch_size": 128, "lr": 0.001, "checkpoint_every": 400, "log_every": 100}
POLICY = {"dataset": "pro", "critic": "pro", "hidden": 64, "fourier_frequencies": 2}
RUN = {"dataset": "pro", "critic": "pro", "stage": "baseline"}
PARAMS: dict[str, Any] = {
    "base": {"seed": 0},
    "make_dataset": {
        "nav1d": {"horizon": 8},
        "datasets": {"pro": {"behaviour": "noisy_optimal", "episodes": 200, "seed": 6}},
        "optimum_grid_per_step": 10,
        "plot_trajectories": 2,
    },
    "fit_critic": {
        "critics": {"pro": {"dataset": "pro", "hidden": 64, "train": {"steps": 400, **TRAIN}}}
    },
    "fit_policy": {
        "policies": {
            "bc": {"kind": "bc", **POLICY, "train": {"steps": 400, **TRAIN}},
            "iql": {"kind": "awr", **POLICY, "train": {"steps": 400, **TRAIN}},
        }
    },
    "evaluate": {
        "protocol": {"plot_trajectories": 2, "entropy_candidates": 4},
        "runs": {
            "bc": {"model": "bc", "label": "BC", **RUN},
            "iql": {"model": "iql", "label": "IQL", **RUN},
            "not_a_baseline": {"model": "bc", **RUN, "stage": "foundation"},
        },
    },
    "summarize": {},
}


def stage(work: Path, prog: str, verb: str, name: str, *paths: str) -> int:
    """Run one stage instance in `work` as dvc.yaml's command line does."""
    stages = CRITIC_STAGES if prog == "dmc_critic" else STAGES
    argv = [verb, "--name", name, *paths, "--params", str(work / "params.yaml")]
    return run_cli(prog, stages, argv)


def evaluate(work: Path, run: str, model: str) -> int:
    return stage(
        work, "dmc_envs", "evaluate", run,
        "--model", str(work / "models" / model / "model.safetensors"),
        "--dataset", str(work / "pro.hdf5"),
        "--critic", str(work / "critic" / "critic.safetensors"),
        "--out", str(work / "evaluate" / run), "--plots", str(work / "plots" / run),
    )  # fmt: skip


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace where the dataset, the critic, both baselines and their evaluations exist."""
    work = tmp_path_factory.mktemp("baselines")
    (work / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    dataset, critic = str(work / "pro.hdf5"), str(work / "critic" / "critic.safetensors")
    with torch_threads(1):
        plot = str(work / "pro.png")
        assert stage(work, "dmc_envs", "make_dataset", "pro", "--out", dataset, "--plot", plot) == 0
        out = ["--dataset", dataset, "--out", str(work / "critic")]
        assert stage(work, "dmc_critic", "fit_critic", "pro", *out) == 0
        for name in ("bc", "iql"):
            out = ["--dataset", dataset, "--critic", critic, "--out", str(work / "models" / name)]
            assert stage(work, "dmc_critic", "fit_policy", name, *out) == 0
            assert evaluate(work, name, name) == 0
    return work


def rows(work: Path, run: str) -> list[dict[str, Any]]:
    return json.loads((work / "evaluate" / run / "results.json").read_text())["rows"]


def test_each_baseline_gives_one_row_of_its_mean_action(work: Path) -> None:
    ranking = checkpoint_metadata(work / "critic" / "critic.safetensors")["spearman_returns_to_go"]
    assert -1.0 <= ranking <= 1.0
    for run, label, kind in (("bc", "BC", "bc"), ("iql", "IQL", "awr")):
        (row,) = rows(work, run)
        assert (row["model"], row["kind"], row["stage"]) == (label, kind, "baseline")
        assert (row["selection"], row["n_candidates"], row["formulation"]) == (
            "none",
            1,
            "gaussian",
        )
        assert row["episodes"] == EvalProtocol().policy.episodes  # the protocol of policies
        assert row["candidate_entropy"] == 0.0  # every candidate is the mean action
        assert row["coherency"] is not None and row["coherency"] > 0.0  # behaviour density
        assert row["protocol"]["denoising_steps"] == 0
        assert row["critic_ranking"] == ranking  # the critic's own record, carried into the row
        assert json.loads((work / "evaluate" / run / "candidates.json").read_text()) == []
        episodes = json.loads((work / "evaluate" / run / "episodes.json").read_text())
        (outcomes,) = episodes["rollouts"].values()
        assert episodes["run"] == run and list(episodes["rollouts"]) == ["none@1"]
        assert len(outcomes["returns"]) == len(outcomes["lengths"]) == row["episodes"]
        assert np.mean(outcomes["returns"]) == pytest.approx(row["return_mean"])
        assert np.std(outcomes["returns"]) == pytest.approx(row["return_std"])


def test_both_baselines_beat_random_actions_from_the_same_starts(work: Path) -> None:
    bench = Bench.from_dataset(read_dataset(work / "pro.hdf5"), "pro", "policy", EvalProtocol())
    episodes = EvalProtocol().policy.episodes
    result, _ = evaluate_proposer(
        bench, RandomProposer(), None, "none", 1, episodes, EvalProtocol()
    )
    random = float(bench.task.returns.normalized(result.returns.mean()))
    scores = {run: rows(work, run)[0]["normalized_score"] for run in ("bc", "iql")}
    print(f"normalised score: random {random:.1f}, {scores}")
    assert all(score > random + 30.0 for score in scores.values()), (random, scores)


def test_summarize_and_report_give_the_baselines_columns_of_their_own(work: Path) -> None:
    summary, headline = work / "summary.json", work / "headline.json"
    argv = ["summarize", "--results", str(work / "evaluate"), "--training", str(work / "models")]
    argv += ["--out", str(summary), "--headline", str(headline), "--plots", str(work / "sum")]
    argv += ["--params", str(work / "params.yaml")]
    assert run_cli("dmc_envs", STAGES, argv) == 0
    table = render_report(Sources({"s": json.loads(summary.read_text())}))
    header = next(line for line in table.splitlines() if line.startswith("| task"))
    assert header == "| task | dataset | BC one sample | IQL one sample |"
    assert "Baselines (stage `baseline`): one score" in table
    assert (work / "sum" / "learning_curves.png").exists()  # the policies' loss curves


def test_a_policy_run_must_say_baseline_and_only_a_policy_run_may(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert evaluate(work, "not_a_baseline", "bc") == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "evaluate.runs.not_a_baseline.stage: " in line
    assert line.endswith("is a fit_policy output: set 'baseline'")
    spec = ModelSpec(kind="diffusion_policy", horizon=2, backbone={"name": "mlp", "hidden": 8})  # type: ignore[arg-type]
    model = work / "models" / "diffusion" / "model.safetensors"
    save_model(model, build_model(spec, read_dataset(work / "pro.hdf5")))
    assert evaluate(work, "bc", "diffusion") == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith(f"evaluate.runs.bc.stage: 'baseline' is for fit_policy outputs: {model}")
