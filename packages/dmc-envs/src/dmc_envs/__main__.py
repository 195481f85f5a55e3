"""`python -m dmc_envs <verb>`: run a dmc-envs pipeline stage, or the `export_minari`, `gap`,
`report` and `sweep` commands."""

from __future__ import annotations

import sys

from dmc_core.cli import run_cli
from dmc_envs.export_minari import EXPORT_COMMAND
from dmc_envs.gap import GAP_COMMAND
from dmc_envs.report import REPORT_COMMAND
from dmc_envs.stages import STAGES
from dmc_envs.sweep import SWEEP_COMMAND

if __name__ == "__main__":
    sys.exit(
        run_cli(
            "dmc_envs",
            STAGES,
            commands=(EXPORT_COMMAND, GAP_COMMAND, REPORT_COMMAND, SWEEP_COMMAND),
        )
    )
