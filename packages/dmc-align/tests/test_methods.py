"""The methods on tiny models: what each computes at the start, where gradients flow."""

from __future__ import annotations

import math

import pytest
import torch

from dmc_align.lora import attach_lora, sampling_mode
from dmc_align.methods import DPO, PPO, QVPG, SFT, AlignContext, CollapseError
from dmc_align.methods.sft import (
    KeptRounds,
    foundation_relative_log_density,
    top_per_condition,
)
from dmc_align.rewards import DynamicsConsistent, PlanReturn, QFirstAction
from dmc_align.spec import LoraSpec, PassSpec
from dmc_core.config import from_plain
from dmc_core.data import TransitionDataset
from dmc_core.errors import ConfigError
from dmc_core.models import WindowSampler
from dmc_core.seeding import torch_generator
from dmc_critic import CriticSpec, IQLCritic, build_critic
from dmc_envs.nav1d import Nav1DTask
from dmc_envs.tasks import build_task


def context(model, critic: IQLCritic, dataset: TransitionDataset, **knobs) -> AlignContext:
    spec = from_plain(
        PassSpec,
        {"model": "m", "after": "m", "dataset": "d", "critic": "c", **knobs},
        "test",
        "pass",
    )
    windows = WindowSampler(dataset, model.horizon, model.history_len)
    return AlignContext(model, QFirstAction(critic), spec, windows)


def keep(output: torch.Tensor, outputs: list[torch.Tensor]) -> None:
    """Forward-hook body: keep every network output, and its gradient when it has one."""
    if output.requires_grad:
        output.retain_grad()
    outputs.append(output)


def histories(model, count: int = 4) -> torch.Tensor:
    return torch.rand(count, model.history_len, model.obs_dim, generator=torch_generator(1))


@pytest.mark.parametrize("kind", ["diffuser", "policy"])
def test_dpo_loss_is_log_two_before_training(
    kind: str, dataset: TransitionDataset, critic: IQLCritic, plain
) -> None:
    model = attach_lora(plain(kind), LoraSpec(rank=2))
    method = DPO(context(model, critic, dataset, method="dpo"))
    metrics = method.collect(histories(model), torch_generator(0))
    assert metrics["pairs"] == 4
    loss, _ = method.loss(torch_generator(1))
    assert math.isclose(float(loss), math.log(2.0), rel_tol=1e-6)


def test_ppo_ratio_is_one_and_the_kl_zero_before_the_first_update(
    dataset: TransitionDataset, critic: IQLCritic, plain
) -> None:
    model = attach_lora(plain("policy"), LoraSpec(rank=2))
    method = PPO(
        context(
            model,
            critic,
            dataset,
            method="ppo",
            ppo={"divergence": "kl", "candidates": 3, "last_steps": 2},
        )
    )
    method.collect(histories(model), torch_generator(0))
    loss, metrics = method.loss(torch_generator(1))
    # Ratio 1 and standardised advantages (mean 0 per condition): surrogate mean 0, KL 0.
    assert abs(float(loss)) < 1e-5
    assert metrics["kl"] == 0.0 and metrics["clip_fraction"] == 0.0
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)


def test_qvpg_gradient_is_zero_before_the_last_k_steps(
    dataset: TransitionDataset, critic: IQLCritic, tiny
) -> None:
    model = tiny("policy")
    outputs: list[torch.Tensor] = []
    handle = model.net.register_forward_hook(lambda m, i, o: keep(o, outputs))
    method = QVPG(context(model, critic, dataset, method="qvpg", qvpg={"last_steps": 2}))
    result = method.sample(histories(model), torch_generator(0))
    handle.remove()
    QFirstAction(critic)(model, result.x0, histories(model)).sum().backward()
    steps = model.formulation.num_steps
    assert len(outputs) == steps
    for early in outputs[: steps - 2]:
        assert not early.requires_grad and early.grad is None
    for late in outputs[steps - 2 :]:
        assert late.grad is not None and float(late.grad.abs().sum()) > 0


