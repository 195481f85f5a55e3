"""dmc-align: reward alignment passes (RL, DPO, SFT, cascade, EDA) with LoRA adapters."""

from __future__ import annotations

__version__ = "0.1.0"
