"""Schema of stage `import_dataset` (its `params.yaml` section): which sources become datasets."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from dmc_core.config import BaseConfig, knob

__all__ = ["FORMATS", "ImportDatasetConfig", "ImportSpec"]

#: Source layouts the stage reads: D4RL's HDF5 files, Minari datasets, this project's files.
FORMATS = ("d4rl", "minari", "dmc")


@dataclass(frozen=True)
class ImportSpec:
    """One dataset to import: where it lies, in which layout, and which task it belongs to."""

    format: str = knob(choices=FORMATS, doc="source layout: d4rl, minari or dmc (this project's)")
    path: str = knob(doc="d4rl/dmc: the HDF5 file; minari: the root MINARI_DATASETS_PATH names")
    minari_id: str = knob("", doc="minari only: the dataset id under the root (ns/name-v0)")
    task: str = knob(doc="registry name of the task (hopper, ...): the env id comes from it")
    ref_min_score: float = knob(0.0, doc="return scored 0; with ref_max_score both 0: the task's")
    ref_max_score: float = knob(0.0, doc="return scored 100; with ref_min_score both 0: the task's")
    ref_score_source: str = knob("", doc="where ref_min_score/ref_max_score come from")
    seed: int = knob(0, ge=0, doc="recorded as the dataset's seed (the import draws nothing)")
    clip_actions: bool = knob(False, doc="clip actions into the task's bounds (else refuse)")

    def invalid_fields(self) -> Iterator[tuple[str, str]]:
        """Cross-field rules: a Minari id exactly for Minari sources, a usable score scale."""
        if not self.path.strip():
            yield "path", "must name the source file (or, for minari, its root folder)"
        if self.format == "minari" and not self.minari_id.strip():
            yield "minari_id", "format 'minari' needs the dataset id to load under the root"
        if self.format != "minari" and self.minari_id:
            yield "minari_id", f"{self.minari_id!r} is only read for format 'minari'"
        if self.has_references() and not self.ref_max_score > self.ref_min_score:
            yield (
                "ref_max_score",
                f"{self.ref_max_score} must be above ref_min_score ({self.ref_min_score})",
            )
        if self.ref_score_source and not self.has_references():
            # A source with no numbers would label the task's or Minari's scale as the user's.
            yield "ref_score_source", "set only with ref_min_score/ref_max_score"

    def has_references(self) -> bool:
        """Whether the params give the reference returns (both 0 means: not given)."""
        return not (self.ref_min_score == 0.0 and self.ref_max_score == 0.0)


@dataclass(frozen=True)
class ImportDatasetConfig:
    """Stage `import_dataset`: bring D4RL, Minari or project files into the project's layout."""

    base: BaseConfig = knob(factory=BaseConfig)
    datasets: dict[str, ImportSpec] = knob(factory=dict)
