"""Fault injection: SIGKILL `dvc repro` at random moments, rerun, and check nothing was lost.

Run from the repository root, in the environment that runs the pipeline:

    .venv/bin/python benchmarks/fault_injection.py                  # 10 kills, seed 0
    .venv/bin/python benchmarks/fault_injection.py --kills 20 --seed 3 --work /tmp/faults

It copies the repository twice into `--work` (without data, caches or virtualenvs) and applies
the smoke profile to both, lengthened by `--scale` (training steps, snapshot intervals and pass
updates multiplied, so that kills land inside training stages and not only between them). Then:

1. `reference`: one uninterrupted `dvc repro`; its wall time T sets the kill clock.
2. `killed`: `dvc repro` started again and again, each time SIGKILLed (the `dvc` process only,
   as a closed terminal or a CI timeout would) after a random delay in [1, 1.2 T / kills] seconds,
   until `--kills` kills have landed; after each kill it records the stage that was running,
   how long its process took to end, and counts those still alive after 15 s (orphans). A last
   `dvc repro` runs to the end.
3. Checks: `dvc status` of `killed` is clean, its `summary.json` equals the reference's, and so
   does every output hash in `dvc.lock`.

It prints a Markdown table of the kills and the checks, and exits 1 if a check fails. Not part
of the test suite: it takes several minutes (`nox -s faults` runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "packages" / "dmc-core" / "src"))
from dmc_core.profile import apply_profile  # noqa: E402

COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv*", ".nox", "data", "cache", "tmp", "__pycache__", "*.egg-info", ".*_cache"
)
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10, help="kills to land (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    parser.add_argument("--scale", type=int, default=10, help="lengthen training this much")
    parser.add_argument("--work", type=Path, default=Path("/tmp/dmc-faults"), help="scratch")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    reference, killed = (prepare(args.work / name, args.scale) for name in ("reference", "killed"))

    began = time.perf_counter()
    repro(reference)
    clock = time.perf_counter() - began
    print(f"uninterrupted dvc repro: {clock:.1f} s", flush=True)

    rng = random.Random(args.seed)
    kills = kill_repeatedly(killed, args.kills, clock, rng)
    began = time.perf_counter()
    repro(killed)
    print(f"last dvc repro, to the end: {time.perf_counter() - began:.1f} s", flush=True)
    return report(kills, checks(reference, killed))


def prepare(work: Path, scale: int) -> Path:
    """A copy of the repository on the smoke profile, training lengthened by `scale`."""
    shutil.copytree(ROOT, work, ignore=COPY_IGNORE)
    (work / "data").mkdir()
    apply_profile(work / "params.yaml", work / "pipelines" / "profiles" / "smoke.yaml")
    lengthen(work / "params.yaml", scale)
    dvc(work, "config", "--local", "core.no_scm", "true")
    return work


def lengthen(params_file: Path, scale: int) -> None:
    """Multiply the smoke profile's training steps, snapshot intervals and pass updates by
    `scale`."""
    params = yaml.safe_load(params_file.read_text())
    sections = [params["pretrain"]["models"], params["fit_critic"]["critics"]]
    for train in (entry["train"] for section in sections for entry in section.values()):
        for key in ("steps", "checkpoint_every", "log_every"):
            train[key] = train.get(key, 1) * scale
    for spec in params["align"]["passes"].values():
        spec["max_steps"] = spec.get("max_steps", 3) * scale
        spec["snapshot_every"] = max(2, scale // 2)
        # The smoke models are barely trained: a longer pass on them may roll back often, and
        # one that gave up would stop both runs; giving up is not what is tested here.
        spec["collapse"] = {**spec.get("collapse", {}), "max_rollbacks": 10 * scale}
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))


def dvc(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["dvc", *args], cwd=work, env=ENV, capture_output=True, text=True)


def repro(work: Path) -> None:
    result = dvc(work, "repro")
    if result.returncode != 0:
        raise SystemExit(f"dvc repro failed in {work}:\n{result.stdout}\n{result.stderr}")


def kill_repeatedly(
    work: Path, count: int, clock: float, rng: random.Random
) -> list[dict[str, Any]]:
    """Start `dvc repro`, SIGKILL it after a random delay; until `count` kills have landed."""
    kills: list[dict[str, Any]] = []
    log = work / "repro.log"
    while len(kills) < count:
        delay = rng.uniform(1.0, max(2.0, 1.2 * clock / count))
        with log.open("w") as out:
            process = subprocess.Popen(
                ["dvc", "repro"], cwd=work, env=ENV, stdout=out, stderr=subprocess.STDOUT
            )
            try:
                process.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait()
            else:
                print(f"dvc repro ended before its kill at {delay:.1f} s", flush=True)
                break
        lingered = wait_for_stages_to_end(work, seconds=15.0)
        text = log.read_text()
        stages = re.findall(r"Running stage '([^']+)'", text)
        kills.append(
            {
                "delay": delay,
                "stage": stages[-1] if stages else "(before any stage)",
                "orphans": len(stage_processes(work)),
                "lingered": lingered,
                "resumed": re.findall(
                    r"resuming (?:the pass )?from (?:the|its) snapshot at \w+ (\d+)", text
                ),
            }
        )
        print(f"kill {len(kills)}: {kills[-1]}", flush=True)
        for pid in stage_processes(work):  # never let an orphan spoil the next run
            os.kill(pid, signal.SIGKILL)
    return kills


def wait_for_stages_to_end(work: Path, seconds: float) -> float:
    """Seconds until no stage process of `work` is left (at most `seconds`). A stage killed
    while still importing notices its parent is gone when it reaches the CLI, before it
    writes anything."""
    began = time.perf_counter()
    while stage_processes(work) and time.perf_counter() - began < seconds:
        time.sleep(0.1)
    return time.perf_counter() - began


def stage_processes(work: Path) -> list[int]:
    """Processes started by DVC for a stage of `work` (DVC_ROOT in their environment)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"DVC_ROOT={work}".encode() in environ and b"DVC_STAGE=" in b"\0".join(environ):
            found.append(int(proc.name))
    return found


