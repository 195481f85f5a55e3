"""Profiles: params overrides that may only name existing keys, replace a mapping whole, or
add entries to a mapping marked for it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dmc_core.errors import ConfigError
from dmc_core.profile import apply_profile

PARAMS = """\
# a comment that must survive
pretrain:
  models:
    m:
      horizon: 8   # planned steps
      backbone: {name: mlp, hidden: 256}
"""


def write(tmp_path: Path, profile: str) -> tuple[Path, Path]:
    params, prof = tmp_path / "params.yaml", tmp_path / "profile.yaml"
    params.write_text(PARAMS)
    prof.write_text(profile)
    return params, prof


def test_values_merge_key_by_key_and_comments_stay(tmp_path: Path) -> None:
    params, prof = write(tmp_path, "pretrain: {models: {m: {backbone: {hidden: 64}}}}\n")
    apply_profile(params, prof)
    data = yaml.safe_load(params.read_text())
    assert data["pretrain"]["models"]["m"] == {
        "horizon": 8,
        "backbone": {"name": "mlp", "hidden": 64},
    }
    assert "# a comment that must survive" in params.read_text()


def test_replace_marker_swaps_a_mapping_whole(tmp_path: Path) -> None:
    profile = "pretrain: {models: {m: {backbone: {_replace: true, name: dit, depth: 8}}}}\n"
    params, prof = write(tmp_path, profile)
    apply_profile(params, prof)
    data = yaml.safe_load(params.read_text())
    assert data["pretrain"]["models"]["m"]["backbone"] == {"name": "dit", "depth": 8}


def test_a_key_the_params_file_lacks_is_an_error(tmp_path: Path) -> None:
    params, prof = write(tmp_path, "pretrain: {models: {m: {backbone: {depth: 8}}}}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'pretrain.models.m.backbone.depth'"):
        apply_profile(params, prof)
    assert params.read_text() == PARAMS


def test_extend_marker_adds_entries_and_still_merges_the_existing_ones(tmp_path: Path) -> None:
    profile = (
        "pretrain: {models: {_extend: true, m: {horizon: 4},"
        " n: {horizon: 2, backbone: {_replace: true, name: dit}}}}\n"
    )
    params, prof = write(tmp_path, profile)
    apply_profile(params, prof)
    data = yaml.safe_load(params.read_text())
    assert data["pretrain"]["models"] == {
        "m": {"horizon": 4, "backbone": {"name": "mlp", "hidden": 256}},
        "n": {"horizon": 2, "backbone": {"name": "dit"}},
    }
    assert "# planned steps" in params.read_text()


def test_extend_marker_allows_new_keys_at_its_own_level_only(tmp_path: Path) -> None:
    profile = "pretrain: {models: {_extend: true, m: {depth: 8}}}\n"
    params, prof = write(tmp_path, profile)
    with pytest.raises(ConfigError, match=r"unknown key 'pretrain.models.m.depth'"):
        apply_profile(params, prof)
