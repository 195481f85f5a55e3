"""Read a file in the project's own layout (`dmc_core.data`), with or without provenance."""

from __future__ import annotations

from pathlib import Path

from dmc_core.data import read_dataset
from dmc_envs.importing.source import SourceData, plain

__all__ = ["read_native"]

# Attributes on the behaviour policy a file may record; the import keeps them, since it
# leaves the data as the policy made it (at most clipping actions a hair).
_BEHAVIOUR_ATTRS = ("behavior_policy", "behavior_policy_spec")


def read_native(path: Path) -> SourceData:
    """The transitions of a project-layout file; its attributes become `source_metadata`, and
    the env id, env kwargs, behaviour policy and reference returns it records are used.

    Raises:
        DatasetError: the file breaks the layout (the validator's message, naming the file).
    """
    dataset = read_dataset(path, require_attrs=False)
    attrs = {name: plain(value) for name, value in dataset.attrs.items()}
    references = None
    if "ref_min_score" in attrs and "ref_max_score" in attrs:
        source = attrs.get("ref_score_source") or f"{path}: ref_min_score/ref_max_score"
        references = (float(attrs["ref_min_score"]), float(attrs["ref_max_score"]), str(source))
    env_kwargs = attrs.get("env_kwargs")
    return SourceData(
        arrays=dataset.arrays(),
        label=str(path),
        source_rows=len(dataset),
        metadata=attrs,
        references=references,
        env_id=str(attrs["env_id"]) if attrs.get("env_id") is not None else None,
        env_kwargs=dict(env_kwargs) if isinstance(env_kwargs, dict) else None,
        behaviour={name: attrs[name] for name in _BEHAVIOUR_ATTRS if name in attrs},
        changes={},
    )
