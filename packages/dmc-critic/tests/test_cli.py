"""dmc-critic's entry point runs with only the package's declared dependencies installed."""

from __future__ import annotations

from dmc_core.testing import check_entry_point
from dmc_critic.stages import STAGES


def test_entry_point_names_its_stages_and_rejects_unknown_verbs() -> None:
    check_entry_point("dmc_critic", STAGES)
