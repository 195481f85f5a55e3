"""Inputs a stage must refuse in one line (exit status 2) through its real command line."""

from __future__ import annotations

from pathlib import Path

import yaml

from dmc_core.models import ModelSpec, build_model, save_model
from dmc_core.testing import poison_checkpoint, run_module, toy_dataset


def test_evaluate_refuses_a_non_finite_model_in_one_line(tmp_path: Path) -> None:
    spec = ModelSpec(kind="diffuser", horizon=4, backbone={"name": "mlp", "hidden": 8, "blocks": 1})  # type: ignore[arg-type]
    model = save_model(tmp_path / "model.safetensors", build_model(spec, toy_dataset()))
    name = poison_checkpoint(model, entries=2)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"base": {"seed": 0}, "evaluate": {"runs": {"m": {}}}}))
    absent = str(tmp_path / "absent")  # the model is refused before these are read
    args = ["--dataset", absent, "--critic", absent, "--out", absent, "--plots", absent]
    done = run_module(
        "dmc_envs", "evaluate", "--name", "m", "--model", str(model), *args, "--params", str(params)
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"dmc_envs evaluate: error: {model}: non-finite weights: '{name}' has 2")
    assert line.endswith("entries NaN or inf")
