"""The training loop's guarantees: whole curves after a resume, whole-run timing, no divergence
saved, and a weights file that does not depend on wall time."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from dmc_core.data import TransitionDataset
from dmc_core.errors import DivergenceError
from dmc_core.models import ModelSpec, TrainSpec
from dmc_core.pretrain import TrainingRun
from dmc_core.testing import toy_dataset
from dmc_core.training import World
from dmc_core.training.curves import Curves

CPU_WORLD = World(rank=0, size=1, device=torch.device("cpu"))


def spec(**train: object) -> ModelSpec:
    # checkpoint_every is not a multiple of log_every: a resume lands inside a log window.
    settings = {"steps": 24, "batch_size": 8, "checkpoint_every": 7, "log_every": 3, **train}
    return ModelSpec(
        kind="diffuser",
        horizon=4,
        backbone={"name": "mlp", "hidden": 16, "blocks": 1},
        train=TrainSpec(**settings),  # type: ignore[arg-type]
    )


@pytest.fixture
def data() -> TransitionDataset:
    return toy_dataset(episodes=6, horizon=8)


def run(out: Path, data: TransitionDataset, **train: object) -> TrainingRun:
    return TrainingRun(spec(**train), data, out, CPU_WORLD, seed=3, name="m")


def files(out: Path) -> dict[str, bytes]:
    """Every file a stage output holds that a later stage may read (not timing.json)."""
    found = {}
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.name != "timing.json":
            found[str(path.relative_to(out))] = path.read_bytes()
    return found


def test_a_run_resumed_after_its_curves_were_deleted_ends_byte_identical(
    tmp_path: Path, data: TransitionDataset, one_thread: None
) -> None:
    """Catches: a resume that loses the curve rows before the snapshot (dvc repro -f deletes
    live/), repeats rows after it, averages a short window after the resume, or records wall
    time in a file a later stage depends on."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run(whole, data).train()
    assert run(parts, data).train(stop_after=10) is None  # killed after the snapshot at 7...
    shutil.rmtree(parts / "live")  # ...and DVC deletes the outputs before the rerun
    run(parts, data).train()
    assert files(parts) == files(whole)
    loss = (parts / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in loss[1:]] == [str(s) for s in range(3, 25, 3)]


def test_a_resumed_run_times_the_whole_run(
    tmp_path: Path, data: TransitionDataset, one_thread: None
) -> None:
    """Catches: timing that covers only the part after the resume."""
    run(tmp_path, data).train(stop_after=14)
    run(tmp_path, data).train()
    timing = json.loads((tmp_path / "timing.json").read_text())
    assert timing["steps"] == 24 and timing["resumed_at"] == [14]
    assert timing["seconds"] > 0


def test_a_diverging_run_stops_naming_the_step_and_saves_nothing(
    tmp_path: Path, data: TransitionDataset, one_thread: None
) -> None:
    """Catches: a NaN model written with exit status 0 (lr 1e6 used to be saved silently)."""
    with pytest.raises(DivergenceError, match=r"^pretrain m: step \d+: non-finite") as caught:
        run(tmp_path, data, lr=1e6, grad_clip=0.0).train()
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "model.safetensors").exists()
    snapshot = tmp_path / ".resume" / "state.safetensors"
    if snapshot.exists():  # a snapshot taken before the divergence holds only finite numbers
        from safetensors.torch import load_file

        assert all(bool(t.isfinite().all()) for t in load_file(snapshot).values())


def test_a_non_finite_loss_with_finite_weights_is_named(
    tmp_path: Path, data: TransitionDataset, one_thread: None
) -> None:
    """Catches: a loss check that only looks at the weights."""
    trainer = run(tmp_path, data)
    trainer.step = lambda step, generators: {"loss": float("inf")}  # type: ignore[method-assign]
    with pytest.raises(DivergenceError, match="pretrain m: step 1: the loss is inf"):
        trainer.train()


def test_curves_replace_a_relogged_step_and_write_no_nan_into_json(tmp_path: Path) -> None:
    """Catches: duplicated rows when a step is logged twice; NaN literals in metrics.json."""
    curves = Curves(tmp_path / "live")
    curves.log(1, {"a/x": 1.0})
    curves.log(2, {"a/x": 2.0})
    curves.log(2, {"a/x": float("nan")})
    curves.write_summary()
    rows = (tmp_path / "live" / "plots" / "metrics" / "a" / "x.tsv").read_text().splitlines()
    assert rows == ["step\tx", "1\t1.0", "2\tnan"]
    assert json.loads((tmp_path / "live" / "metrics.json").read_text()) == {
        "a": {"x": None},
        "step": 2,
    }
    again = Curves(tmp_path / "live", curves.state())
    assert again.rows == curves.rows
