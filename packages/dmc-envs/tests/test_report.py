"""The `report` command: summaries (files, folders, DVC experiments) as the paper-style table."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dmc_core.cli import run_cli
from dmc_envs.report import (
    REPORT_COMMAND,
    Sources,
    _column_title,
    candidate_series,
    experiment_summaries,
    find_files,
    gather,
    pool,
    render_report,
)

REFERENCES = {"hopper": [-20.27, 3234.3, "D4RL"], "nav1d": [-1.0, 1.0, "exact"]}
EPISODES = {"hopper": 16, "nav1d": 64}


def row(
    where: tuple[str, str],
    model: str,
    stage: str,
    rule: str,
    score: float,
    std: float,
    success: float | None = None,
    n: int | None = None,
) -> dict[str, Any]:
    """A contract row of `where` = (task, dataset) with this normalised score and return std
    (the std given in score units, stored in return units as `evaluate` writes it)."""
    task, dataset = where
    low, high, _ = REFERENCES[task]
    extra = {} if success is None else {"success_rate": success}
    return {
        "task": task,
        "dataset": dataset,
        "model": model,
        "formulation": "ddpm",
        "stage": stage,
        "run": f"{model}_{stage}",
        "selection": rule,
        "n_candidates": n or (1 if rule == "none" else 16),
        "episodes": EPISODES[task],
        "return_mean": low + score * (high - low) / 100.0,
        "return_std": std * (high - low) / 100.0,
        "normalized_score": score,
        "coherency": None,
        **extra,
        "candidate_entropy": 1.5,
        "protocol": {"seed": 1000, "score_references": REFERENCES[task]},
    }


HOPPER, NAV1D = ("hopper", "medium"), ("nav1d", "full")
HOPPER_ROWS = [
    row(HOPPER, "policy", "foundation", "none", 40.0, 5.0),
    row(HOPPER, "policy", "aligned", "none", 45.5, 0.8),
    row(HOPPER, "policy", "foundation", "q_argmax", 48.1, 2.2),
    row(HOPPER, "policy", "aligned", "q_argmax", 50.3, 1.9),
    row(HOPPER, "diffuser", "foundation", "none", 52.9, 3.1),
    row(HOPPER, "diffuser", "aligned", "none", 60.2, 2.5),
    row(HOPPER, "diffuser", "foundation", "q_argmax", 70.4, 1.2),  # no aligned q_argmax
    row(HOPPER, "diffuser", "diffuser_sft", "none", 60.2, 2.5),  # a pass: not in the table
]
NAV1D_ROWS = [  # success rates; the policy has no q_argmax row at all
    row(NAV1D, "diffuser", "foundation", "none", 10.0, 20.0, success=0.25),
    row(NAV1D, "diffuser", "aligned", "none", 80.0, 4.0, success=0.9),
    row(NAV1D, "diffuser", "foundation", "q_argmax", 60.0, 6.0, success=0.7),
    row(NAV1D, "diffuser", "aligned", "q_argmax", 90.0, 1.0, success=1.0),
    row(NAV1D, "policy", "foundation", "none", 30.0, 10.0, success=0.4),
    row(NAV1D, "policy", "aligned", "none", 55.0, 5.0, success=0.6),
]

EXPECTED = """\
**Normalised scores, foundation -> aligned**, from 2 summaries \
(`runs/a/data/metrics/summary.json`, `runs/b/data/metrics/summary.json`).

Protocol: evaluation seed 1000; 16, 64 episodes per configuration and run; scores normalised by \
hopper -20.27 / 3234.3 (D4RL), nav1d -1 / 1 (exact).

| task | dataset | Diffuser one sample | Diffuser q_argmax@16 | Policy one sample | \
Policy q_argmax@16 |
|---|---|---|---|---|---|
| hopper | medium | 52.9 ± 3.1 -> 60.2 ± 2.5 | 70.4 ± 1.2 -> – | 40.0 ± 5.0 -> 45.5 ± 0.8 | \
48.1 ± 2.2 -> 50.3 ± 1.9 |
| nav1d | full | 10.0 ± 20.0 [25%] -> 80.0 ± 4.0 [90%] | 60.0 ± 6.0 [70%] -> 90.0 ± 1.0 [100%] | \
30.0 ± 10.0 [40%] -> 55.0 ± 5.0 [60%] | – |

