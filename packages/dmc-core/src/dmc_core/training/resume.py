"""Resumable training: a periodic snapshot of everything a run needs to continue where it was.

A snapshot holds the model's weights, the EMA shadow and the optimiser state in one safetensors
file, with the step reached and a fingerprint of what is being trained in the file's own header:
one file written by one atomic rename, so a run killed at any instant leaves either the previous
snapshot or the new one, never a mismatched pair. A run that finds a snapshot with its own
fingerprint continues from it; a snapshot from other settings (another config or dataset) is
ignored and replaced, so a changed `params.yaml` never continues a stale run. A finished run
removes its snapshot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from dmc_core.atomic import atomic_path
from dmc_core.training.ema import EMA

__all__ = ["Snapshot", "fingerprint"]

log = logging.getLogger(__name__)
_FILE = "state.safetensors"


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-serialisable parts (config, dataset digest, ...)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Snapshot:
    """The resumable state of one training run, kept in `directory`."""

    directory: Path
    fingerprint: str

    @property
    def path(self) -> Path:
        """The snapshot's weights file."""
        return self.directory / _FILE

    def save(
        self,
        step: int,
        model: nn.Module,
        ema: EMA | None,
        optimizer: torch.optim.Optimizer,
        record: Mapping[str, Any] | None = None,
    ) -> None:
        """Write the state reached after `step` optimiser steps (one atomic file); `record`
        (JSON: learning curves, elapsed time, counters) travels in the same file's header."""
        self.directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
        tensors |= {f"ema/{k}": v for k, v in ema.shadow.items()} if ema is not None else {}
        tensors |= _flatten_optimizer(optimizer)
        header = {
            "step": str(step),
            "ema_updates": str(ema.updates if ema is not None else 0),
            "fingerprint": self.fingerprint,
            "record": json.dumps(dict(record or {})),
        }
        plain = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
        with atomic_path(self.path) as tmp:
            save_file(plain, str(tmp), metadata=header)

    def restore(self, model: nn.Module, ema: EMA | None, optimizer: torch.optim.Optimizer) -> int:
        """Load a matching snapshot into the objects and return its step (0: none to resume)."""
        found = self._read()
        if found is None:
            return 0
        header, tensors = found
        model.load_state_dict(_prefixed(tensors, "model/"))
        if ema is not None:
            device = next(iter(ema.shadow.values())).device
            ema.shadow = {k: v.to(device) for k, v in _prefixed(tensors, "ema/").items()}
            ema.updates = int(header["ema_updates"])
        _load_optimizer(optimizer, _prefixed(tensors, "optim/"))
        return int(header["step"])

    def record(self) -> dict[str, Any]:
        """The JSON record saved with a matching snapshot ({} when there is none)."""
        found = self._read(tensors=False)
        return json.loads(found[0].get("record", "{}")) if found is not None else {}

    def _read(self, tensors: bool = True) -> tuple[dict[str, str], dict[str, Tensor]] | None:
        """The header and tensors of a readable snapshot with this fingerprint, else None."""
        if not self.path.exists():
            return None
        try:
            with safe_open(str(self.path), framework="pt") as handle:
                header = handle.metadata() or {}
                names = list(handle.keys()) if tensors else []
                found = {name: handle.get_tensor(name) for name in names}
        except (SafetensorError, OSError) as err:
            log.warning("ignoring an unreadable training snapshot %s: %s", self.path, err)
            return None
        if header.get("fingerprint") != self.fingerprint:
            log.info("a training snapshot from other settings is in %s; starting afresh", self.path)
            return None
        return header, found

    def clear(self) -> None:
        """Remove the snapshot (the run finished)."""
        shutil.rmtree(self.directory, ignore_errors=True)


def _prefixed(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
    # The hyperparameters are rebuilt from the config; only the per-parameter state is saved.
    flat: dict[str, Tensor] = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            flat[f"optim/{index}/{key}"] = torch.as_tensor(value)
    return flat


def _load_optimizer(optimizer: torch.optim.Optimizer, flat: dict[str, Tensor]) -> None:
    state: dict[int, dict[str, Tensor]] = {}
    for name, value in flat.items():
        index, key = name.split("/", 1)
        state.setdefault(int(index), {})[key] = value
    groups = optimizer.state_dict()["param_groups"]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
