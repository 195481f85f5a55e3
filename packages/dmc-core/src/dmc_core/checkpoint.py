"""Checkpoints: tensors in safetensors, the config in a YAML sidecar; loading never unpickles.

`save_checkpoint("model.safetensors", tensors, config)` writes `model.safetensors` and
`model.yaml`. The sidecar records the SHA-256 of the weights file, so a sidecar left from an older
checkpoint (a run killed between the two atomic writes) is detected instead of silently paired.
Weights are finite both ways: a diverged run cannot be saved, and a checkpoint holding NaN or inf
(written by other code) is refused when loaded, so no stage starts from one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dmc_core.atomic import atomic_path, atomic_write_text
from dmc_core.errors import CheckpointError, NonFiniteCheckpointError

__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "check_state_fits",
    "checkpoint_kind",
    "checkpoint_metadata",
    "file_sha256",
    "load_checkpoint",
    "save_checkpoint",
    "sidecar_path",
]

CHECKPOINT_FORMAT = "dmc-checkpoint/1"


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: named tensors, the config that produced them, free-form metadata."""

    tensors: dict[str, torch.Tensor]
    config: dict[str, Any]
    metadata: dict[str, Any]


def sidecar_path(weights: str | os.PathLike[str]) -> Path:
    """Return the config sidecar path of a weights file (`x.safetensors` -> `x.yaml`)."""
    return Path(weights).with_suffix(".yaml")


def save_checkpoint(
    path: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write `tensors` to `path` (safetensors) and `config` + `metadata` to its YAML sidecar.

    Tensors are detached, moved to CPU and made contiguous; tensors sharing storage (tied
    weights) are cloned, since safetensors stores each name separately.

    Raises:
        NonFiniteCheckpointError: a tensor holds NaN or inf (nothing is written).
    """
    weights = Path(path)
    if weights.suffix != ".safetensors":
        raise ValueError(f"checkpoint path must end in .safetensors, got {weights}")
    plain = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    _refuse_non_finite(plain, f"{weights}: refusing to write non-finite weights")
    with atomic_path(weights) as tmp:
        save_file(plain, str(tmp))
    sidecar = {
        "format": CHECKPOINT_FORMAT,
        "weights": weights.name,
        "sha256": file_sha256(weights),
        "config": dict(config),
        "metadata": dict(metadata or {}),
    }
    atomic_write_text(sidecar_path(weights), yaml.safe_dump(sidecar, sort_keys=False))
    return weights


def load_checkpoint(path: str | os.PathLike[str], device: str = "cpu") -> Checkpoint:
    """Load a checkpoint written by `save_checkpoint`; raise `CheckpointError` if it is unusable."""
    weights = Path(path)
    sidecar = _read_sidecar(weights)
    if sidecar.get("sha256") != file_sha256(weights):
        raise CheckpointError(
            f"{weights}: weights do not match the sha256 in {sidecar_path(weights).name}"
        )
    try:
        tensors = load_file(str(weights), device=device)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({err})") from None
    _refuse_non_finite(tensors, f"{weights}: non-finite weights")
    return Checkpoint(tensors=tensors, config=sidecar["config"], metadata=sidecar["metadata"])


def check_state_fits(
    path: str | os.PathLike[str],
    expected: Mapping[str, torch.Tensor],
    found: Mapping[str, torch.Tensor],
    what: str = "the recorded spec",
) -> None:
    """Raise `CheckpointError` unless `found` has exactly the names and shapes of `expected`.

    Checked before `load_state_dict`, whose size-mismatch error is a multi-line traceback that
    names neither the file nor which tensor came first.

    Args:
        path: the checkpoint, named in the message.
        expected: the state dict of the module rebuilt from the sidecar.
        found: the checkpoint's tensors.
        what: what the module was rebuilt from, for the message.
    """
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit {what} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for name, tensor in expected.items():
        if found[name].shape != tensor.shape:
            raise CheckpointError(
                f"{path}: weights do not fit {what}: '{name}' should have shape "
                f"{tuple(tensor.shape)}, the file has {tuple(found[name].shape)}"
            )


def _refuse_non_finite(tensors: Mapping[str, torch.Tensor], problem: str) -> None:
    """Raise `NonFiniteCheckpointError` naming the first tensor with NaN or inf entries."""
    for name, tensor in tensors.items():
        if not (tensor.is_floating_point() or tensor.is_complex()):
            continue  # integer and bool tensors are always finite
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise NonFiniteCheckpointError(
                f"{problem}: '{name}' has {bad} of {tensor.numel()} entries NaN or inf"
            )


def checkpoint_kind(weights: str | os.PathLike[str]) -> str | None:
    """The `checkpoint_kind` a checkpoint's sidecar records (None: no readable sidecar, or none
    recorded), read without loading or checking the weights: which loader a file needs."""
    kind = _peek_sidecar(weights, "config").get("checkpoint_kind")
    return kind if isinstance(kind, str) else None


def checkpoint_metadata(weights: str | os.PathLike[str]) -> dict[str, Any]:
    """The free-form `metadata` a checkpoint's sidecar records (empty: no readable sidecar, or
    none recorded), read without loading the weights: what a run recorded about its training."""
    return _peek_sidecar(weights, "metadata")


def _peek_sidecar(weights: str | os.PathLike[str], section: str) -> dict[str, Any]:
    """One mapping of a sidecar (`config`, `metadata`), or {} where it cannot be read."""
    try:
        sidecar = yaml.safe_load(sidecar_path(weights).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    found = sidecar.get(section) if isinstance(sidecar, dict) else None
    return dict(found) if isinstance(found, dict) else {}


def _read_sidecar(weights: Path) -> dict[str, Any]:
    if not weights.is_file():
        raise CheckpointError(f"{weights}: checkpoint not found")
    side = sidecar_path(weights)
    try:
        data = yaml.safe_load(side.read_text(encoding="utf-8"))
    except OSError:
        raise CheckpointError(f"{weights}: config sidecar {side.name} is missing") from None
    except yaml.YAMLError:
        raise CheckpointError(f"{side}: config sidecar is not valid YAML") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{side}: not a {CHECKPOINT_FORMAT} sidecar")
    return data


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 hex digest of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
