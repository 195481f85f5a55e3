"""Shared fixtures of the cross-package tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from support import ROOT


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def params() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "params.yaml").read_text())
