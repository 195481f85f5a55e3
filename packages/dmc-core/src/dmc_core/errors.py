"""Errors that a stage reports to its user as one line, without a traceback.

A `DmcError` means the *input* is wrong (a params key, a dataset file, a checkpoint), not the
code: the CLI prints its message and exits with status 2. Any other exception is a bug and keeps
its traceback.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "DatasetError", "DivergenceError", "DmcError"]


class DmcError(Exception):
    """Base class of user-facing input errors; the message names the file and the problem."""


class ConfigError(DmcError):
    """A params file has an unknown key, a value of the wrong type or out of its range."""


class DatasetError(DmcError):
    """A dataset file breaks the dataset contract (layout, dtype, finiteness, episodes)."""


class CheckpointError(DmcError):
    """A checkpoint is missing, not safetensors, or does not match its config sidecar."""


class DivergenceError(DmcError):
    """Training went non-finite (loss, gradient or weights): the stage stops and saves nothing.

    Not an input file's fault, but a settings one (a learning rate too large, a reward scale):
    like the others it is reported in one line, naming the stage, the step and what diverged.
    """


class NonFiniteCheckpointError(CheckpointError):
    """Weights to be saved or loaded hold NaN or inf: the run that made them diverged."""