def test_qvpg_credit_weights_scale_each_steps_gradient(
    dataset: TransitionDataset, critic: IQLCritic, tiny
) -> None:
    grads = {}
    for kind in ("uniform", "decreasing"):
        model = tiny("policy")
        outputs: list[torch.Tensor] = []
        model.net.register_forward_hook(lambda m, i, o, kept=outputs: keep(o, kept))
        spec = {"last_steps": 3, "credit": {"kind": kind, "decay": 0.5}}
        method = QVPG(context(model, critic, dataset, method="qvpg", qvpg=spec))
        result = method.sample(histories(model), torch_generator(0))
        result.x0.sum().backward()
        grads[kind] = [o.grad for o in outputs[-3:]]
    # The last step's output gradient is only its own weight: 1 / mean(0.25, 0.5, 1).
    ratio = grads["decreasing"][-1] / grads["uniform"][-1]
    assert torch.allclose(ratio, torch.full_like(ratio, 1.0 / (1.75 / 3)), atol=1e-4)


def test_sft_keeps_the_best_sample_of_each_condition_and_filters_unlikely_ones(
    dataset: TransitionDataset, critic: IQLCritic, tiny
) -> None:
    model = tiny("policy")
    spec = {"candidates": 4, "keep_fraction": 0.25, "likelihood_threshold": 1e-9}
    method = SFT(context(model, critic, dataset, method="sft", sft=spec))
    metrics = method.collect(histories(model), torch_generator(0))
    assert metrics["kept_reward"] >= metrics["reward"]
    assert metrics["likelihood_kept"] == 0.0  # nothing is that likely
    loss, step_metrics = method.loss(torch_generator(1))
    assert step_metrics["kept"] == 0.0 and float(loss) == 0.0
    method = SFT(context(model, critic, dataset, method="sft", sft={"candidates": 4}))
    method.collect(histories(model), torch_generator(0))
    loss, step_metrics = method.loss(torch_generator(1))
    assert step_metrics["kept"] == 4.0 and float(loss) > 0


@pytest.mark.parametrize(("keep_rounds", "pooled"), [(1, [2]), (2, [1, 2]), (0, [0, 1, 2])])
def test_sft_trains_on_the_rounds_its_pool_keeps(
    keep_rounds: int, pooled: list[int], dataset: TransitionDataset, critic: IQLCritic, tiny
) -> None:
    """Catches: a pool that forgets the rounds it should keep, or keeps the ones it should not."""
    model = tiny("diffuser")
    spec = {"candidates": 4, "keep_fraction": 0.25, "keep_rounds": keep_rounds}
    method = SFT(context(model, critic, dataset, method="sft", sft=spec))
    rounds = []
    for seed in range(3):
        method.collect(histories(model), torch_generator(seed))
        rounds.append(method.kept.joined()[0][-4:])  # the newest round: one per condition
    samples, conditions = method.kept.joined()
    assert torch.equal(samples, torch.cat([rounds[k] for k in pooled]))
    assert conditions.shape[0] == samples.shape[0] == 4 * len(pooled)
    _, step_metrics = method.loss(torch_generator(1))
    assert step_metrics["kept"] == 4.0 * len(pooled)


@pytest.mark.parametrize("keep_rounds", [1, 3, 0])
def test_a_restored_pool_goes_on_as_the_one_it_was_saved_from(keep_rounds: int) -> None:
    """Catches: a snapshot of the pool that carries a round too many or too few (one the next
    round pushes out, or one it keeps)."""
    pool, restored = KeptRounds(keep_rounds), KeptRounds(keep_rounds)
    for k in range(5):
        pool.add(torch.full((k + 1, 2, 3), float(k)), torch.full((k + 1, 1, 2), float(k)))
    tensors, record = pool.state()
    if keep_rounds == 1:
        assert tensors == {} and record == {"sizes": []}
    restored.load_state(tensors, record, torch.device("cpu"))
    for each in (pool, restored):
        each.add(torch.full((2, 2, 3), 9.0), torch.full((2, 1, 2), 9.0))
    for ours, theirs in zip(pool.joined(), restored.joined(), strict=True):
        assert torch.equal(ours, theirs)


def test_sft_on_the_dataset_pools_no_rounds(
    dataset: TransitionDataset, critic: IQLCritic, tiny
) -> None:
    model = tiny("diffuser")
    spec = {"generator": "dataset", "keep_rounds": 0}
    with pytest.raises(ConfigError, match=r"sft\.keep_rounds"):
        SFT(context(model, critic, dataset, method="sft", sft=spec))


