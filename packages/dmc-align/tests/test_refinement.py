"""Alignment passes on a cascade: the packed conditions, every method, the align stage's output."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from dmc_align.align import run_pass
from dmc_align.conditions import ConditionPool
from dmc_align.lora import attach_lora, load_adapters, sampling_mode
from dmc_align.methods import AlignContext, build_method
from dmc_align.refinement import ObservedReward, RefinedConditions, Refinement
from dmc_align.rewards import QFirstAction
from dmc_align.spec import LoraSpec, PassSpec
from dmc_align.stages import STAGES
from dmc_core.cli import run_cli
from dmc_core.config import from_plain
from dmc_core.data import TransitionDataset, write_dataset
from dmc_core.errors import ConfigError
from dmc_core.models import ControlModel, WindowSampler
from dmc_core.models.cascade import CascadeModel, is_cascade_checkpoint, load_cascade, save_cascade
from dmc_critic import IQLCritic, save_critic
from dmc_envs.evaluation.config import RunSpec
from dmc_envs.evaluation.evaluate import load_proposer

KINDS = ("diffuser", "policy")
METHODS = {
    "sft": {"sft": {"candidates": 4, "batch_size": 8, "updates_per_batch": 2}},
    "dpo": {"dpo": {"candidates": 4}},
    "ppo": {"ppo": {"candidates": 4}},
    "qvpg": {"qvpg": {"last_steps": 2, "bc_weight": 0.0}},
}
SHORT = {"max_steps": 4, "eval_every": 2, "conditions": 4, "held_out": 4}


def trained_cascade(model: ControlModel) -> CascadeModel:
    """A cascade of `model` whose x_cond encoder is no longer zero (x_cond matters), with a
    perturbed copy of `model` as its source."""
    source = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in source.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    cascade = CascadeModel(copy.deepcopy(model), hidden=8, source=source)
    with torch.no_grad():
        cascade.refiner.net.embed.sample[-1].weight.normal_(0.0, 0.1)
    return cascade


def histories(model: ControlModel, count: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.rand(count, model.history_len, model.obs_dim, generator=g) * 2 - 1


def pass_spec(method: str, **knobs: object) -> PassSpec:
    values = {"model": "c", "after": "c", "dataset": "d", "critic": "c", "method": method}
    return from_plain(PassSpec, {**values, **METHODS[method], **SHORT, **knobs}, "test", "pass")


@pytest.mark.parametrize("kind", KINDS)
def test_a_refinement_samples_and_scores_as_its_cascade(
    kind: str, plain: Callable[[str], ControlModel], critic: IQLCritic
) -> None:
    cascade = trained_cascade(plain(kind))
    model = Refinement(cascade)
    history = histories(model, 5)
    x_cond = torch.randn(5, model.horizon, model.transition_dim)
    packed = model.pack(history, x_cond)
    assert packed.shape == (5, model.history_len, model.obs_dim + x_cond[0].numel())
    back_history, back_x_cond = model.unpack(packed[[4, 0, 2]])  # rows travel together
    torch.testing.assert_close(back_history, history[[4, 0, 2]], rtol=0, atol=0)
    torch.testing.assert_close(back_x_cond, x_cond[[4, 0, 2]], rtol=0, atol=0)
    ours = model.sample(packed, torch.Generator().manual_seed(0), record=False).x0
    theirs = cascade.sample(history, x_cond, torch.Generator().manual_seed(0), record=False).x0
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    t = model.formulation.draw_times(5, torch.Generator().manual_seed(1), "cpu")
    noise = torch.randn_like(ours)
    cond, inpaint = cascade.condition(history, x_cond)
    mask = None if inpaint is None else inpaint[0]
    weights = cascade.loss_weights(ours)  # as fit_cascade trains: a Diffuser's a_0 weighs more
    expected = model.formulation.loss(
        cascade.refiner.net, ours, cond, None, mask, weights, t=t, noise=noise
    )
    torch.testing.assert_close(model.denoising_loss(ours, packed, t=t, noise=noise), expected)
    # A reward sees the observation histories alone, as it would for the refined model.
    torch.testing.assert_close(
        ObservedReward(QFirstAction(critic))(model, ours, packed),
        QFirstAction(critic)(cascade, ours, history),
    )
    with pytest.raises(ValueError, match="packed"):
        model.sample(history, torch.Generator().manual_seed(0))


def test_refined_conditions_draw_fresh_samples_of_the_source_but_fixed_held_out_ones(
    dataset: TransitionDataset, plain: Callable[[str], ControlModel]
) -> None:
    model = Refinement(trained_cascade(plain("diffuser")))
    pool = ConditionPool.from_dataset(
        dataset, model.history_len, 6, torch.Generator().manual_seed(0)
    )
    conditions = RefinedConditions(pool, model, torch.Generator().manual_seed(1))
    held_history, held_x = model.unpack(conditions.held_out)
    torch.testing.assert_close(held_history, pool.held_out, rtol=0, atol=0)
    again = RefinedConditions(pool, model, torch.Generator().manual_seed(1))
    torch.testing.assert_close(again.held_out, conditions.held_out, rtol=0, atol=0)
    # x_cond is the source's sample for that history (its first state is the history's)
    expected = model.source.sample(held_history, torch.Generator().manual_seed(1)).x0
    torch.testing.assert_close(held_x, expected)
    generator = torch.Generator().manual_seed(2)
    first, second = conditions.sample(8, generator), conditions.sample(8, generator)
    assert first.shape == (8, model.history_len, conditions.held_out.shape[2])
    assert not torch.equal(model.unpack(first)[1], model.unpack(second)[1])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_the_cascades_adapters_and_leaves_its_source_alone(
    kind: str,
    method: str,
    dataset: TransitionDataset,
    plain: Callable[[str], ControlModel],
    critic: IQLCritic,
) -> None:
    model = Refinement(trained_cascade(plain(kind)))
    source = {n: p.detach().clone() for n, p in model.source.named_parameters()}
    attach_lora(model, LoraSpec(rank=2, alpha=2.0))
    assert not any(p.requires_grad for p in model.source.parameters())
    spec = pass_spec(method)
    windows = WindowSampler(dataset, model.horizon, model.history_len)
    context = AlignContext(model, ObservedReward(QFirstAction(critic)), spec, windows)  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(0)
    pool = ConditionPool.from_dataset(dataset, model.history_len, 4, generator)
    conditions = RefinedConditions(pool, model, generator)
    trainer = build_method(context)
    trainer.collect(conditions.sample(4, generator), generator)
    loss, _ = trainer.loss(generator)
    loss.backward()
    moved = {
        n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0
    }
    assert any("lora_" in n and "embed.sample" in n for n in moved)  # x_cond's encoder learns
    assert all(p.requires_grad for n, p in model.named_parameters() if n in moved)
    # A whole pass runs, and the source is what it was.
    outcome = run_pass("cascade_pass", spec, model, dataset, critic, seed=0)
    assert outcome.steps == 4 and math.isfinite(outcome.best_objective)
    for name, parameter in model.source.named_parameters():
        torch.testing.assert_close(parameter, source[name], rtol=0, atol=0)


def test_a_cascade_cannot_be_cloned_on_dataset_windows(
    dataset: TransitionDataset, plain: Callable[[str], ControlModel], critic: IQLCritic
) -> None:
    model = Refinement(trained_cascade(plain("policy")))
    attach_lora(model, LoraSpec(rank=2, alpha=2.0))
    spec = pass_spec("qvpg", qvpg={"last_steps": 2, "bc_weight": 0.1})
    with pytest.raises(ConfigError, match=r"align\.passes\.x\.qvpg\.bc_weight: must be 0"):
        run_pass("x", spec, model, dataset, critic, seed=0)
    with pytest.raises(ValueError, match="no model to refine"):
        Refinement(CascadeModel(plain("policy"), hidden=8))


def test_the_align_stage_writes_an_aligned_cascade_that_evaluation_loads(
    tmp_path: Path,
    dataset: TransitionDataset,
    plain: Callable[[str], ControlModel],
    critic: IQLCritic,
) -> None:
    cascade = trained_cascade(plain("diffuser"))
    provenance = {"env_id": "nav1d", "dataset_kind": "full", "behavior_policy": "uniform"}
    stored = dataclasses.replace(dataset, attrs={**dataset.attrs, **provenance, "seed": 0})
    data = write_dataset(tmp_path / "full.hdf5", stored)
    save_cascade(tmp_path / "c" / "model.safetensors", cascade)
    save_critic(tmp_path / "critic.safetensors", critic)
    spec = {"model": "c", "after": "c", "dataset": "full", "critic": "full", "method": "sft"}
    params = {
        "base": {"seed": 0},
        "align": {
            "device": "cpu",
            "lora": {"rank": 2, "alpha": 2.0},
            "passes": {"c_sft": {**spec, **METHODS["sft"], **SHORT}},
        },
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "c_sft"
    argv = ["align", "--name", "c_sft", "--foundation", str(tmp_path / "c" / "model.safetensors")]
    argv += ["--init", str(tmp_path / "c"), "--dataset", str(data)]
    argv += ["--critic", str(tmp_path / "critic.safetensors"), "--out", str(out)]
    argv += ["--params", str(tmp_path / "params.yaml")]
    assert run_cli("dmc_align", STAGES, argv) == 0
    path = out / "model.safetensors"
    assert is_cascade_checkpoint(path) and (out / "adapter.safetensors").is_file()
    aligned = load_cascade(path)
    assert aligned.source is not None
    for (name, a), b in zip(
        aligned.source.state_dict().items(), cascade.source.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    # The saved cascade samples as the adapted one did at the end of the pass.
    adapted = Refinement(load_cascade(tmp_path / "c" / "model.safetensors"))
    attach_lora(adapted, LoraSpec(rank=2, alpha=2.0))
    assert load_adapters(out, adapted, LoraSpec(rank=2, alpha=2.0))
    history = histories(adapted, 4)
    x_cond = torch.randn(4, adapted.horizon, adapted.transition_dim)
    with sampling_mode(adapted):
        ours = adapted.sample(adapted.pack(history, x_cond), torch.Generator().manual_seed(0))
    theirs = aligned.sample(history, x_cond, torch.Generator().manual_seed(0))
    torch.testing.assert_close(ours.x0, theirs.x0, atol=1e-5, rtol=1e-5)
    loaded, proposer = load_proposer(
        str(path), RunSpec(model="c_sft", cascade_passes=1), "cpu", "t"
    )
    proposal = proposer.propose(histories(loaded, 2), 3, torch.Generator().manual_seed(0))
    assert proposal.actions.shape == (2, 3, 1, 1)
