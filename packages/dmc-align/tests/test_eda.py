"""EDA on a tiny BDM: the loss against hand computations, its targets, where gradients flow."""

from __future__ import annotations

import math

import pytest
import torch

from dmc_align.align import run_pass
from dmc_align.lora import adapter_state, attach_lora
from dmc_align.methods import EDA, AlignContext, eda_loss, eda_targets
from dmc_align.rewards import QFirstAction
from dmc_align.spec import LoraSpec, PassSpec
from dmc_core.config import from_plain
from dmc_core.data import TransitionDataset
from dmc_core.errors import ConfigError
from dmc_core.models import WindowSampler
from dmc_core.seeding import torch_generator
from dmc_critic import IQLCritic


def pass_spec(**knobs: object) -> PassSpec:
    values = {"model": "m", "after": "m", "dataset": "d", "critic": "c", "method": "eda", **knobs}
    return from_plain(PassSpec, values, "test", "pass")


def context(model, reward, dataset: TransitionDataset, **eda: object) -> AlignContext:
    spec = pass_spec(eda={"candidates": 4, **eda})
    windows = WindowSampler(dataset, model.horizon, model.history_len)
    return AlignContext(model, reward, spec, windows)


def histories(model, count: int = 3) -> torch.Tensor:
    return torch.rand(count, model.history_len, model.obs_dim, generator=torch_generator(1))


def constant_reward(model, z0: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """Every candidate is worth the same."""
    return torch.zeros(z0.shape[0])


# The loss and its targets, by hand --------------------------------------------------------


def test_the_loss_is_the_cross_entropy_of_a_hand_computation() -> None:
    f_model = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.3, 0.1]])
    f_ref = torch.tensor([[0.1, 0.0, 1.0], [0.2, 0.2, 0.2]])
    q = torch.tensor([[1.0, 0.0, 2.0], [0.5, 0.5, -0.5]])
    alpha, beta = 2.0, 0.5
    loss, logits = eda_loss(f_model, f_ref, eda_targets(q, alpha, "value"), beta)
    for row in range(2):
        z = [beta * (float(f_model[row, k]) - float(f_ref[row, k])) for k in range(3)]
        w = [math.exp(alpha * float(q[row, k])) for k in range(3)]
        log_norm = math.log(sum(math.exp(v) for v in z))
        want = -sum(w[k] / sum(w) * (z[k] - log_norm) for k in range(3))
        assert float(loss[row]) == pytest.approx(want, rel=1e-6)
        assert logits[row].tolist() == pytest.approx(z)


def test_value_targets_are_softmax_of_alpha_q_and_standardised_ones_are_scale_free() -> None:
    q = torch.tensor([[1.0, 2.0, 4.0]])
    target = eda_targets(q, 3.0, "value")
    weights = [math.exp(3.0 * v) for v in (1.0, 2.0, 4.0)]
    assert target[0].tolist() == pytest.approx([w / sum(weights) for w in weights])
    scaled = eda_targets(10.0 * q + 7.0, 1.0, "value", standardise=True)
    torch.testing.assert_close(scaled, eda_targets(q, 1.0, "value", standardise=True))


