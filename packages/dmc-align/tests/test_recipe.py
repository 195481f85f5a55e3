"""A recipe is checked before any training: unknown methods, knobs and chains name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dmc_align.spec import AlignConfig
from dmc_core.config import load_stage_config
from dmc_core.errors import ConfigError
from dmc_core.testing import run_module


def params(tmp_path: Path, passes: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(
        yaml.safe_dump({"base": {"seed": 0}, "align": {"passes": passes}}, sort_keys=False)
    )
    return path


GOOD = {
    "a_sft": {
        "model": "policy",
        "dataset": "full",
        "critic": "full",
        "after": "policy",
        "method": "sft",
    },
    "a_dpo": {
        "model": "policy",
        "dataset": "full",
        "critic": "full",
        "after": "a_sft",
        "method": "dpo",
        "dpo": {"beta": 5.0},
    },
}


def test_a_good_recipe_loads_in_order(tmp_path: Path) -> None:
    config = load_stage_config(AlignConfig, "align", params(tmp_path, GOOD))
    assert list(config.passes) == ["a_sft", "a_dpo"]
    assert config.passes["a_dpo"].method_spec.beta == 5.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {
                "a_sft": {
                    "model": "policy",
                    "dataset": "full",
                    "critic": "full",
                    "after": "policy",
                    "method": "rlhf",
                }
            },
            r"align\.passes\.a_sft\.method: 'rlhf' is not one of",
        ),
        (
            {
                "a_dpo": {
                    "model": "policy",
                    "dataset": "full",
                    "critic": "full",
                    "after": "a_sft",
                    "method": "dpo",
                    "dpo": {"bta": 1.0},
                }
            },
            r"align\.passes\.a_dpo\.dpo\.bta",
        ),
        (
            {
                "a_dpo": {
                    "model": "policy",
                    "dataset": "full",
                    "critic": "full",
                    "after": "nowhere",
                    "method": "dpo",
                }
            },
            r"align\.passes\.a_dpo\.after: 'nowhere' is neither the foundation",
        ),
        (
            {
                "a_dpo": {
                    "model": "diffuser",
                    "dataset": "full",
                    "critic": "full",
                    "after": "a_sft",
                    "method": "dpo",
                }
            },
            r"'a_sft' aligns 'policy', this pass 'diffuser'",
        ),
        (
            {
                "a_sft": {
                    "model": "policy",
                    "dataset": "full",
                    "critic": "full",
                    "after": "a_dpo",
                    "method": "sft",
                }
            },
            r"'a_dpo' comes later in the recipe",
        ),
        (
            {"a_sft": {"model": "policy", "dataset": "full", "critic": "full", "method": "sft"}},
            r"a_sft\.after: a value is required",
        ),
    ],
)
def test_a_bad_recipe_names_the_key(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_stage_config(AlignConfig, "align", params(tmp_path, {**GOOD, **change}))


def test_the_stage_fails_before_loading_anything(tmp_path: Path) -> None:
    bad = {
        "a_sft": {
            "model": "policy",
            "dataset": "full",
            "critic": "full",
            "after": "policy",
            "method": "sft",
            "sft": {"topk": 3},
        }
    }
    path = params(tmp_path, bad)
    missing = tmp_path / "missing"
    result = run_module(
        "dmc_align",
        "align",
        "--params",
        str(path),
        "--name",
        "a_sft",
        "--foundation",
        str(missing / "model.safetensors"),
        "--init",
        str(missing),
        "--dataset",
        str(missing / "d.hdf5"),
        "--critic",
        str(missing / "c.safetensors"),
        "--out",
        str(tmp_path / "out"),
    )
    assert result.returncode != 0
    assert "align.passes.a_sft.sft.topk" in result.stderr
    assert not (tmp_path / "out").exists()
