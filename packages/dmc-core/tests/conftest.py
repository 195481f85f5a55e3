"""Fixtures shared by the dmc-core tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dmc_core.testing import torch_threads


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run the test on one thread: fastest for tiny tensors, and steady on a busy machine."""
    with torch_threads(1):
        yield