def checks(reference: Path, killed: Path) -> dict[str, bool]:
    status = json.loads(dvc(killed, "status", "--json").stdout or "{}")
    summaries = [(w / "data" / "metrics" / "summary.json").read_text() for w in (reference, killed)]
    locks = [outputs(w / "dvc.lock") for w in (reference, killed)]
    differing = sorted(
        k for k in locks[0].keys() | locks[1].keys() if locks[0].get(k) != locks[1].get(k)
    )
    if differing:
        print("outputs that differ:", ", ".join(differing), flush=True)
    return {
        "dvc status clean": status == {},
        "summary.json equal": summaries[0] == summaries[1],
        f"all {len(locks[0])} output hashes in dvc.lock equal": not differing,
    }


def outputs(lock_file: Path) -> dict[str, str]:
    """Every output path in a dvc.lock with its hash."""
    lock = yaml.safe_load(lock_file.read_text())
    return {
        out["path"]: out.get("md5", "")
        for stage in lock["stages"].values()
        for out in stage.get("outs", [])
    }


def report(kills: list[dict[str, Any]], results: dict[str, bool]) -> int:
    print("\n| kill | after (s) | stage running | stage gone after (s) | orphans | resumed at |")
    print("|---:|---:|---|---:|---:|---|")
    for number, kill in enumerate(kills, 1):
        resumed = ", ".join(kill["resumed"]) or "-"
        print(
            f"| {number} | {kill['delay']:.1f} | {kill['stage']} | {kill['lingered']:.1f} | "
            f"{kill['orphans']} | {resumed} |"
        )
    print("\n| check | result |\n|---|---|")
    for name, passed in results.items():
        print(f"| {name} | {'yes' if passed else 'NO'} |")
    return 0 if all(results.values()) and not any(k["orphans"] for k in kills) else 1


if __name__ == "__main__":
    raise SystemExit(main())