def test_preference_targets_are_one_hot_on_the_best_candidate() -> None:
    q = torch.tensor([[0.1, 0.9, 0.3, 0.2], [2.0, -1.0, 0.0, 1.9]])
    target = eda_targets(q, 3.0, "preference")
    assert target.tolist() == [[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]


def test_with_two_candidates_the_preference_loss_is_dpo_on_the_energies() -> None:
    f_model, f_ref = torch.tensor([[0.4, -0.2]]), torch.tensor([[0.1, 0.3]])
    q = torch.tensor([[0.0, 1.0]])  # candidate 1 wins
    loss, _ = eda_loss(f_model, f_ref, eda_targets(q, 1.0, "preference"), 2.0)
    margin = 2.0 * ((-0.2 - 0.3) - (0.4 - 0.1))
    assert float(loss[0]) == pytest.approx(-math.log(1.0 / (1.0 + math.exp(-margin))))


# The method on a tiny BDM -------------------------------------------------------------------


def test_the_loss_is_log_k_while_the_model_is_its_reference_and_q_is_flat(
    dataset: TransitionDataset, plain
) -> None:
    model = attach_lora(plain("bdm"), LoraSpec(rank=2))
    method = EDA(context(model, constant_reward, dataset, candidates=5))
    method.collect(histories(model), torch_generator(0))
    loss, metrics = method.loss(torch_generator(1))
    assert float(loss.detach()) == pytest.approx(math.log(5.0), rel=1e-6)
    assert metrics["logit_spread"] == 0.0


@pytest.mark.parametrize("variant", ["value", "preference"])
def test_the_method_loss_matches_an_independent_computation(
    variant: str, dataset: TransitionDataset, critic: IQLCritic, plain, tiny
) -> None:
    model, foundation = tiny("bdm"), plain("bdm")
    method = EDA(
        context(model, QFirstAction(critic), dataset, alpha=2.0, beta=0.7, variant=variant)
    )
    history = histories(model)
    method.collect(history, torch_generator(0))
    loss, _ = method.loss(torch_generator(1))

    # The same draws, by hand: one t per state, one noise per candidate.
    z0, repeated, q = method._batch  # type: ignore[misc]
    generator = torch_generator(1)
    t = model.formulation.draw_times(3, generator, "cpu")
    noise = torch.randn(z0.shape, generator=generator)
    abar = model.formulation.schedule.alphas_cumprod[t - 1].float()
    abar = abar.repeat_interleave(4)[:, None, None]
    z_t = abar.sqrt() * z0 + (1.0 - abar).sqrt() * noise
    t_k = t.repeat_interleave(4)
    with torch.no_grad():
        f_theta = model.energy(z_t, repeated, t_k).reshape(3, 4)
        f_phi = foundation.energy(z_t, repeated, t_k).reshape(3, 4)  # no adapters at all
    logits = 0.7 * (f_theta - f_phi)
    if variant == "value":
        target = torch.softmax(2.0 * q, dim=1)
    else:
        target = torch.zeros_like(q).scatter_(1, q.argmax(dim=1, keepdim=True), 1.0)
        assert target.sum(dim=1).tolist() == [1.0] * 3
    want = -(target * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
    assert float(loss.detach()) == pytest.approx(float(want), rel=1e-5)
    assert logits.abs().max() > 1e-3  # the perturbed adapters make theta differ from phi


def test_candidates_come_from_the_reference_and_q_labels_them(
    dataset: TransitionDataset, critic: IQLCritic, plain, tiny
) -> None:
    model, foundation = tiny("bdm"), plain("bdm")
    reward = QFirstAction(critic)
    method = EDA(context(model, reward, dataset))
    history = histories(model)
    method.collect(history, torch_generator(0))
    z0, repeated, q = method._batch  # type: ignore[misc]
    with torch.no_grad():
        want = foundation.sample(repeated, torch_generator(0), record=False).x0
        torch.testing.assert_close(z0, want)
        torch.testing.assert_close(q, reward(foundation, want, repeated).reshape(3, 4))
    assert torch.equal(repeated, history.repeat_interleave(4, dim=0))


def test_gradients_reach_the_adapters_and_not_the_reference(
    dataset: TransitionDataset, critic: IQLCritic, tiny
) -> None:
    model = tiny("bdm")
    method = EDA(context(model, QFirstAction(critic), dataset))
    method.collect(histories(model), torch_generator(0))
    loss, _ = method.loss(torch_generator(1))
    assert loss.requires_grad  # the released code's no-grad bug would fail here
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all("lora_" in n for n in grads)
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for g in grads.values() if g is not None)


def test_a_few_updates_change_the_adapters_and_keep_the_loss_finite(
    dataset: TransitionDataset, critic: IQLCritic, tiny
) -> None:
    model = tiny("bdm")
    method = EDA(context(model, QFirstAction(critic), dataset, beta=2.0))
    before = adapter_state(model)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    generator = torch_generator(2)
    method.collect(histories(model, 8), generator)
    for _ in range(5):
        loss, metrics = method.loss(generator)
        assert math.isfinite(float(loss.detach())) and 0.0 <= metrics["accuracy"] <= 1.0
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = adapter_state(model)
    assert any(not torch.equal(before[n], after[n]) for n in before)


def test_a_pass_runs_end_to_end_on_a_bdm(
    dataset: TransitionDataset, critic: IQLCritic, tiny
) -> None:
    model = tiny("bdm")
    knobs = {"max_steps": 4, "eval_every": 2, "conditions": 4, "held_out": 4}
    spec = pass_spec(eda={"candidates": 4, "updates_per_batch": 2}, **knobs)
    outcome = run_pass("bdm_eda", spec, model, dataset, critic, seed=0)
    assert outcome.steps == 4 and math.isfinite(outcome.best_objective)
    assert all(math.isfinite(point["loss"]) for point in outcome.curve if "loss" in point)


@pytest.mark.parametrize("kind", ["policy", "diffuser"])
def test_eda_on_a_model_without_a_density_is_a_config_error(
    kind: str, dataset: TransitionDataset, critic: IQLCritic, tiny
) -> None:
    model = tiny(kind)
    before = adapter_state(model)
    with pytest.raises(ConfigError, match=r"align\.passes\.x\.method: eda aligns bdm"):
        run_pass("x", pass_spec(), model, dataset, critic, seed=0)
    with pytest.raises(ConfigError, match="needs the log-density"):
        EDA(context(model, QFirstAction(critic), dataset))
    after = adapter_state(model)
    assert all(torch.equal(before[n], after[n]) for n in before)
