"""dmc-envs: tasks (Nav1D built in), their datasets, and evaluation rollouts.

Importing the package registers the Nav1D environment with gymnasium as `dmc/Nav1D-v0`.
"""

from __future__ import annotations

from dmc_envs.nav1d import ENV_ID, Nav1DEnv, Nav1DTask, register_nav1d

__all__ = ["ENV_ID", "Nav1DEnv", "Nav1DTask", "register_nav1d"]
__version__ = "0.1.0"

register_nav1d()
