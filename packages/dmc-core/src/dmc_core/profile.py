"""Profiles: named sets of params overrides (`pipelines/profiles/*.yaml`) applied to params.yaml.

    python -m dmc_core.profile pipelines/profiles/smoke.yaml [--params params.yaml]

A profile has the shape of `params.yaml` and may only name keys that the params file already
has, so a typo in a profile is an error, not a silently ignored setting. A mapping in the
profile with `_replace: true` replaces the params file's mapping whole instead of being merged
into it (e.g. a model's `backbone`, whose keys depend on the backbone chosen). A mapping with
`_extend: true` is merged, and its keys that the params file lacks are added whole (e.g. a
profile that adds evaluation runs to another profile's, without repeating them). The params file is
rewritten in place with its comments kept (ruamel round trip), so `dvc repro` and
`dvc exp run` see the profile's values as ordinary params changes.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from dmc_core.atomic import atomic_write_text
from dmc_core.config import read_params
from dmc_core.errors import ConfigError, DmcError

__all__ = ["EXTEND_MARKER", "REPLACE_MARKER", "apply_profile", "main"]

#: In a profile, a mapping holding this key set to true replaces the params mapping whole.
REPLACE_MARKER = "_replace"
#: In a profile, a mapping holding this key set to true may add keys the params mapping lacks.
EXTEND_MARKER = "_extend"


def apply_profile(
    params_path: str | os.PathLike[str], profile_path: str | os.PathLike[str]
) -> None:
    """Merge the profile's values into the params file (in place, atomically)."""
    profile = read_params(profile_path)
    read_params(params_path)  # readable, valid YAML, a mapping: or a ConfigError naming it
    yaml = YAML()
    params = yaml.load(Path(params_path).read_text(encoding="utf-8")) or {}
    problem = _merge(params, profile, prefix="")
    if problem:
        raise ConfigError(f"{profile_path}: {problem} (not in {params_path})")
    buffer = io.StringIO()
    yaml.dump(params, buffer)
    atomic_write_text(params_path, buffer.getvalue())


def _merge(target: MutableMapping[str, Any], values: Mapping[str, Any], prefix: str) -> str:
    """Copy `values` into `target` key by key; return the first problem found, or ''."""
    extend = values.get(EXTEND_MARKER) is True
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key == EXTEND_MARKER:
            continue
        if key not in target and extend:
            target[key] = _without_markers(value)
            continue
        if key not in target:
            return f"unknown key '{name}'"
        if isinstance(value, Mapping) and value.get(REPLACE_MARKER) is True:
            target[key] = _without_markers(value)
        elif isinstance(value, Mapping):
            if not isinstance(target[key], MutableMapping):
                return f"'{name}' is a value in the params file, not a section"
            problem = _merge(target[key], value, f"{name}.")
            if problem:
                return problem
        else:
            target[key] = value
    return ""


def _without_markers(value: Any) -> Any:
    """`value` with the profile's markers dropped from it and every mapping inside it."""
    if not isinstance(value, Mapping):
        return value
    markers = (REPLACE_MARKER, EXTEND_MARKER)
    return {k: _without_markers(v) for k, v in value.items() if k not in markers}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: apply a profile to the params file."""
    parser = argparse.ArgumentParser(prog="python -m dmc_core.profile", description=__doc__)
    parser.add_argument("profile", help="profile file, e.g. pipelines/profiles/smoke.yaml")
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        apply_profile(args.params, args.profile)
    except DmcError as err:
        print(f"profile: error: {err}", file=sys.stderr)
        return 2
    print(f"applied {args.profile} to {args.params}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
