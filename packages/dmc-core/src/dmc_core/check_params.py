"""Stage `check_params`: every name one params section uses for another's entry exists, the
models and critics a stage combines learned from the same dataset, and a critic of action chunks
is paired only with models whose samples hold that many actions.

    python -m dmc_core check_params --out data/params-check.json

A pass's `after`, a model's `dataset`, an evaluation run's `model`, ... become paths in
`dvc.yaml` (`data/models/${item.after}/...`). A name that matches no entry would make DVC stop on
a missing file, naming the path but not the key. Every stage depends on this stage's output, so
DVC runs it first and a broken reference stops the pipeline with one line naming its params key.

The output's content is constant: it changes neither with the params nor with the code, so a
re-run of this stage (after any edit of the sections it reads) re-runs nothing after it.

The table `REFERENCES` mirrors the `${item.<field>}` paths of `dvc.yaml`; a contract test
(tests/test_contract.py) keeps the two in step. Finer rules within one section (a pass continues
an *earlier* pass of the same model) stay with that section's schema.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dmc_core.atomic import atomic_write_text
from dmc_core.config import BaseConfig, from_plain, knob, read_params
from dmc_core.errors import ConfigError
from dmc_core.models.spec import ModelSpec

__all__ = [
    "BEHAVIOUR_KINDS",
    "CHECKED",
    "REFERENCES",
    "SAME_DATASET",
    "SCORED_BY_CRITIC",
    "CheckParamsConfig",
    "Reference",
    "broken_references",
    "entries_at",
]

# What the stage writes: the same bytes whatever the params, so that stages after it never re-run
# because it did.
CHECKED = json.dumps({"check_params": "every cross-reference names an entry"}) + "\n"

DATASETS = "make_dataset.datasets"
IMPORTED = "import_dataset.datasets"
ROLLOUTS = "roll_out.datasets"
MODELS = "pretrain.models"
CRITICS = "fit_critic.critics"
POLICIES = "fit_policy.policies"
PASSES = "align.passes"
CASCADES = "fit_cascade.cascades"
RUNS = "evaluate.runs"
AGENTS = "train_behaviour.agents"
BEHAVIOUR = "behaviour_datasets.tasks"

#: The sections whose entries each write the folder `data/models/<name>/`.
MODEL_FOLDERS = (MODELS, PASSES, CASCADES, POLICIES)
#: The datasets `behaviour_datasets@<task>` writes for the pipeline's task (its entry named like
#: `base.task`); `train_behaviour@<task>` adds `medium_replay`.
BEHAVIOUR_KINDS = ("medium", "expert", "medium_expert")
REPLAY_KIND = "medium_replay"


@dataclass(frozen=True)
class Reference:
    """A field of every entry of `entries` that must name an entry of one of `targets`.

    Example: `Reference("align.passes", "after", ("pretrain.models", "align.passes"))`.
    """

    entries: str
    field: str
    targets: tuple[str, ...]


REFERENCES: tuple[Reference, ...] = (
    Reference(MODELS, "dataset", (DATASETS, IMPORTED, BEHAVIOUR, AGENTS)),
    # A dataset extended by a model's episodes: the model and the dataset it learned from.
    Reference(ROLLOUTS, "model", (MODELS, PASSES)),
    Reference(ROLLOUTS, "dataset", (DATASETS, IMPORTED, BEHAVIOUR, AGENTS)),
    # A critic learns from a dataset, or from one extended by a model's episodes.
    Reference(CRITICS, "dataset", (DATASETS, IMPORTED, BEHAVIOUR, AGENTS, ROLLOUTS)),
    # A pass aligns a foundation or a fit_cascade output (a pass on a cascade starts from it).
    Reference(PASSES, "model", (MODELS, CASCADES)),
    Reference(PASSES, "after", (MODELS, PASSES, CASCADES)),
    # A pass's or cascade's conditions may come from a dataset extended by a model's episodes.
    Reference(PASSES, "dataset", (DATASETS, IMPORTED, BEHAVIOUR, AGENTS, ROLLOUTS)),
    Reference(PASSES, "critic", (CRITICS,)),
    Reference(CASCADES, "model", (MODELS, PASSES)),
    Reference(CASCADES, "foundation", (MODELS, PASSES)),
    Reference(CASCADES, "dataset", (DATASETS, IMPORTED, BEHAVIOUR, AGENTS, ROLLOUTS)),
    Reference(CASCADES, "critic", (CRITICS,)),
    Reference(POLICIES, "dataset", (DATASETS, IMPORTED, BEHAVIOUR, AGENTS)),
    Reference(POLICIES, "critic", (CRITICS,)),
    # A run evaluates a foundation, a pass, a cascade or a baseline policy.
    Reference(RUNS, "model", (MODELS, PASSES, CASCADES, POLICIES)),
    Reference(RUNS, "dataset", (DATASETS, IMPORTED, BEHAVIOUR, AGENTS)),
    Reference(RUNS, "critic", (CRITICS,)),
)


#: Fields naming an entry that must have learned from the naming entry's own `dataset`: the
#: stages refuse such a mix when they load their inputs (dmc_align.sources, fit_policy,
#: evaluate, roll_out), which would be after the hours of training before them. A `roll_out`
#: dataset counts as the dataset it extends, on either side.
SAME_DATASET: tuple[Reference, ...] = (
    Reference(ROLLOUTS, "model", (MODELS, PASSES)),
    Reference(PASSES, "model", (MODELS, CASCADES)),
    Reference(PASSES, "critic", (CRITICS,)),
    Reference(CASCADES, "model", (MODELS, PASSES)),
    Reference(CASCADES, "foundation", (MODELS, PASSES)),
    Reference(CASCADES, "critic", (CRITICS,)),
    Reference(POLICIES, "critic", (CRITICS,)),
    Reference(RUNS, "model", (MODELS, PASSES, CASCADES, POLICIES)),
    Reference(RUNS, "critic", (CRITICS,)),
)


#: Entries whose `critic` scores the samples of the model their field names
#: (`IQLCritic.q_chunk` on `dmc_core.models.scored_actions`): a pass's rewards, a cascade's
#: ranking of its refiner's samples, an evaluation run's `q_argmax`. A critic of chunks of k
#: actions cannot score samples of fewer, and the stage would fail only once it samples.
SCORED_BY_CRITIC: tuple[Reference, ...] = (
    Reference(PASSES, "model", (MODELS, CASCADES)),
    Reference(CASCADES, "foundation", (MODELS, PASSES)),
    Reference(RUNS, "model", (MODELS, PASSES, CASCADES)),
)


@dataclass(frozen=True)
class CheckParamsConfig:
    """Stage `check_params`: no knobs of its own; it reads the sections `REFERENCES` names."""

    base: BaseConfig = knob(factory=BaseConfig)


def check_params(config: CheckParamsConfig, args: argparse.Namespace) -> None:
    """Raise `ConfigError` naming the first broken reference, or else write `args.out`."""
    del config  # the references live in the other sections, read from the file as it is
    broken = next(broken_references(read_params(args.params)), None)
    if broken is not None:
        key, problem = broken
        raise ConfigError(f"{args.params}: {key}: {problem}")
    atomic_write_text(args.out, CHECKED)


def broken_references(params: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Yield `(dotted key, problem)` for every reference that names no entry of its targets.

    A missing section or field is not reported here: the section's own schema names it (or
    `dvc.yaml` cannot be resolved, which DVC reports before any stage runs).
    """
    for reference in REFERENCES:
        names = {target: _names(params, target) for target in reference.targets}
        for entry, values in entries_at(params, reference.entries).items():
            value = values.get(reference.field) if isinstance(values, Mapping) else None
            if value is None or any(value in known for known in names.values()):
                continue
            listed = "; ".join(f"{target}: {sorted(known)}" for target, known in names.items())
            yield (
                f"{reference.entries}.{entry}.{reference.field}",
                f"{value!r} names no entry of {' or '.join(reference.targets)} ({listed})",
            )
    # A dataset is made, imported, extended by a model's episodes or collected by a behaviour
    # agent, by one stage only: two would write the same file.
    made = dict.fromkeys(entries_at(params, DATASETS), DATASETS)
    task = entries_at(params, "base").get("task", "nav1d")
    for target in (IMPORTED, ROLLOUTS, BEHAVIOUR, AGENTS):
        key = f"{target}.{{}}" if target in (IMPORTED, ROLLOUTS) else f"{target}.{task}"
        for name in sorted(set(made) & set(_names(params, target))):
            yield key.format(name), f"'{name}' is also a dataset of {made[name]} (the same file)"
        made |= dict.fromkeys(_names(params, target), target)
    yield from _shared_model_folders(params)
    yield from _mixed_datasets(params)
    yield from _short_samples(params)