class FirstActionAdvantage:
    """A reward whose advantage is the first action itself: the ranking is known."""

    def advantage(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return action[:, 0]


@pytest.mark.parametrize("kind", ["policy", "diffuser"])
def test_sft_on_the_dataset_keeps_the_windows_with_the_highest_advantage(
    kind: str, dataset: TransitionDataset, critic: IQLCritic, tiny
) -> None:
    model = tiny(kind)
    spec = {"generator": "dataset", "candidates": 8, "keep_fraction": 0.25, "batch_size": 16}
    method = SFT(context(model, critic, dataset, method="sft", sft=spec))
    method.context.reward = FirstActionAdvantage()  # type: ignore[assignment]
    metrics = method.collect(histories(model, count=4), torch_generator(0))
    drawn = method.context.windows.sample(32, torch_generator(0)).actions[:, 0, 0]
    kept = method._kept_windows
    assert kept is not None and len(kept) == 8  # a quarter of 4 conditions x 8 candidates
    assert torch.equal(kept.actions[:, 0, 0].sort().values, drawn.sort().values[-8:])
    assert metrics["kept_reward"] > metrics["reward"]
    loss, step_metrics = method.loss(torch_generator(1))
    assert step_metrics["kept"] == 8.0 and float(loss) > 0
    loss.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.parameters())


def test_a_critic_of_action_chunks_scores_the_plan_of_a_planner_and_the_chunk_of_a_policy(
    dataset: TransitionDataset, tiny
) -> None:
    """A Diffuser executes one action of its 4-step plan: a critic of 3 actions scores the
    plan's first 3 (its `decode_actions` holds only one), and refuses a policy whose executed
    chunk is shorter than 3, naming action_chunk."""
    torch.manual_seed(0)
    critic = build_critic(CriticSpec(hidden=16, layers=1, action_chunk=3), dataset).eval()
    model = tiny("diffuser")
    history = histories(model)
    z0 = model.sample(history, torch_generator(0), record=False).x0
    normalized = model.act_normalizer.normalize(model.decode_plan(z0)[1][:, :3])
    inside = normalized.clamp(-1.0, 1.0)
    beyond = (normalized - inside).pow(2).sum(dim=(1, 2))
    plan = model.act_normalizer.unnormalize(inside)
    with torch.no_grad():
        reward = QFirstAction(critic)(model, z0, history)
        expected = critic.q_chunk(history[:, -1], plan) - 10.0 * beyond
    torch.testing.assert_close(reward, expected)
    policy = tiny("policy")
    chunk = policy.sample(histories(policy), torch_generator(0), record=False).x0
    with pytest.raises(ValueError, match="chunks of 3 actions"):
        QFirstAction(critic)(policy, chunk, histories(policy))


def test_the_advantage_is_q_minus_v_and_sft_on_the_dataset_needs_it(
    dataset: TransitionDataset, critic: IQLCritic, tiny
) -> None:
    observation = torch.as_tensor(dataset.observations[:5])
    action = torch.as_tensor(dataset.actions[:5])
    advantage = QFirstAction(critic).advantage(observation, action[:, None])
    assert torch.allclose(advantage, critic.q(observation, action) - critic.v(observation))
    model = tiny("diffuser")
    ctx = context(model, critic, dataset, method="sft", sft={"generator": "dataset"})
    ctx.reward = PlanReturn(build_task("nav1d", {"horizon": 8}).plan_reward)  # no V
    with pytest.raises(ConfigError, match=r"sft\.generator dataset"):
        SFT(ctx)


