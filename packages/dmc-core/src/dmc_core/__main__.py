"""`python -m dmc_core <verb>`: run a dmc-core pipeline stage."""

from __future__ import annotations

import sys

from dmc_core.cli import run_cli
from dmc_core.stages import STAGES

if __name__ == "__main__":
    sys.exit(run_cli("dmc_core", STAGES))
