"""`python -m dmc_critic <verb>`: run a dmc-critic pipeline stage."""

from __future__ import annotations

import sys

from dmc_core.cli import run_cli
from dmc_critic.stages import STAGES

if __name__ == "__main__":
    sys.exit(run_cli("dmc_critic", STAGES))
