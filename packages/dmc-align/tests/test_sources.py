"""A stage's inputs belong together: the dataset names a pass or cascade compares."""

from __future__ import annotations

import pytest

from dmc_align.sources import check_learned_from, learned_name
from dmc_core.errors import ConfigError
from dmc_core.testing import toy_dataset

ATTRS = {"env_id": "toy", "dataset_kind": "full-policy", "behavior_policy": "random", "seed": 0}


def test_a_dataset_extended_by_rollouts_counts_as_the_one_it_extends() -> None:
    """Catches: a pass conditioned on a model's own episodes (a `roll_out` dataset) refused
    because its entry's name is not the foundation's dataset."""
    extended = toy_dataset(attrs=ATTRS | {"extends": "full"})
    assert learned_name("full-policy", extended) == "full"
    assert learned_name("full", toy_dataset()) == "full"
    inputs = [("foundation", "m.safetensors", "full"), ("critic", "c.safetensors", "full")]
    check_learned_from("p.yaml: align.passes.p", learned_name("full-policy", extended), inputs)
    other = toy_dataset(attrs=ATTRS | {"extends": "expert"})
    with pytest.raises(ConfigError, match=r"align.passes.p.dataset is 'expert' but the foundation"):
        check_learned_from("p.yaml: align.passes.p", learned_name("full-policy", other), inputs)
