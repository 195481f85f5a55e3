"""The critic schemas validate their ranges, choices and cross-field rules."""

from __future__ import annotations

from typing import Any

import pytest

from dmc_core.config import to_plain
from dmc_core.errors import ConfigError
from dmc_critic import CriticSpec, critic_spec_from_dict


def test_defaults_round_trip_through_the_plain_form() -> None:
    spec = CriticSpec()
    assert critic_spec_from_dict(to_plain(spec)) == spec
    assert spec.expectile == 0.9 and spec.discount == 1.0 and spec.train.steps == 10000


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"expectile": 1.0}, "spec.expectile"),
        ({"expectile": 0.4}, "spec.expectile"),
        ({"discount": 0.0}, "spec.discount"),
        ({"reward_normalization": "zscore"}, "spec.reward_normalization"),
        ({"target_update": 0.0}, "spec.target_update"),
        ({"fourier_frequencies": -1}, "spec.fourier_frequencies"),
        ({"train": {"lr": 0.0}}, "spec.train.lr"),
        ({"train": {"batch_size": 0}}, "spec.train.batch_size"),
    ],
)
def test_out_of_range_values_name_the_source_and_key(values: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^critic\.yaml: {key}"):
        critic_spec_from_dict(values, "critic.yaml")


def test_undiscounted_backups_through_timeouts_are_rejected() -> None:
    with pytest.raises(ConfigError, match="terminal_on_timeout"):
        critic_spec_from_dict({"discount": 1.0, "terminal_on_timeout": False})
    spec = critic_spec_from_dict({"discount": 0.99, "terminal_on_timeout": False})
    assert not spec.terminal_on_timeout
