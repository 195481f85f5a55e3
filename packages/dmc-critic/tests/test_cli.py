"""dmc-critic's entry point runs with only the package's declared dependencies installed."""

from __future__ import annotations

from dmc_core.testing import run_module
from dmc_critic.stages import STAGES


def test_entry_point_names_its_stages_and_rejects_unknown_verbs() -> None:
    bare = run_module("dmc_critic")
    assert bare.returncode == 2
    assert f"stages: {', '.join(s.name for s in STAGES) or 'none yet'}" in bare.stderr
    unknown = run_module("dmc_critic", "no_such_stage")
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr
