"""The statistics file written beside every dataset (`<name>.stats.json`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from dmc_core.data import TransitionDataset
from dmc_envs.tasks import ReturnScale

__all__ = ["dataset_statistics"]


def dataset_statistics(dataset: TransitionDataset, scale: ReturnScale) -> dict[str, Any]:
    """Episode returns of a dataset, raw and normalised by the task's references (named as
    D4RL names them), and the episodes' success rate where the dataset records one (a task that
    reports success does when it collects)."""
    returns = np.array([dataset.rewards[part].sum() for part in dataset.episode_slices()])
    scores = np.asarray(scale.normalized(returns))
    success = (
        {"success_rate": float(dataset.attrs["success_rate"])}
        if "success_rate" in dataset.attrs
        else {}
    )
    return {
        "episodes": int(returns.size),
        "transitions": len(dataset),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "normalized_score": float(scores.mean()),
        "normalized_score_std": float(scores.std()),
        "ref_min_score": scale.low,
        "ref_max_score": scale.high,
        "ref_score_source": scale.source,
        **success,
    }
