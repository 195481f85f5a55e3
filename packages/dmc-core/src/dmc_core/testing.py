"""Helpers for the packages' own tests (kept here so that no package copies them)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dmc_core.cli import Stage
from dmc_core.data import ARRAY_KEYS, TransitionDataset

__all__ = [
    "LinearDenoiser",
    "RecordingDenoiser",
    "assert_inpainted",
    "check_entry_point",
    "episode_arrays",
    "poison_checkpoint",
    "run_module",
    "torch_threads",
    "toy_dataset",
]


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with `count` torch threads (one is fastest for tiny tensors and steady on
    a busy machine), restoring the previous number after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_module(
    module: str, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m module args...` with this interpreter and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, check=False, cwd=cwd
    )


def check_entry_point(module: str, stages: Sequence[Stage]) -> None:
    """Assert that `python -m module` lists its stages, and rejects unknown verbs, with status 2."""
    bare = run_module(module)
    assert bare.returncode == 2, bare.stderr
    assert f"stages: {', '.join(s.name for s in stages) or 'none yet'}" in bare.stderr
    unknown = run_module(module, "no_such_stage")
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr, unknown.stderr


def toy_dataset(
    episodes: int = 3, horizon: int = 4, attrs: Mapping[str, Any] | None = None
) -> TransitionDataset:
    """A small valid dataset: 1-D random walks of `episodes` x `horizon` transitions."""
    rng = np.random.default_rng(0)
    states = np.cumsum(rng.uniform(-0.1, 0.1, size=(episodes, horizon + 1)), axis=1)
    actions = rng.uniform(-1, 1, size=(episodes * horizon, 1)).astype(np.float32)
    timeouts = np.zeros((episodes, horizon), dtype=bool)
    timeouts[:, -1] = True
    default_attrs = {"env_id": "toy", "dataset_kind": "toy", "behavior_policy": "random", "seed": 0}
    return TransitionDataset(
        observations=states[:, :-1].reshape(-1, 1).astype(np.float32),
        actions=actions,
        rewards=rng.normal(size=episodes * horizon).astype(np.float32),
        terminals=np.zeros(episodes * horizon, dtype=bool),
        timeouts=timeouts.reshape(-1),
        next_observations=states[:, 1:].reshape(-1, 1).astype(np.float32),
        attrs=dict(attrs if attrs is not None else default_attrs),
    )


class LinearDenoiser:
    """A differentiable network output = w * z_t that logs its time inputs and grad mode.

    For sampler tests: the chain is linear in w, so gradients and means can be replayed by hand.
    """

    def __init__(self, weight: float) -> None:
        self.w = torch.tensor(weight, requires_grad=True)
        self.grad_modes: list[bool] = []
        self.times: list[Tensor] = []

    def __call__(self, z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        self.grad_modes.append(torch.is_grad_enabled())
        self.times.append(t)
        return self.w * z_t


class RecordingDenoiser:
    """A network whose output is always zero, keeping every (z_t, t) it was called with."""

    def __init__(self) -> None:
        self.inputs: list[tuple[Tensor, Tensor]] = []

    def __call__(self, z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        self.inputs.append((z_t, t))
        return torch.zeros_like(z_t)


def assert_inpainted(
    result: Any, mask: Tensor, values: Tensor, densities: slice = slice(None)
) -> None:
    """Assert that a sample holds `values` where `mask` is True at every step, and that the
    log-probabilities of the steps in `densities` count only the free entries.

    Shapes:
        mask (bool), values: the sample's shape (B, D).
    """
    assert torch.equal(result.x0[mask], values[mask])
    assert torch.equal(result.steps[0].z_t[mask], values[mask])
    for step in result.steps:
        assert torch.equal(step.z_prev[mask], values[mask])
    for step in result.steps[densities]:
        elementwise = torch.distributions.Normal(step.mean, step.std).log_prob(step.z_prev)
        assert torch.allclose(step.log_prob, (elementwise * ~mask).sum(1))


def poison_checkpoint(path: str | Path, entries: int = 1) -> str:
    """Set `entries` values of a checkpoint's first floating tensor to NaN, as a diverged run
    written by other code would leave it (`save_checkpoint` refuses to), and re-pair the sidecar's
    SHA-256 so that only the NaN is wrong. Returns the poisoned tensor's name."""
    import yaml
    from safetensors.torch import load_file, save_file

    from dmc_core.checkpoint import file_sha256, sidecar_path

    tensors = load_file(str(path))
    name = next(n for n, t in tensors.items() if t.is_floating_point() and t.numel() >= entries)
    tensors[name].view(-1)[:entries] = float("nan")
    save_file(tensors, str(path))
    sidecar = yaml.safe_load(sidecar_path(path).read_text(encoding="utf-8"))
    sidecar["sha256"] = file_sha256(path)
    sidecar_path(path).write_text(yaml.safe_dump(sidecar, sort_keys=False), encoding="utf-8")
    return name


def episode_arrays(
    episodes: Sequence[tuple[int, str]], obs_dim: int, act_dim: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Random episodes back to back in the dataset layout, each `(length, end)` ending in a
    `"terminal"`, a `"timeout"` or neither (`"open"`); next observations chained in each."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {key: [] for key in ARRAY_KEYS}
    for length, end in episodes:
        states = rng.normal(size=(length + 1, obs_dim)).astype(np.float32)
        parts["observations"].append(states[:-1])
        parts["next_observations"].append(states[1:])
        parts["actions"].append(rng.uniform(-1, 1, size=(length, act_dim)).astype(np.float32))
        parts["rewards"].append(rng.normal(1.0, 0.5, size=length).astype(np.float32))
        for key, kind in (("terminals", "terminal"), ("timeouts", "timeout")):
            flag = np.zeros(length, dtype=bool)
            flag[-1] = end == kind
            parts[key].append(flag)
    return {key: np.concatenate(chunks) for key, chunks in parts.items()}
