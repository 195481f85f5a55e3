"""Stage `check_params`: every name one params section uses for another's entry exists.

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
from dmc_core.config import BaseConfig, knob, read_params
from dmc_core.errors import ConfigError

__all__ = ["CHECKED", "REFERENCES", "CheckParamsConfig", "Reference", "broken_references"]

# What the stage writes: the same bytes whatever the params, so that stages after it never re-run
# because it did.
CHECKED = json.dumps({"check_params": "every cross-reference names an entry"}) + "\n"

DATASETS = "make_dataset.datasets"
IMPORTED = "import_dataset.datasets"
MODELS = "pretrain.models"
CRITICS = "fit_critic.critics"
PASSES = "align.passes"
CASCADES = "fit_cascade.cascades"
RUNS = "evaluate.runs"


@dataclass(frozen=True)
class Reference:
    """A field of every entry of `entries` that must name an entry of one of `targets`.

    Example: `Reference("align.passes", "after", ("pretrain.models", "align.passes"))`.
    """

    entries: str
    field: str
    targets: tuple[str, ...]


REFERENCES: tuple[Reference, ...] = (
    Reference(MODELS, "dataset", (DATASETS, IMPORTED)),
    Reference(CRITICS, "dataset", (DATASETS, IMPORTED)),
    # A pass aligns a foundation or a fit_cascade output (a pass on a cascade starts from it).
    Reference(PASSES, "model", (MODELS, CASCADES)),
    Reference(PASSES, "after", (MODELS, PASSES, CASCADES)),
    Reference(PASSES, "dataset", (DATASETS, IMPORTED)),
    Reference(PASSES, "critic", (CRITICS,)),
    Reference(CASCADES, "model", (MODELS, PASSES)),
    Reference(CASCADES, "foundation", (MODELS, PASSES)),
    Reference(CASCADES, "dataset", (DATASETS, IMPORTED)),
    Reference(CASCADES, "critic", (CRITICS,)),
    Reference(RUNS, "model", (MODELS, PASSES, CASCADES)),
    Reference(RUNS, "dataset", (DATASETS, IMPORTED)),
    Reference(RUNS, "critic", (CRITICS,)),
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
        names = {target: _entries(params, target) for target in reference.targets}
        for entry, values in _entries(params, reference.entries).items():
            value = values.get(reference.field) if isinstance(values, Mapping) else None
            if value is None or any(value in known for known in names.values()):
                continue
            listed = "; ".join(f"{target}: {sorted(known)}" for target, known in names.items())
            yield (
                f"{reference.entries}.{entry}.{reference.field}",
                f"{value!r} names no entry of {' or '.join(reference.targets)} ({listed})",
            )
    # A dataset is made or imported, not both: the two would write the same file.
    for name in sorted(set(_entries(params, DATASETS)) & set(_entries(params, IMPORTED))):
        yield f"{IMPORTED}.{name}", f"'{name}' is also an entry of {DATASETS} (the same file)"


def _entries(params: Mapping[str, Any], dotted: str) -> Mapping[str, Any]:
    """The named entries at a dotted key (`align.passes`), or an empty mapping."""
    node: Any = params
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}
