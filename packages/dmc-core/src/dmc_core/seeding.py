"""Seeding: one call per stage, plus explicit generators where sampling must be reproducible."""

from __future__ import annotations

import base64
import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

__all__ = [
    "rng_state_from_text",
    "rng_state_to_text",
    "seed_everything",
    "seeded_initialisation",
    "torch_generator",
]


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch global state and return a NumPy generator for the stage.

    Library code should take the returned generator (or a `torch_generator`) as an argument
    rather than draw from global state; seeding the globals only protects third-party code.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def torch_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """Return a `torch.Generator` on `device` seeded with `seed`."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


@contextlib.contextmanager
def seeded_initialisation(seed: int) -> Iterator[None]:
    """Inside the block, torch's CPU random state starts from `seed`; afterwards it is restored.

    For layers built by code that draws their initial weights from the global state (torch's
    own `nn` modules, peft's adapters): build them on the CPU in the block, then move them.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def rng_state_to_text(state: torch.Tensor) -> str:
    """A random generator's state (`get_state()`, a uint8 tensor) as JSON-ready text, so a
    snapshot's record can carry it and a resumed run continue the same random stream."""
    return base64.b64encode(state.cpu().numpy().tobytes()).decode("ascii")


def rng_state_from_text(text: str) -> torch.Tensor:
    """The state `rng_state_to_text` wrote, for `set_state` / `torch.set_rng_state`."""
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()
