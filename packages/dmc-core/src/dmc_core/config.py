"""Configuration as data: a stage's `params.yaml` section, validated into a frozen dataclass.

Each stage declares a frozen dataclass schema whose first field is `base: BaseConfig`; the
loader merges the file's shared `base` section and the stage's own section into it through
omegaconf. Anything wrong stops the stage with one `ConfigError` line that names the file and the
dotted key: an unknown key (with a close match suggested), a value of the wrong type, a value
outside the range declared with `knob(...)`, or a constraint between fields (`invalid_fields`).

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class TrainConfig:
    ...     base: BaseConfig = knob(factory=BaseConfig)
    ...     steps: int = knob(100, ge=1, doc="gradient steps")
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from dmc_core.atomic import atomic_write_text
from dmc_core.errors import ConfigError

__all__ = [
    "BASE_SECTION",
    "BaseConfig",
    "entry",
    "from_plain",
    "knob",
    "load_stage_config",
    "read_params",
    "to_plain",
    "write_resolved_config",
]

BASE_SECTION = "base"
T = TypeVar("T")


def knob(
    default: Any = dataclasses.MISSING,
    *,
    factory: Any = dataclasses.MISSING,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Sequence[str] | None = None,
    doc: str = "",
) -> Any:
    """Declare a schema field with its default, its allowed range or choices, and its meaning.

    Args:
        default: the default value (use `factory` for dataclasses, lists and dicts).
        factory: a zero-argument callable giving the default.
        ge, gt, le, lt: inclusive / exclusive numeric bounds, checked after loading.
        choices: the allowed values of a string field.
        doc: one line: meaning and units, shown in error messages.
    """
    metadata = {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "doc": doc}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    if default is dataclasses.MISSING:
        return dataclasses.field(default="???", metadata=metadata)  # omegaconf's MISSING marker
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class BaseConfig:
    """Settings shared by every stage (the `base` section of `params.yaml`)."""

    seed: int = knob(0, ge=0, doc="experiment seed; each stage seeds its random state from it")
    task: str = knob(
        "nav1d", doc="the task of this pipeline (a dmc_envs task name); names the data folders"
    )


def read_params(params_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a params file as a plain mapping of sections, or raise `ConfigError`."""
    path = Path(params_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read params file ({err.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({_one_line(str(err))})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


def load_stage_config(
    schema: type[T],
    section: str,
    params_path: str | os.PathLike[str] = "params.yaml",
    overrides: Sequence[str] = (),
) -> T:
    """Load `base` + `section` of a params file (plus dotted overrides) into `schema`.

    Args:
        schema: a frozen dataclass whose `base` field is a `BaseConfig`.
        section: the stage's section name (the stage's name).
        params_path: the params file.
        overrides: `key=value` strings with the same dotted keys as the file, for example
            `make_dataset.nav1d.horizon=8` or `base.seed=3`.

    Raises:
        ConfigError: naming the file and the dotted key of the first problem found.
    """
    path = Path(params_path)
    params = read_params(path)
    if section not in params:
        raise ConfigError(f"{path}: no section '{section}' (sections: {sorted(params)})")
    stage_values = params[section] if params[section] is not None else {}
    if not isinstance(stage_values, dict):
        raise ConfigError(f"{path}: section '{section}' must be a mapping")
    values = {**stage_values, BASE_SECTION: params.get(BASE_SECTION) or {}}
    merged = _merge_into_schema(schema, values, _parse_overrides(overrides, section), path, section)
    config = _to_object(schema, merged, path, section)
    problems = list(_range_problems(config, ""))
    if problems:
        key, message = problems[0]
        raise ConfigError(f"{path}: {_full_key(section, key)}: {message}")
    return config


def from_plain(schema: type[T], values: Mapping[str, Any], source: str, section: str) -> T:
    """Validate plain `values` (e.g. a config recorded in a checkpoint) into `schema`.

    Raises:
        ConfigError: naming `source` and the dotted key under `section`, as for params files.
    """
    merged = _merge_into_schema(schema, dict(values), {}, Path(source), section)
    config = _to_object(schema, merged, Path(source), section)
    problems = list(_range_problems(config, ""))
    if problems:
        key, message = problems[0]
        raise ConfigError(f"{source}: {_full_key(section, key)}: {message}")
    return config


def entry(entries: Mapping[str, T], name: str, key: str, params: str | os.PathLike[str]) -> T:
    """`entries[name]` of a stage's named entries (`pretrain.models`, ...), or a ConfigError
    naming the params file, the dotted `key` of the mapping and the entries it has."""
    if name not in entries:
        raise ConfigError(f"{params}: {key} has no entry '{name}' (entries: {sorted(entries)})")
    return entries[name]


def to_plain(config: Any) -> dict[str, Any]:
    """Return a dataclass config as plain nested dicts and lists (JSON/YAML-ready)."""
    plain = OmegaConf.to_container(OmegaConf.structured(config), resolve=True)
    assert isinstance(plain, dict)
    return plain  # type: ignore[return-value]


def write_resolved_config(config: Any, destination: str | os.PathLike[str], section: str) -> Path:
    """Write the fully resolved config of a stage beside its outputs (atomically)."""
    body = yaml.safe_dump({section: to_plain(config)}, sort_keys=False)
    header = f"# Resolved configuration of stage '{section}' (base + section + overrides).\n"
    return atomic_write_text(destination, header + body)


def _parse_overrides(overrides: Sequence[str], section: str) -> dict[str, Any]:
    dotlist: list[str] = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override '{item}': expected KEY=VALUE")
        head, _, rest = key.partition(".")
        if head == BASE_SECTION:
            dotlist.append(f"{BASE_SECTION}.{rest}={value}")
        elif head == section and rest:
            dotlist.append(f"{rest}={value}")
        else:
            raise ConfigError(f"override '{item}': key must start with '{section}.' or 'base.'")
    container = OmegaConf.to_container(OmegaConf.from_dotlist(dotlist))
    assert isinstance(container, dict)
    return container  # type: ignore[return-value]


def _merge_into_schema(
    schema: type[Any], values: dict[str, Any], overrides: dict[str, Any], path: Path, section: str
) -> DictConfig:
    structured = OmegaConf.structured(schema)
    try:
        _assign(structured, values, replace_dicts=True)
        _assign(structured, overrides, replace_dicts=False)
    except ConfigKeyError as err:
        raise ConfigError(_unknown_key_message(err, structured, path, section)) from None
    except ValidationError as err:
        key = _full_key(section, str(err.full_key))
        raise ConfigError(f"{path}: {key}: {_type_message(err)}") from None
    except OmegaConfBaseException as err:
        key = _full_key(section, str(err.full_key))
        raise ConfigError(f"{path}: {key}: {_one_line(str(err))}") from None
    return structured


def _assign(node: DictConfig, values: Mapping[str, Any], replace_dicts: bool) -> None:
    """Merge plain `values` into a structured node, key by key, validating each assignment.

    Frozen dataclasses give read-only nodes (also for entries created inside a
    `dict[str, Schema]` field), so each node is made writable just before it is filled; the
    frozen dataclass that `to_object` builds at the end is what keeps the config immutable.

    With `replace_dicts` (a params file), a mapping given for a `dict[...]` field is the whole
    mapping: the schema's default entries are dropped, not merged with it (a file that lists the
    models `a` and `b` means exactly those). Dotted overrides change single keys instead.
    """
    _make_writable(node)
    for key, value in values.items():
        child = node._get_node(key) if key in node else None
        if isinstance(value, Mapping) and child is None:
            node[key] = _new_entry(node)
            child = node._get_node(key)
        if isinstance(value, Mapping) and isinstance(child, DictConfig) and not child._is_none():
            if replace_dicts and child._metadata.object_type is dict:
                for old in list(child.keys()):
                    del child[old]
            _assign(child, value, replace_dicts)
        else:
            node[key] = value


def _new_entry(node: DictConfig) -> Any:
    # A new key in a `dict[str, Schema]` field starts from the schema's defaults.
    element_type = node._metadata.element_type
    return element_type() if dataclasses.is_dataclass(element_type) else {}


def _make_writable(node: Any) -> None:
    if isinstance(node, DictConfig | ListConfig):
        OmegaConf.set_readonly(node, None)
        keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
        for key in keys:
            # `_get_node` does not resolve values, so required (`???`) fields do not raise here.
            _make_writable(node._get_node(key))


def _to_object(schema: type[T], merged: DictConfig, path: Path, section: str) -> T:
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise ConfigError(f"{path}: {_full_key(section, missing[0])}: a value is required")
    try:
        config = OmegaConf.to_object(merged)
    except MissingMandatoryValue as err:
        raise ConfigError(
            f"{path}: {_full_key(section, str(err.full_key))}: a value is required"
        ) from None
    except ValueError as err:
        raise ConfigError(f"{path}: section '{section}': {_one_line(str(err))}") from None
    assert isinstance(config, schema)
    return config


def _range_problems(node: Any, prefix: str) -> Iterator[tuple[str, str]]:
    """Yield `(dotted key, message)` for every value outside its declared range or choices."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _range_problems(value, f"{prefix}{key}.")
        return
    if not dataclasses.is_dataclass(node):
        return
    for spec in dataclasses.fields(node):
        value = getattr(node, spec.name)
        key = f"{prefix}{spec.name}"
        message = _check_bounds(value, spec.metadata)
        if message:
            yield key, message
        yield from _range_problems(value, f"{key}.")
    checker = getattr(node, "invalid_fields", None)
    if callable(checker):
        for name, message in checker():
            yield f"{prefix}{name}", message


def _check_bounds(value: Any, meta: Mapping[str, Any]) -> str | None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        return f"{value!r} is not one of {list(choices)}"
    tests = (
        ("ge", ">=", lambda b: value >= b),
        ("gt", ">", lambda b: value > b),
        ("le", "<=", lambda b: value <= b),
        ("lt", "<", lambda b: value < b),
    )
    for name, symbol, holds in tests:
        bound = meta.get(name)
        if bound is not None and isinstance(value, int | float) and not holds(bound):
            doc = f" ({meta['doc']})" if meta.get("doc") else ""
            return f"{value!r} is out of range: must be {symbol} {bound}{doc}"
    return None


def _unknown_key_message(err: ConfigKeyError, schema: DictConfig, path: Path, section: str) -> str:
    full_key = str(err.full_key or err.key)
    parent_key, _, leaf = full_key.rpartition(".")
    parent = OmegaConf.select(schema, parent_key) if parent_key else schema
    known = list(parent.keys()) if isinstance(parent, DictConfig) else []
    close = difflib.get_close_matches(leaf, [str(k) for k in known], n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {known}" if known else ""
    return f"{path}: unknown key '{_full_key(section, full_key)}'{hint}"


def _type_message(err: ValidationError) -> str:
    text = _one_line(str(err))
    value = getattr(err, "value", None)
    if value is not None and "could not be converted" in text:
        return f"{value!r} is not a valid {text.rsplit(' to ', 1)[-1].lower()}"
    return text


def _full_key(section: str, key: str) -> str:
    return key if key == BASE_SECTION or key.startswith(f"{BASE_SECTION}.") else f"{section}.{key}"


def _one_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
