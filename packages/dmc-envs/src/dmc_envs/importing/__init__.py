"""Readers that bring datasets made elsewhere into the project's layout (`dmc_core.data`).

One reader per source layout: `d4rl` (HDF5 files as D4RL published them), `minari` (Minari
datasets on local disk, through Minari's API) and `native` (this project's files). Each gives
a `SourceData`; stage `import_dataset` adds the task's provenance and writes the file.
"""

from __future__ import annotations

from dmc_envs.importing.config import FORMATS, ImportDatasetConfig, ImportSpec
from dmc_envs.importing.source import SourceData

__all__ = ["FORMATS", "ImportDatasetConfig", "ImportSpec", "SourceData"]
