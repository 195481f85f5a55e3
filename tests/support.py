"""Helpers shared by the cross-package tests (on the test path via pytest's `pythonpath`)."""

from __future__ import annotations

import importlib
from pathlib import Path

from dmc_core.cli import Stage

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = sorted(p for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())
MODULES = [p.name.replace("-", "_") for p in PACKAGE_DIRS]


def cli_stages() -> dict[str, tuple[str, Stage]]:
    """Every CLI verb of every package: verb -> (module, Stage)."""
    found: dict[str, tuple[str, Stage]] = {}
    for module in MODULES:
        for stage in importlib.import_module(f"{module}.stages").STAGES:
            assert stage.name not in found, f"verb {stage.name} defined twice"
            found[stage.name] = (module, stage)
    return found
