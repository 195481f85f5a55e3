"""The params loader: valid sections load; every kind of bad input names the file and the key."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import FrozenInstanceError, dataclass
from pathlib import Path

import pytest
import yaml

from dmc_core.config import BaseConfig, knob, load_stage_config, write_resolved_config
from dmc_core.errors import ConfigError


@dataclass(frozen=True)
class Episodes:
    count: int = knob(10, ge=1, doc="episodes")
    low: float = knob(-1.0)
    high: float = knob(1.0)

    def invalid_fields(self) -> Iterator[tuple[str, str]]:
        if self.low >= self.high:
            yield "low", f"must be below high ({self.high})"


@dataclass(frozen=True)
class Model:
    width: int = knob(64, gt=0, le=4096, doc="hidden units")
    kind: str = knob("mlp", choices=("mlp", "unet"))
    rate: float = knob(0.1, ge=0.0, lt=1.0)


@dataclass(frozen=True)
class ToyStage:
    base: BaseConfig = knob(factory=BaseConfig)
    model: Model = knob(factory=Model)
    splits: dict[str, Episodes] = knob(factory=lambda: {"train": Episodes()})
    name: str = knob(doc="required, no default")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str, *overrides: str) -> ToyStage:
    return load_stage_config(ToyStage, "toy", write(tmp_path, text), overrides)


def error_of(tmp_path: Path, text: str, *overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, *overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_valid_section_merges_base_defaults_and_new_dict_entries(tmp_path: Path) -> None:
    cfg = load(
        tmp_path, "base: {seed: 7}\ntoy: {name: a, model: {width: 8}, splits: {val: {count: 2}}}"
    )
    assert cfg.base.seed == 7
    assert cfg.model == Model(width=8)
    # A mapping in the file is the whole mapping: the schema's default entry 'train' is gone,
    # and the new entry starts from the entry schema's defaults.
    assert cfg.splits == {"val": Episodes(count=2)}
    assert cfg.name == "a"
    # Without the mapping in the file the defaults stay, and overrides change single keys.
    cfg = load(tmp_path, "toy: {name: a}", "toy.splits.val.count=3")
    assert cfg.splits == {"train": Episodes(), "val": Episodes(count=3)}


def test_loaded_config_is_frozen(tmp_path: Path) -> None:
    cfg = load(tmp_path, "toy: {name: a}")
    with pytest.raises(FrozenInstanceError):
        cfg.model.width = 3  # type: ignore[misc]


def test_overrides_use_the_dotted_keys_of_the_file(tmp_path: Path) -> None:
    cfg = load(tmp_path, "toy: {name: a}", "toy.model.width=16", "base.seed=4")
    assert (cfg.model.width, cfg.base.seed) == (16, 4)
    assert "must start with 'toy.'" in error_of(tmp_path, "toy: {name: a}", "model.width=3")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "toy: {name: a, model: {widht: 8}}",
            "unknown key 'toy.model.widht'; did you mean 'width'?",
        ),
        ("base: {sed: 1}\ntoy: {name: a}", "unknown key 'base.sed'; did you mean 'seed'?"),
        ("toy: {name: a, splits: {val: {cnt: 2}}}", "unknown key 'toy.splits.val.cnt'"),
        ("toy: {name: a, model: {width: many}}", "toy.model.width: 'many' is not a valid integer"),
        ("toy: {name: a, model: {width: 0}}", "toy.model.width: 0 is out of range: must be > 0"),
        (
            "toy: {name: a, model: {rate: 1.0}}",
            "toy.model.rate: 1.0 is out of range: must be < 1.0",
        ),
        (
            "toy: {name: a, model: {kind: gru}}",
            "toy.model.kind: 'gru' is not one of ['mlp', 'unet']",
        ),
        ("base: {seed: -2}\ntoy: {name: a}", "base.seed: -2 is out of range: must be >= 0"),
        ("toy: {name: a, splits: {val: {low: 2}}}", "toy.splits.val.low: must be below high"),
        ("toy: {model: {width: 3}}", "toy.name: a value is required"),
        ("other: {}", "no section 'toy'"),
        ("toy: [1, 2]", "section 'toy' must be a mapping"),
        ("toy: {name: a\n", "not valid YAML"),
    ],
)
def test_bad_input_is_one_line_naming_file_and_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    message = error_of(tmp_path, text)
    assert message.startswith(str(tmp_path / "params.yaml"))
    assert expected in message


def test_missing_params_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere\.yaml: cannot read params file"):
        load_stage_config(ToyStage, "toy", tmp_path / "nowhere.yaml")


def test_resolved_config_round_trips_through_the_loader(tmp_path: Path) -> None:
    cfg = load(tmp_path, "base: {seed: 3}\ntoy: {name: b, splits: {val: {count: 5}}}")
    out = write_resolved_config(cfg, tmp_path / "out" / "config.yaml", "toy")
    written = yaml.safe_load(out.read_text())
    assert written["toy"]["splits"]["val"]["count"] == 5
    section = {k: v for k, v in written["toy"].items() if k != "base"}
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump({"base": written["toy"]["base"], "toy": section}))
    assert load_stage_config(ToyStage, "toy", again) == cfg