def _short_samples(params: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """An entry whose critic scores chunks of more actions than its model's samples hold (a
    four-action critic beside a policy that executes two)."""
    for reference in SCORED_BY_CRITIC:
        for entry, values in entries_at(params, reference.entries).items():
            if not isinstance(values, Mapping):
                continue
            critic = entries_at(params, CRITICS).get(values.get("critic"))
            chunk = critic.get("action_chunk", 1) if isinstance(critic, Mapping) else 1
            spec = _foundation_spec(params, values.get(reference.field))
            if spec is None or not isinstance(chunk, int) or chunk <= spec.scored_actions:
                continue
            what = "executed chunk" if spec.is_policy else "plan"
            yield (
                f"{reference.entries}.{entry}.critic",
                f"{values['critic']!r} scores chunks of {chunk} actions "
                f"({CRITICS}.{values['critic']}.action_chunk); a sample of "
                f"{values[reference.field]!r} ({spec.kind}) holds {spec.scored_actions} in its "
                f"{what}: pair it with a critic of at most {spec.scored_actions}",
            )


def _foundation_spec(params: Mapping[str, Any], name: Any) -> ModelSpec | None:
    """The `pretrain.models` entry a model name comes down to (a pass's `model`, a cascade's
    refiner `foundation`), validated; None for a name of no model entry (reported as a broken
    reference) or an entry its own schema refuses (reported by its stage)."""
    seen: set[str] = set()
    while isinstance(name, str) and name not in seen:
        seen.add(name)
        if name in entries_at(params, MODELS):
            try:
                return from_plain(ModelSpec, entries_at(params, MODELS)[name], "params", MODELS)
            except ConfigError:
                return None
        passes, cascades = entries_at(params, PASSES), entries_at(params, CASCADES)
        step = passes.get(name, {}) if name in passes else cascades.get(name, {})
        follow = "model" if name in passes else "foundation"
        name = step.get(follow) if isinstance(step, Mapping) else None
    return None


def _mixed_datasets(params: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """A model or critic named by an entry (`SAME_DATASET`) that learned from another dataset
    than the entry's own."""
    for reference in SAME_DATASET:
        for entry, values in entries_at(params, reference.entries).items():
            if not isinstance(values, Mapping) or values.get("dataset") is None:
                continue
            own, named = values["dataset"], values.get(reference.field)
            for target in reference.targets:
                other = entries_at(params, target).get(named)
                learned = other.get("dataset") if isinstance(other, Mapping) else None
                if learned is not None and _extended(params, learned) != _extended(params, own):
                    yield (
                        f"{reference.entries}.{entry}.{reference.field}",
                        f"{named!r} learned from {learned!r} ({target}.{named}.dataset), this "
                        f"entry's dataset is {own!r}; the stage would refuse the pair",
                    )
                    break


def _extended(params: Mapping[str, Any], dataset: str) -> str:
    """The dataset a `roll_out` dataset extends, else `dataset` itself."""
    rollouts = entries_at(params, ROLLOUTS).get(dataset)
    found = rollouts.get("dataset") if isinstance(rollouts, Mapping) else None
    return found if isinstance(found, str) else dataset


def _shared_model_folders(params: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """A name that entries of two sections of `MODEL_FOLDERS` share: both would write
    `data/models/<name>/` (a baseline policy named like a foundation model, ...)."""
    owners: dict[str, str] = {}
    for section in MODEL_FOLDERS:
        for name in entries_at(params, section):
            if name in owners:
                yield (
                    f"{section}.{name}",
                    f"'{name}' is also an entry of {owners[name]} (the folder data/models/{name})",
                )
            owners.setdefault(name, section)


def _names(params: Mapping[str, Any], target: str) -> Mapping[str, Any] | tuple[str, ...]:
    """The names a target section gives datasets or entries: its entries, or, for the
    behaviour sections, the datasets they write for the pipeline's task."""
    if target not in (BEHAVIOUR, AGENTS):
        return entries_at(params, target)
    task = entries_at(params, "base").get("task", "nav1d")
    if task not in entries_at(params, target):
        return ()
    return BEHAVIOUR_KINDS if target == BEHAVIOUR else (REPLAY_KIND,)


def entries_at(params: Mapping[str, Any], dotted: str) -> Mapping[str, Any]:
    """The named entries at a dotted key (`align.passes`), or an empty mapping."""
    node: Any = params
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}
