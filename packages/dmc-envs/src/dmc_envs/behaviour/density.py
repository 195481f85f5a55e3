"""The behaviour densities a dataset collected by behaviour agents records, and reads back.

A dataset's `behavior_policy_spec` names the actor that collected it by path and sha256
(`{"type": "actor", "path": ..., "sha256": ...}`), or a mixture of such actors weighted by
their shares of the rows (`{"type": "mixture", "components": [...], "weights": [...]}`: a
dataset stitched from several agents' data). Reading one back loads the actor and checks that
it is the file that collected the data.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dmc_core.checkpoint import file_sha256
from dmc_core.errors import CheckpointError, DatasetError
from dmc_envs.behaviour.actor import ActorDensity, SquashedGaussianActor, load_actor

__all__ = ["actor_spec", "density_from_spec", "mixture_spec"]


def actor_spec(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The spec of data collected by the actor saved at `path`."""
    return {"type": "actor", "path": str(path), "sha256": file_sha256(path)}


def mixture_spec(components: Sequence[Mapping[str, Any]], rows: Sequence[int]) -> dict[str, Any]:
    """The spec of data stitched from parts with these specs and row counts."""
    return {"type": "mixture", "components": [dict(c) for c in components], "weights": list(rows)}


def density_from_spec(spec: Mapping[str, Any]) -> ActorDensity | None:
    """The density an `actor` or `mixture` spec describes (None for other types).

    Raises:
        CheckpointError: the actor file is missing or is not the one that collected the data.
        DatasetError: a mixture component is not an actor.
    """
    if spec.get("type") == "actor":
        return ActorDensity([_load(spec)], [1.0])
    if spec.get("type") == "mixture":
        components = spec["components"]
        if any(c.get("type") != "actor" for c in components):
            raise DatasetError(f"behavior_policy_spec: a mixture of actors only, got {components}")
        return ActorDensity([_load(c) for c in components], spec["weights"])
    return None


def _load(spec: Mapping[str, Any]) -> SquashedGaussianActor:
    path = str(spec["path"])
    if not Path(path).exists():
        raise CheckpointError(
            f"{path}: the behaviour actor that collected this dataset is missing (run its "
            "train_behaviour stage, or `dvc pull`)"
        )
    if file_sha256(path) != spec["sha256"]:
        raise CheckpointError(f"{path}: not the actor that collected this dataset (sha256 differs)")
    return load_actor(path)[0]