Each cell: normalised score ± the std of the episode returns in score units \
(100 σ_R / (R_high - R_low); no ± where a row records no references), foundation -> aligned; \
[p%]: success rate, where the task defines success; –: not evaluated. One sample: rule `none`; \
`<rule>@<n>`: the rule choosing among n candidates per decision.

Other stages in the summaries, not in the table: diffuser_sft.
"""


def write_json(path: Path, content: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2))
    return path


def two_runs(root: Path) -> None:
    """Two experiment workspaces under `root/runs`, one task each (the second one first)."""
    write_json(root / "runs" / "b" / "data" / "metrics" / "summary.json", NAV1D_ROWS)
    write_json(root / "runs" / "a" / "data" / "metrics" / "summary.json", HOPPER_ROWS)


def report(argv: list[str]) -> int:
    return run_cli("dmc_envs", (), ["report", *argv], commands=(REPORT_COMMAND,))


def test_summaries_in_a_folder_render_the_exact_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    two_runs(tmp_path)
    assert report(["runs", "--out", "report.md"]) == 0, capsys.readouterr().err
    assert (tmp_path / "report.md").read_text() == EXPECTED
    assert "report.md" in capsys.readouterr().out


def test_without_out_the_table_is_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    two_runs(tmp_path)
    files = ["runs/b/data/metrics/summary.json", "runs/a/data/metrics/summary.json"]
    assert report(files) == 0
    assert capsys.readouterr().out == EXPECTED  # sources in order, whatever the order named


def test_folder_discovery_is_sorted_and_skips_hidden_folders(tmp_path: Path) -> None:
    two_runs(tmp_path)
    write_json(tmp_path / "runs" / ".dvc" / "tmp" / "summary.json", {"not": "a summary"})
    write_json(tmp_path / "runs" / "a" / "other.json", HOPPER_ROWS)
    found = find_files(tmp_path / "runs", "summary.json")
    assert found == [
        tmp_path / "runs" / "a" / "data" / "metrics" / "summary.json",
        tmp_path / "runs" / "b" / "data" / "metrics" / "summary.json",
    ]
    sources = gather([str(tmp_path / "runs")])
    assert list(sources.summaries) == [str(p) for p in found]


def test_results_files_in_a_folder_add_their_sweep_to_the_plot(tmp_path: Path) -> None:
    two_runs(tmp_path)
    sweep = [row(HOPPER, "diffuser", "foundation", "q_argmax", 50.0 + n, 1.0, n=n) for n in (1, 4)]
    sweep.append(HOPPER_ROWS[6])  # the summary's own q_argmax@16 row: the same run, once
    evaluated = tmp_path / "runs" / "a" / "data" / "metrics" / "evaluate" / "diffuser"
    write_json(evaluated / "results.json", {"rows": [], "sweep": sweep})
    sources = gather([str(tmp_path / "runs")])
    rows = [r for rows in sources.summaries.values() for r in rows]
    series = candidate_series([*rows, *sources.sweeps])
    hopper = series[HOPPER]
    assert hopper[("diffuser", "foundation", "q_argmax")] == [(1, 51.0), (4, 54.0), (16, 70.4)]
    assert hopper[("diffuser", "aligned", "one sample")] == [(1, 60.2)]
    assert ("diffuser", "diffuser_sft", "one sample") not in series[HOPPER]
    assert len(series[HOPPER]) == 7
    assert sorted(series) == [HOPPER, NAV1D]
    plot = tmp_path / "report.png"
    assert report([str(tmp_path / "runs"), "--plot", str(plot)]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.stat().st_size > 5000


def test_runs_of_one_configuration_pool_their_episodes(tmp_path: Path) -> None:
    first = row(NAV1D, "diffuser", "foundation", "none", 10.0, 2.0, success=0.5)
    second = row(NAV1D, "diffuser", "foundation", "none", 30.0, 2.0, success=1.0)
    second["protocol"] = {"seed": 2000, "score_references": REFERENCES["nav1d"]}
    cells = pool([first, second, dict(first)])  # the first run found twice counts once
    (pooled,) = cells.values()
    assert pooled["episodes"] == 128
    assert pooled["normalized_score"] == pytest.approx(20.0)
    assert pooled["success_rate"] == pytest.approx(0.75)
    # score units: within-run std 2, the two means 10 apart -> sqrt(2^2 + 10^2)
    assert pooled["return_std"] * 50.0 == pytest.approx((2.0**2 + 10.0**2) ** 0.5)
    text = render_report(Sources({"one": [first], "two": [second]}))
    assert "| nav1d | full | 20.0 ± 10.2 [75%] -> – |" in text
    assert "evaluation seed 1000, 2000; 64 episodes" in text
    assert "1 cell side pools the episodes of several runs" in text


def test_a_file_that_is_not_a_summary_is_one_line_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = write_json(tmp_path / "results.json", {"rows": HOPPER_ROWS, "sweep": []})
    assert report([str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("dmc_envs report: error: ")
    assert f"{results}: not a summary (a JSON list of result rows): found a dict" in err


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[{", "not JSON"),
        (json.dumps([{"task": "hopper"}]), "row 1 lacks the contract keys ['dataset'"),
    ],
)
def test_broken_summaries_name_the_file_and_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, problem: str
) -> None:
    path = tmp_path / "summary.json"
    path.write_text(content)
    assert report([str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: {problem}" in err


def test_missing_sources_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report([str(tmp_path / "nowhere")]) == 2
    assert f"{tmp_path / 'nowhere'}: no such file or folder" in capsys.readouterr().err
    assert report([str(tmp_path)]) == 2
    assert f"{tmp_path}: no summary.json in this folder or below" in capsys.readouterr().err
    assert report([]) == 2
    assert "name a summary.json" in capsys.readouterr().err


MAKE_SUMMARY = """\
import json, pathlib, yaml
base = yaml.safe_load(open("params.yaml"))["base"]
out = pathlib.Path("data/metrics/summary.json")
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps([{"task": "hopper", "dataset": base["dataset"], **ROW}]))
"""


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_exps_reads_the_summary_of_every_finished_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("dvc.api")
    for name in ("GIT_AUTHOR", "GIT_COMMITTER"):
        monkeypatch.setenv(f"{name}_NAME", "test")
        monkeypatch.setenv(f"{name}_EMAIL", "test@example.com")
    monkeypatch.chdir(tmp_path)

    def run(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True)

    template = row(HOPPER, "diffuser", "foundation", "none", 1.0, 1.0)
    contract = {k: v for k, v in template.items() if k not in ("task", "dataset")}
    (tmp_path / "make.py").write_text(MAKE_SUMMARY.replace("ROW", repr(contract)))
    (tmp_path / "params.yaml").write_text("base:\n  dataset: random\n")
    (tmp_path / "dvc.yaml").write_text(
        f"stages:\n  summarize:\n    cmd: {sys.executable} make.py\n    deps: [make.py]\n"
        "    params: [base]\n    metrics: [data/metrics/summary.json]\n"
    )
    dvc = (sys.executable, "-m", "dvc")
    run("git", "init", "-q")
    run(*dvc, "init", "-q")
    run(*dvc, "repro", "-q")  # the baseline's summary: what a queued experiment's commit holds
    run("git", "add", "-A")
    run("git", "commit", "-qm", "baseline")
    for dataset in ("medium", "expert"):
        run(*dvc, "exp", "run", "-S", f"base.dataset={dataset}")
    run(*dvc, "exp", "run", "--queue", "-S", "base.dataset=queued")  # never started
    summaries = experiment_summaries()
    assert len(summaries) == 2
    assert all(label.startswith("experiment ") for label in summaries)
    datasets = sorted(rows[0]["dataset"] for rows in summaries.values())
    assert datasets == ["expert", "medium"]


def test_rows_without_protocol_show_the_score_alone() -> None:
    bare = row(HOPPER, "bdm", "aligned", "none", 33.3, 1.0)
    del bare["protocol"]
    text = render_report(Sources({"s": [bare]}))
    assert "Protocol: 16 episodes per configuration and run.\n" in text
    table = "| task | dataset | Bdm one sample |\n|---|---|---|\n| hopper | medium | – -> 33.3 |"
    assert table in text
    passes_only = render_report(Sources({"s": [HOPPER_ROWS[-1]]}))
    assert "No foundation or aligned rows in these summaries." in passes_only
    assert "not in the table: diffuser_sft." in passes_only


def test_baselines_are_columns_of_their_own_with_one_score() -> None:
    """Catches: BC and IQL rows (stage `baseline`) left out of the table, or put in a
    `foundation -> aligned` cell they have no second side for."""
    baselines = [
        row(HOPPER, "BC", "baseline", "none", 35.1, 4.0),
        row(HOPPER, "IQL", "baseline", "none", 47.6, 3.0),
        row(NAV1D, "IQL", "baseline", "none", 88.0, 2.0, success=0.75),
    ]
    text = render_report(Sources({"s": HOPPER_ROWS + baselines}))
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| task"))
    assert header.startswith("| task | dataset | BC one sample | IQL one sample | Diffuser one ")
    hopper = next(line for line in lines if line.startswith("| hopper"))
    assert hopper.startswith("| hopper | medium | 35.1 ± 4.0 | 47.6 ± 3.0 | 52.9 ± 3.1 -> 60.2")
    assert "Baselines (stage `baseline`): one score, the policy's mean action." in text
    assert "not in the table: diffuser_sft." in text  # baseline is a stage of the table
    nav1d = render_report(Sources({"s": NAV1D_ROWS + baselines[2:]}))
    assert "| nav1d | full | 88.0 ± 2.0 [75%] | 10.0 ± 20.0 [25%] -> 80.0 ± 4.0 [90%] |" in nav1d
    series = candidate_series(HOPPER_ROWS + baselines)[HOPPER]
    assert series[("IQL", "baseline", "one sample")] == [(1, 47.6)]


def test_a_column_title_spells_out_a_multi_word_model_and_keeps_acronyms() -> None:
    """Catches: `Decision_diffuser` in the header, or `Iql` for IQL."""
    assert _column_title("decision_diffuser", "q_argmax", 16) == "Decision Diffuser q_argmax@16"
    assert _column_title("IQL", "none", 1) == "IQL one sample"


def test_each_critics_ranking_is_said_once_under_the_protocol() -> None:
    """Catches: the critic's ranking (how far choices by Q can be trusted) left out of the
    report, said once per row instead of once per critic, or invented for rows without it."""
    ranked = [{**r, "critic": "full", "critic_ranking": 0.8123} for r in HOPPER_ROWS] + [
        {**r, "critic": "full", "critic_ranking": None} for r in NAV1D_ROWS
    ]
    text = render_report(Sources({"s": ranked}))
    line = (
        "Critics' ranking of their data (Spearman of Q(s, a) with the returns-to-go, in-sample, "
        "as `fit_critic` recorded it): hopper/medium `full` 0.81.\n\n| task"
    )
    assert line in text
    assert text.count("Critics' ranking") == 1
    assert "Critics' ranking" not in render_report(Sources({"s": HOPPER_ROWS}))


def test_tasks_normalised_alike_share_one_reference_in_the_protocol() -> None:
    """Catches: the references said once per task (MetaWorld's four tasks: four copies of one
    long text), or tasks with different references merged under one."""
    walker = [{**r, "task": "walker2d"} for r in HOPPER_ROWS]
    text = render_report(Sources({"s": HOPPER_ROWS + walker + NAV1D_ROWS}))
    references = "hopper, walker2d -20.27 / 3234.3 (D4RL), nav1d -1 / 1 (exact)."
    assert f"scores normalised by {references}\n" in text
