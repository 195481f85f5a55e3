"""The shared stage command line: verbs, params loading, one-line errors and exit codes."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest

from dmc_core.cli import Arg, Stage, run_cli
from dmc_core.config import BaseConfig, knob
from dmc_core.errors import DatasetError
from dmc_core.testing import run_module


@dataclass(frozen=True)
class EchoConfig:
    base: BaseConfig = knob(factory=BaseConfig)
    times: int = knob(1, ge=1)


def echo(config: EchoConfig, args: argparse.Namespace) -> None:
    if args.out == "bad":
        raise DatasetError("bad: broken input")
    Path(args.out).write_text(f"{config.base.seed} {config.times}")


STAGES = (Stage("echo", "write the config", EchoConfig, (Arg("--out", "output file"),), echo),)


def test_stage_runs_with_params_and_overrides(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("base: {seed: 5}\necho: {times: 2}\n")
    out = tmp_path / "o.txt"
    argv = ["echo", "--out", str(out), "--params", str(params), "--set", "echo.times=3"]
    assert run_cli("prog", STAGES, argv) == 0
    assert out.read_text() == "5 3"


def test_input_errors_are_one_line_on_stderr_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("echo: {times: 0}\n")
    assert run_cli("prog", STAGES, ["echo", "--out", "x", "--params", str(params)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "prog echo: error:" in err and "echo.times: 0 is out of range" in err
    params.write_text("echo: {}\n")
    assert run_cli("prog", STAGES, ["echo", "--out", "bad", "--params", str(params)]) == 2
    assert "bad: broken input" in capsys.readouterr().err


def test_bugs_keep_their_traceback(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("echo: {}\n")
    with pytest.raises(FileNotFoundError):
        run_cli(
            "prog", STAGES, ["echo", "--out", str(tmp_path / "no" / "dir"), "--params", str(params)]
        )


def test_package_entry_point_without_verb_exits_2() -> None:
    result = run_module("dmc_core")
    assert result.returncode == 2
    assert "choose a stage verb" in result.stderr