def test_the_energy_likelihood_is_the_foundations_density_relative_to_its_condition(
    dataset: TransitionDataset, critic: IQLCritic, tiny, plain
) -> None:
    model, foundation = tiny("bdm"), plain("bdm")  # the same base weights, adapters perturbed
    history = histories(model, 3).repeat_interleave(4, dim=0)
    z0 = torch.randn(12, model.horizon, model.transition_dim, generator=torch_generator(2))
    relative = foundation_relative_log_density(model, z0, history, candidates=4)
    with torch.no_grad():
        f = foundation.energy(z0, history, foundation.smallest_time(12, "cpu")).reshape(3, 4)
    density = f.exp() / f.exp().mean(dim=1, keepdim=True)  # pi(a) / mean_k pi(a_k), one state
    torch.testing.assert_close(relative, density.log().reshape(-1), rtol=1e-5, atol=1e-5)
    # In SFT it drops the kept samples below -threshold (here: those below the average).
    knobs = {"candidates": 4, "keep_fraction": 0.25, "likelihood_estimator": "energy"}
    counts = []
    for threshold in (1e9, 1e-9):
        sft = {**knobs, "likelihood_threshold": threshold}
        method = SFT(context(model, critic, dataset, method="sft", sft=sft))
        conditions = histories(model, 8)
        metrics = method.collect(conditions, torch_generator(0))
        repeated = conditions.repeat_interleave(4, dim=0)
        with sampling_mode(model):  # the same samples as collect drew
            z0 = model.sample(repeated, torch_generator(0), record=False).x0
            keep = top_per_condition(method.context.score(z0, repeated, 8), 4, 0.25)
        likely = foundation_relative_log_density(model, z0, repeated, 4)[keep] >= -threshold
        assert len(method.kept.joined()[0]) == int(likely.sum())
        assert metrics["likelihood_kept"] == float(likely.float().mean())
        counts.append(int(likely.sum()))
    assert counts[0] == 8 and counts[1] < 8  # the tight threshold dropped some
    with pytest.raises(ConfigError, match="likelihood_estimator energy needs a BDM"):
        SFT(
            context(
                tiny("policy"),
                critic,
                dataset,
                method="sft",
                sft={"likelihood_estimator": "energy"},
            )
        )


def test_a_nan_reward_is_a_collapse(dataset: TransitionDataset, critic: IQLCritic, tiny) -> None:
    model = tiny("policy")
    ctx = context(model, critic, dataset, method="sft")
    ctx.reward = lambda m, z0, h: torch.full((z0.shape[0],), float("nan"))
    with pytest.raises(CollapseError, match="non_finite_reward"):
        SFT(ctx).collect(histories(model), torch_generator(0))


def test_plan_return_sums_the_task_rewards_of_the_planned_states(tiny) -> None:
    task = Nav1DTask.from_params(horizon=8)
    reward = PlanReturn(build_task("nav1d", {"horizon": 8}).plan_reward)
    model = tiny("diffuser")
    states = torch.tensor([[0.1], [0.2], [0.3], [0.4]])
    plan = torch.cat(
        [
            model.obs_normalizer.normalize(torch.cat([states, torch.full((4, 1), 0.75)], 1)),
            torch.zeros(4, 1),
        ],
        1,
    )[None]
    history = torch.tensor([[[0.1, 6 / 8]]])  # t = 6: only steps 6 and 7 are in the episode
    expected = task.reward(6, 0.2) + task.reward(7, 0.3)
    assert math.isclose(float(reward(model, plan, history)), float(expected), rel_tol=1e-5)


def plan_of(model, positions: list[float], actions: list[float]) -> torch.Tensor:
    """A normalised plan (1, H, obs + act) of Nav1D positions (time feature 0) and actions."""
    states = torch.tensor([[p, 0.0] for p in positions])
    action = torch.tensor(actions)[:, None]
    obs, act = model.obs_normalizer.normalize(states), model.act_normalizer.normalize(action)
    return torch.cat([obs, act], 1)[None]


def test_dynamics_consistency_charges_the_broken_transitions_of_a_plan(tiny) -> None:
    model = tiny("diffuser")
    constant = DynamicsConsistent(
        lambda m, z0, h: torch.full((z0.shape[0],), 3.0),
        lambda s, a: s[:, 1:, 0] - (s[:, :-1, 0] + 0.2 * a[:, :-1, 0]),
        width=0.05,
        weight=2.0,
    )
    history = torch.zeros(1, model.history_len, 2)
    coherent = plan_of(model, [0.1, 0.3, 0.5, 0.4], [1.0, 1.0, -0.5, 0.0])
    broken = plan_of(model, [0.1, 0.3, 0.55, 0.4], [1.0, 1.0, -0.75, 0.0])  # 0.55 = 0.5 + w
    assert math.isclose(float(constant(model, coherent, history)), 3.0, rel_tol=1e-5)
    expected = 3.0 - 2.0 * (1.0 - (2.0 + math.exp(-0.5)) / 3.0)
    assert math.isclose(float(constant(model, broken, history)), expected, rel_tol=1e-4)


def test_dynamics_consistency_needs_a_planner(tiny) -> None:
    reward = DynamicsConsistent(QFirstAction, lambda s, a: s[:, 1:, 0], width=0.05, weight=1.0)
    model = tiny("policy")
    with pytest.raises(ValueError, match="needs a planner"):
        reward.kernel(model, torch.zeros(1, model.horizon, model.transition_dim))
