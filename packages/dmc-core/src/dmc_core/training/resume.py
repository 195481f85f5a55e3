"""Resumable training: a periodic snapshot of everything a run needs to continue where it was.

A snapshot holds the model's weights, the EMA shadow and the optimiser state in one safetensors
file, with the step reached and a fingerprint of what is being trained in the file's own header:
one file written by one atomic rename, so a run killed at any instant leaves either the previous
snapshot or the new one, never a mismatched pair. A run that finds a snapshot with its own
fingerprint continues from it; a snapshot from other settings (another config or dataset) is
ignored and replaced, so a changed `params.yaml` never continues a stale run. A finished run
removes its snapshot.

A snapshot lives beside the run's output (`<out>/.resume/`) unless the environment variable
`DMC_RESUME_ROOT` names a folder: then every run keeps it in `<root>/<fingerprint>/`. DVC runs a
queued experiment (`dvc exp run --queue`) in a temporary copy of the workspace, and one queued
again after a kill starts in a new copy, where `<out>/.resume/` is empty; a root outside the
workspace keeps the snapshots, and the fingerprint (settings and input bytes) leads the same run
of the new copy to its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from dmc_core.atomic import atomic_path, atomic_write_text
from dmc_core.training.ema import EMA

__all__ = [
    "RESUME_ROOT",
    "Snapshot",
    "fingerprint",
    "keyed_parts_directory",
    "load_optimizer_tensors",
    "optimizer_tensors",
    "prefixed_tensors",
    "unprefixed",
]

log = logging.getLogger(__name__)
_FILE = "state.safetensors"
#: The environment variable naming a folder for every run's snapshots (see the module doc).
RESUME_ROOT = "DMC_RESUME_ROOT"


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-serialisable parts (config, dataset digest, ...)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def resume_directory(beside_output: Path, key: str) -> Path:
    """Where the run keyed by `key` keeps what it resumes from: `beside_output`, or
    `$DMC_RESUME_ROOT/<key>` when that names a folder (see the module doc)."""
    root = os.environ.get(RESUME_ROOT)
    return Path(root) / key if root else beside_output


def keyed_parts_directory(beside_output: Path, key: Mapping[str, Any]) -> Path:
    """The folder (`resume_directory` of `key`'s fingerprint) where a run keeps finished parts
    of its work as separate files, emptied unless they were made under this same `key`, which
    it records in `key.json`: a part made by other settings or inputs is never read back."""
    parts = resume_directory(beside_output, fingerprint(key))
    record = parts / "key.json"
    text = json.dumps(key, sort_keys=True, default=str)
    if record.exists() and record.read_text() != text:
        log.info("%s: kept parts of other settings or inputs; making all again", parts)
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    atomic_write_text(record, text)
    return parts


@dataclass(frozen=True)
class Snapshot:
    """The resumable state of one training run, kept in `directory`."""

    directory: Path
    fingerprint: str

    @classmethod
    def of_output(cls, out: Path, fingerprint: str) -> Snapshot:
        """The snapshot of the run writing `out`: in `<out>/.resume`, or under the resume root."""
        return cls(resume_directory(out / ".resume", fingerprint), fingerprint)

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
        tensors = prefixed_tensors("model/", model.state_dict())
        tensors |= prefixed_tensors("ema/", ema.shadow) if ema is not None else {}
        tensors |= prefixed_tensors("optim/", optimizer_tensors(optimizer))
        updates = ema.updates if ema is not None else 0
        self.write(step, tensors, {**dict(record or {}), "ema_updates": updates})

    def restore(self, model: nn.Module, ema: EMA | None, optimizer: torch.optim.Optimizer) -> int:
        """Load a matching snapshot into the objects and return its step (0: none to resume)."""
        return self.resume(model, ema, optimizer)[0]

    def resume(
        self, model: nn.Module, ema: EMA | None, optimizer: torch.optim.Optimizer
    ) -> tuple[int, dict[str, Any]]:
        """`restore`, also returning the snapshot's record ((0, {}) when there is none)."""
        found = self.read()
        if found is None:
            return 0, {}
        step, tensors, record = found
        model.load_state_dict(unprefixed(tensors, "model/"))
        if ema is not None:
            device = next(iter(ema.shadow.values())).device
            ema.shadow = {k: v.to(device) for k, v in unprefixed(tensors, "ema/").items()}
            ema.updates = int(record["ema_updates"])
        load_optimizer_tensors(optimizer, unprefixed(tensors, "optim/"))
        return step, record

    def write(self, step: int, tensors: Mapping[str, Tensor], record: Mapping[str, Any]) -> None:
        """Write any named tensors and a JSON record as the state after `step` (atomically)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        header = {
            "step": str(step),
            "fingerprint": self.fingerprint,
            "record": json.dumps(dict(record)),
        }
        plain = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
        with atomic_path(self.path) as tmp:
            save_file(plain, str(tmp), metadata=header)

    def read(self, tensors: bool = True) -> tuple[int, dict[str, Tensor], dict[str, Any]] | None:
        """(step, tensors, record) of a readable snapshot with this fingerprint, else None."""
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
        return int(header["step"]), found, json.loads(header.get("record", "{}"))

    def clear(self) -> None:
        """Remove the snapshot (the run finished)."""
        shutil.rmtree(self.directory, ignore_errors=True)


def prefixed_tensors(prefix: str, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """`tensors` with `prefix` before every name (one snapshot holds several parts)."""
    return {f"{prefix}{k}": v for k, v in tensors.items()}


def unprefixed(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The tensors whose names start with `prefix`, without it."""
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
    """The optimiser's per-parameter state as named tensors (`<index>/<key>`)."""
    # The hyperparameters are rebuilt from the config; only the per-parameter state is saved.
    flat: dict[str, Tensor] = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            flat[f"{index}/{key}"] = torch.as_tensor(value)
    return flat


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, flat: Mapping[str, Tensor]) -> None:
    """Load `optimizer_tensors` output into an optimiser over the same parameters."""
    state: dict[int, dict[str, Tensor]] = {}
    for name, value in flat.items():
        index, key = name.split("/", 1)
        state.setdefault(int(index), {})[key] = value
    groups = optimizer.state_dict()["param_groups"]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
