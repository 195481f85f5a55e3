"""dmc-critic: critics (IQL) and critic-based action selection."""

from __future__ import annotations

__version__ = "0.1.0"
