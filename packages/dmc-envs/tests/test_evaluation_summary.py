"""The results contract: summary rows gathered from the evaluate stages' files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from dmc_core.errors import DmcError
from dmc_envs.evaluation.config import SummarizeConfig
from dmc_envs.evaluation.summarize import CONTRACT_KEYS, collect_results, summarize


def row(run: str, selection: str, n: int, score: float) -> dict:
    values = dict.fromkeys(CONTRACT_KEYS, 0.0)
    values |= {
        "task": "nav1d",
        "dataset": "full",
        "model": run,
        "formulation": "ddpm",
        "stage": "foundation",
        "run": run,
        "selection": selection,
        "n_candidates": n,
        "normalized_score": score,
    }
    return values


def write(directory: Path, run: str, rows: list[dict], sweep: list[dict]) -> None:
    (directory / run).mkdir(parents=True)
    (directory / run / "results.json").write_text(json.dumps({"rows": rows, "sweep": sweep}))


def test_summary_is_a_sorted_list_of_every_runs_rows(tmp_path: Path) -> None:
    results = tmp_path / "evaluate"
    write(results, "policy", [row("policy", "q_argmax", 8, 70.0)], [])
    sweep = [row("diffuser", "q_argmax", n, 50.0 + n) for n in (1, 2)]
    write(results, "diffuser", [row("diffuser", "none", 1, 40.0)], sweep)
    args = argparse.Namespace(
        results=str(results),
        out=str(tmp_path / "summary.json"),
        headline=str(tmp_path / "headline.json"),
        plots=str(tmp_path / "plots"),
        training=str(tmp_path / "models"),
    )
    live = tmp_path / "models" / "diffuser" / "live" / "plots" / "metrics" / "train"
    live.mkdir(parents=True)
    (live / "loss.tsv").write_text("step\tloss\n10\t0.9\n20\t0.5\n")
    summarize(SummarizeConfig(), args)
    rows = json.loads((tmp_path / "summary.json").read_text())
    assert [(r["model"], r["selection"]) for r in rows] == [
        ("diffuser", "none"),
        ("policy", "q_argmax"),
    ]
    headline = json.loads((tmp_path / "headline.json").read_text())
    assert headline["policy"]["q_argmax@8"]["normalized_score"] == 70.0
    assert (tmp_path / "plots" / "candidates.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "learning_curves.png").stat().st_size > 1000


def test_a_row_without_the_contract_keys_names_the_file(tmp_path: Path) -> None:
    broken = row("diffuser", "none", 1, 1.0)
    del broken["coherency"]
    write(tmp_path, "diffuser", [broken], [])
    with pytest.raises(DmcError, match=r"diffuser/results.json.*coherency"):
        collect_results(tmp_path)


def test_no_results_at_all_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DmcError, match="no evaluation results"):
        collect_results(tmp_path)
