"""`python -m dmc_align <verb>`: run a dmc-align pipeline stage."""

from __future__ import annotations

import sys

from dmc_align.stages import STAGES
from dmc_core.cli import run_cli

if __name__ == "__main__":
    sys.exit(run_cli("dmc_align", STAGES))
