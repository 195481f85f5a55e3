"""Atomic writes: a killed or failing writer never leaves a partial file at the destination."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dmc_core.atomic import TEMP_MARKER, atomic_path, atomic_write_text


def test_write_replaces_the_destination_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]


def test_temporary_keeps_the_suffix_and_lives_beside_the_destination(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "plot.png") as tmp:
        assert tmp.parent == tmp_path
        assert tmp.suffix == ".png"
        assert TEMP_MARKER in tmp.name
        tmp.write_bytes(b"x")


def test_failure_inside_the_block_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer crashed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


WRITER = """
import sys, time
from dmc_core.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    with open(tmp, "wb") as handle:
        handle.write(b"x" * 1000)
        handle.flush()
        print("writing", flush=True)
        time.sleep(60)
        handle.write(b"y" * 1000)
"""


def test_a_writer_killed_mid_write_leaves_no_destination_file(tmp_path: Path) -> None:
    target = tmp_path / "artifact.bin"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(0.05)
    assert not target.exists()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and TEMP_MARKER in leftovers[0]
