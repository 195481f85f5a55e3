"""The `evaluate` section: defaults follow the paper's protocol; bad values name their key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dmc_core.config import load_stage_config
from dmc_core.errors import ConfigError
from dmc_envs.evaluation import EvaluateConfig
from dmc_envs.evaluation.evaluate import _configurations


def load(tmp_path: Path, *overrides: str) -> EvaluateConfig:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"base": {"seed": 0}, "evaluate": {}}))
    return load_stage_config(EvaluateConfig, "evaluate", params, list(overrides))


def test_defaults_are_the_papers_protocol(tmp_path: Path) -> None:
    protocol = load(tmp_path).protocol
    assert (protocol.planner.episodes, protocol.planner.candidates) == (64, 16)
    assert (protocol.policy.episodes, protocol.policy.candidates) == (16, 8)
    assert protocol.sweep_candidates == [1, 2, 4, 8, 16, 32]


def test_an_unknown_selection_rule_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"evaluate.protocol.sweep_rules: unknown selection rule"):
        load(tmp_path, "evaluate.protocol.sweep_rules=[q_argmax,best]")


def test_a_zero_candidate_count_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"evaluate.protocol.sweep_candidates"):
        load(tmp_path, "evaluate.protocol.sweep_candidates=[0,2]")
    with pytest.raises(ConfigError, match=r"evaluate.protocol.planner.candidates"):
        load(tmp_path, "evaluate.protocol.planner.candidates=0")


def test_also_stages_may_neither_repeat_the_stage_nor_cross_the_cascade_line(
    tmp_path: Path,
) -> None:
    def runs(also: list[str]) -> EvaluateConfig:
        run = {"model": "policy_sft", "stage": "policy_sft", "also_stages": also}
        params = tmp_path / "params.yaml"
        params.write_text(yaml.safe_dump({"base": {}, "evaluate": {"runs": {"policy_sft": run}}}))
        return load_stage_config(EvaluateConfig, "evaluate", params)

    assert runs(["aligned"]).runs["policy_sft"].also_stages == ["aligned"]
    for bad in (["policy_sft"], ["cascade_aligned"]):
        with pytest.raises(ConfigError, match=r"evaluate.runs.policy_sft.also_stages: '"):
            runs(bad)


def test_a_run_may_narrow_its_summary_rules_and_an_unknown_one_names_the_key(
    tmp_path: Path,
) -> None:
    def config(rules: list[str]) -> EvaluateConfig:
        run = {"model": "diffuser_cascade", "stage": "cascade", "cascade_passes": 1}
        params = tmp_path / "params.yaml"
        params.write_text(
            yaml.safe_dump({"base": {}, "evaluate": {"runs": {"c": {**run, "rules": rules}}}})
        )
        return load_stage_config(EvaluateConfig, "evaluate", params)

    narrowed = config(["none"])
    protocol, run = narrowed.protocol, narrowed.runs["c"]
    summary, sweep = _configurations(protocol, protocol.planner, run)
    assert summary == [("none", 1)]
    assert sweep == [(rule, n) for rule in protocol.sweep_rules for n in protocol.sweep_candidates]
    protocols = config([])
    summary, _ = _configurations(
        protocols.protocol, protocols.protocol.planner, protocols.runs["c"]
    )
    assert summary == [("none", 1), ("q_argmax", 16)]
    with pytest.raises(ConfigError, match=r"evaluate.runs.c.rules: unknown selection rule 'best'"):
        config(["none", "best"])


def test_a_baseline_run_is_one_sample_without_sweep_and_refuses_other_rules(
    tmp_path: Path,
) -> None:
    """Catches: a baseline (a policy's mean action) given q_argmax rows or a sweep, whose
    candidates would all be the same action."""

    def config(rules: list[str]) -> EvaluateConfig:
        run = {"model": "iql", "stage": "baseline", "rules": rules}
        params = tmp_path / "params.yaml"
        params.write_text(yaml.safe_dump({"base": {}, "evaluate": {"runs": {"iql": run}}}))
        return load_stage_config(EvaluateConfig, "evaluate", params)

    loaded = config([])
    protocol = loaded.protocol
    assert _configurations(protocol, protocol.policy, loaded.runs["iql"]) == ([("none", 1)], [])
    assert config(["none"]).runs["iql"].rules == ["none"]
    with pytest.raises(ConfigError, match=r"evaluate.runs.iql.rules: \['none', 'q_argmax'\]: "):
        config(["none", "q_argmax"])
