"""Checks that a stage's inputs belong together: every model and critic learned from the dataset
the stage's params name (a mismatch is a `ConfigError` naming the key, before any training)."""

from __future__ import annotations

from collections.abc import Iterable

from dmc_core.data import TransitionDataset
from dmc_core.errors import ConfigError

__all__ = ["check_learned_from", "learned_name"]


def learned_name(name: str, dataset: TransitionDataset) -> str:
    """The dataset a model of the entry's `dataset` (`name`, read as `dataset`) must have
    learned from: the one a `roll_out` dataset extends (its states, a model's own, can
    condition a pass), else `name`."""
    extends = dataset.attrs.get("extends")
    return str(extends) if extends else name


def check_learned_from(where: str, dataset: str, inputs: Iterable[tuple[str, str, str]]) -> None:
    """Raise unless every input learned from `dataset`.

    Args:
        where: the params key of the stage entry, e.g. "params.yaml: align.passes.p".
        dataset: the entry's `dataset`.
        inputs: (what, path, the dataset it learned from) of every model and critic.
    """
    for what, path, learned in inputs:
        if learned != dataset:
            raise ConfigError(
                f"{where}.dataset is '{dataset}' but the {what} {path} learned from '{learned}'"
            )
