"""What every stage does when it starts: remove its outputs' stale temporary files, and tie its
life to the DVC process that started it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dmc_core.atomic import TEMP_MARKER, remove_stale_temporaries

#: A stage: ties itself to DVC, says it is up (its pid), then works for a minute.
STAGE = (
    "import os, time; from dmc_core.lifeline import die_with_dvc; die_with_dvc(); "
    "open({path!r}, 'w').write(str(os.getpid())); time.sleep(60)"
)


def test_stale_temporaries_of_a_folder_output_are_removed_and_nothing_else(tmp_path: Path) -> None:
    """Catches: temporaries left by a killed writer ending up in a directory output (DVC would
    cache them), or a cleanup that removes real files."""
    out = tmp_path / "model"
    (out / "live").mkdir(parents=True)
    stale = [out / f".model{TEMP_MARKER}ab12.safetensors", out / "live" / f".m{TEMP_MARKER}x.json"]
    kept = [out / "model.safetensors", out / "live" / "metrics.json"]
    for path in stale + kept:
        path.write_text("x")
    assert sorted(remove_stale_temporaries(out)) == sorted(stale)
    assert [p.exists() for p in stale + kept] == [False, False, True, True]


def test_stale_temporaries_of_a_file_output_and_its_companions_only(tmp_path: Path) -> None:
    """Catches: a cleanup that misses `full.stats.json`'s temporary beside `full.hdf5`, or
    removes the temporary of another dataset whose name starts alike (`fuller`)."""
    mine = [tmp_path / f".full{TEMP_MARKER}1.hdf5", tmp_path / f".full.stats{TEMP_MARKER}2.json"]
    other = tmp_path / f".fuller{TEMP_MARKER}3.hdf5"
    for path in [*mine, other]:
        path.write_text("x")
    remove_stale_temporaries(tmp_path / "full.hdf5")
    assert not any(p.exists() for p in mine) and other.exists()


def test_a_stage_cli_removes_its_outputs_stale_temporaries(tmp_path: Path) -> None:
    """Catches: a stage that starts without cleaning (the CLI, not only the helper)."""
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".model{TEMP_MARKER}zz.safetensors"
    stale.write_text("x")
    flags = ["--name", "none", "--dataset", "x.hdf5", "--out", str(out)]
    subprocess.run(
        [sys.executable, "-m", "dmc_core", "pretrain", *flags, "--params", str(tmp_path / "no")],
        capture_output=True,
        check=False,
    )
    assert not stale.exists()


@pytest.mark.parametrize("shell", ["/bin/bash", "/bin/sh"])
def test_a_stage_does_not_outlive_the_killed_dvc_that_started_it(
    tmp_path: Path, shell: str
) -> None:
    """Catches: an orphaned stage that keeps writing outputs after `dvc` is killed, whether the
    shell execs the command (bash: the kernel's parent-death signal) or stays between (dash:
    the watcher of the parent chain)."""
    pid_file = tmp_path / "stage.pid"
    parent = subprocess.Popen([sys.executable, "-c", _dvc_stand_in(shell, pid_file)])
    try:
        stage_pid = _wait_for_pid(pid_file)
        parent.kill()
        parent.wait()
        assert _gone_within(stage_pid, seconds=10), "the stage outlived the killed parent"
    finally:
        parent.kill()


@pytest.mark.parametrize("shell", ["/bin/bash", "/bin/sh"])
def test_a_stage_outlives_the_shell_that_started_dvc(tmp_path: Path, shell: str) -> None:
    """Catches: a stage that watches DVC's own parent, so that `nohup dvc repro &` from a shell
    that then exits kills every stage while DVC goes on (DVC then records the stage failed)."""
    pid_file = tmp_path / "stage.pid"
    launcher = (  # starts DVC, and exits once the stage runs
        "import pathlib, subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-c', {_dvc_stand_in(shell, pid_file)!r}]); "
        f"[time.sleep(0.05) for _ in range(200) if not pathlib.Path({str(pid_file)!r}).exists()]"
    )
    subprocess.run([sys.executable, "-c", launcher], check=True, timeout=30)
    stage_pid = _wait_for_pid(pid_file)
    try:
        assert not _gone_within(stage_pid, seconds=3), "the stage stopped while DVC was alive"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stage_pid, signal.SIGKILL)


def _dvc_stand_in(shell: str, pid_file: Path) -> str:
    """Python code that stands for `dvc repro`: it runs the stage through `$SHELL -c` with
    `DVC_STAGE` set for the command only, as DVC does."""
    if not Path(shell).exists() or not Path("/proc").is_dir():
        pytest.skip(f"needs {shell} and /proc")
    command = f"{sys.executable} -c {STAGE.format(path=str(pid_file))!r}"
    return (
        "import os, subprocess; "
        f"subprocess.run([{shell!r}, '-c', {command!r}], "
        "env={**os.environ, 'DVC_STAGE': 'test'})"
    )


def test_outside_dvc_nothing_is_tied() -> None:
    """Catches: a stage run by hand (no DVC) killed when its terminal's shell exits oddly."""
    from dmc_core.lifeline import die_with_dvc

    assert die_with_dvc({}) is False


def _wait_for_pid(path: Path) -> int:
    for _ in range(200):
        if path.exists() and path.read_text():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError("the stage never started")


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie (dead, not yet reaped by init) counts as gone.
        status = Path(f"/proc/{pid}/status")
        if status.exists() and "zombie" in status.read_text():
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return False
