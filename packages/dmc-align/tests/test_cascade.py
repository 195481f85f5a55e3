"""Cascading diffusion (spec §4.4): warm start, training pairs, the fit_cascade stage, and the
cascade at evaluation."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from dmc_align import fit_cascade
from dmc_align.cascade_pairs import denoise, make_pairs
from dmc_align.fit_cascade import FitCascadeConfig
from dmc_align.rewards import QFirstAction
from dmc_align.stages import STAGES
from dmc_core.cli import run_cli
from dmc_core.config import load_stage_config
from dmc_core.data import TransitionDataset, write_dataset
from dmc_core.errors import ConfigError
from dmc_core.models import ControlModel, build_model, save_model
from dmc_core.models.cascade import CascadeModel, is_cascade_checkpoint, load_cascade
from dmc_core.models.spec import FormulationSpec, ModelSpec
from dmc_critic import IQLCritic, save_critic
from dmc_envs.evaluation.cascade import CascadeProposer
from dmc_envs.evaluation.config import RunSpec
from dmc_envs.evaluation.evaluate import load_proposer
from dmc_envs.evaluation.proposers import ModelProposer

KINDS = ("diffuser", "policy")
DIFFUSER = ModelSpec(  # the fixtures' tiny Diffuser
    kind="diffuser",
    horizon=4,
    backbone={"name": "unet", "dim": 8, "dim_mults": [1, 2]},
    formulation=FormulationSpec(steps=6),
)


def histories(model: ControlModel, count: int, seed: int = 0) -> torch.Tensor:
    """Random raw observation histories (position in [-1, 1], time feature in [0, 1])."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(count, model.history_len, model.obs_dim, generator=g) * 2 - 1


@pytest.mark.parametrize("kind", KINDS)
def test_the_warm_started_cascade_is_exactly_the_foundation(
    kind: str, plain: Callable[[str], ControlModel]
) -> None:
    foundation = plain(kind)
    with torch.no_grad():  # a foundation whose every weight matters
        for parameter in foundation.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    cascade = CascadeModel(copy.deepcopy(foundation), hidden=8)
    history = histories(foundation, 6)
    for seed in range(3):
        x_cond = 3.0 * torch.randn(6, foundation.horizon, foundation.transition_dim)
        ours = cascade.sample(history, x_cond, torch.Generator().manual_seed(seed), record=False)
        theirs = foundation.sample(history, torch.Generator().manual_seed(seed), record=False)
        torch.testing.assert_close(ours.x0, theirs.x0, rtol=0, atol=0)
        z0 = torch.randn_like(x_cond)
        t = foundation.formulation.draw_times(6, torch.Generator().manual_seed(seed), "cpu")
        noise = torch.randn_like(z0)
        cond, _ = cascade.condition(history, x_cond)
        _, inpaint = foundation.condition(history)
        mask = None if inpaint is None else inpaint[0]
        weights = cascade.loss_weights(z0)  # the foundation's own (a Diffuser's a_0 weighs more)
        ours_loss = cascade.formulation.loss(
            cascade.refiner.net, z0, cond, None, mask, weights, t=t, noise=noise
        )
        torch.testing.assert_close(
            ours_loss, foundation.denoising_loss(z0, history, t=t, noise=noise)
        )
    # ... and the sample does reach the network: once trained, x_cond changes the output.
    with torch.no_grad():
        cascade.refiner.net.embed.sample[-1].weight.normal_()
    a = cascade.sample(history, torch.zeros_like(x_cond), torch.Generator().manual_seed(0))
    b = cascade.sample(history, torch.ones_like(x_cond), torch.Generator().manual_seed(0))
    assert not torch.allclose(a.x0, b.x0)


@pytest.mark.parametrize("kind", KINDS)
def test_inpaint_pairs_are_strictly_ordered_and_share_the_inpainted_part(
    kind: str, plain: Callable[[str], ControlModel], critic: IQLCritic
) -> None:
    model = plain(kind)
    reward = QFirstAction(critic)
    history = histories(model, 10)
    pairs = make_pairs(model, reward, history, 4, "inpaint", torch.Generator().manual_seed(0))
    assert 0 < len(pairs) <= 10 * 3
    assert bool((pairs.r_cond < pairs.r_r).all())
    torch.testing.assert_close(reward(model, pairs.x_cond, pairs.history), pairs.r_cond)
    torch.testing.assert_close(reward(model, pairs.x_r, pairs.history), pairs.r_r)
    assert not torch.equal(pairs.x_cond, pairs.x_r)
    _, inpaint = model.condition(pairs.history)
    if inpaint is not None:  # planners: both samples hold the in-painted s_0
        mask, values = inpaint
        assert bool(mask.any())
        torch.testing.assert_close(pairs.x_cond[mask], values[mask])
        torch.testing.assert_close(pairs.x_r[mask], values[mask])
    # every pair's history is one of the given ones (policies: the shared condition)
    assert all(any(torch.equal(h, g) for g in history) for h in pairs.history)


def test_shared_latent_pairs_branch_from_one_latent(
    dataset: TransitionDataset, critic: IQLCritic
) -> None:
    reward = QFirstAction(critic)
    # A deterministic sampler (DDIM, eta 0): branches of the same z_t are the same sample, so
    # shared_latent finds no strictly better partner, while in-painting (own z_T) does.
    spec = dataclasses.replace(DIFFUSER, formulation=FormulationSpec(name="ddim", steps=6, eta=0.0))
    torch.manual_seed(0)
    deterministic = build_model(spec, dataset)
    history = histories(deterministic, 8)
    same = make_pairs(
        deterministic, reward, history, 4, "shared_latent", torch.Generator().manual_seed(0)
    )
    assert len(same) == 0
    own = make_pairs(deterministic, reward, history, 4, "inpaint", torch.Generator().manual_seed(0))
    assert len(own) > 0
    # Stochastic DDPM: pairs exist, are ordered, and both ends continue the recorded z_t.
    torch.manual_seed(0)
    model = build_model(DIFFUSER, dataset)
    pairs = make_pairs(
        model, reward, history, 4, "shared_latent", torch.Generator().manual_seed(0), 0.5
    )
    assert len(pairs) > 0 and bool((pairs.r_cond < pairs.r_r).all())
    assert pairs.latent is not None
    # Every pair of one history has the same z_t, and histories have different ones.
    for h in history:
        rows = [i for i in range(len(pairs)) if torch.equal(pairs.history[i], h)]
        for i in rows[1:]:
            torch.testing.assert_close(pairs.latent[i], pairs.latent[rows[0]])
    # The chain split at z_t is the chain: running it in two pieces from z_T gives the sample.
    z_T = torch.randn(8, model.horizon, model.transition_dim)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    whole = denoise(model, history, z_T, 0, 6, g1)
    split = denoise(model, history, denoise(model, history, z_T, 0, 3, g2), 3, 6, g2)
    torch.testing.assert_close(whole, split)


def _params(tmp_path: Path, cascade: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(
        yaml.safe_dump(
            {"base": {"seed": 0}, "fit_cascade": {"device": "cpu", "cascades": {"tiny": cascade}}}
        )
    )
    return path


TINY = {
    "model": "m",
    "foundation": "m",
    "dataset": "full",
    "critic": "full",
    "pairs": "inpaint",
    "conditions": 12,
    "candidates": 3,
    "hidden": 8,
    "train": {
        "steps": 4,
        "batch_size": 8,
        "warmup_steps": 1,
        "checkpoint_every": 2,
        "log_every": 2,
    },
}


@pytest.mark.parametrize(
    ("bad", "key"),
    [
        ({"bogus": 1}, "fit_cascade.cascades.tiny.bogus"),
        ({"pairs": "random"}, "fit_cascade.cascades.tiny.pairs"),
        ({"candidates": 1}, "fit_cascade.cascades.tiny.candidates"),
        ({"train": {"stepz": 3}}, "fit_cascade.cascades.tiny.train.stepz"),
    ],
)
def test_a_bad_fit_cascade_key_is_named(tmp_path: Path, bad: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_stage_config(FitCascadeConfig, "fit_cascade", _params(tmp_path, {**TINY, **bad}))
    assert load_stage_config(FitCascadeConfig, "fit_cascade", _params(tmp_path, TINY))


@pytest.mark.parametrize("kind", KINDS)
def test_the_cascade_proposer_refines_every_candidate_pass_by_pass(
    kind: str, plain: Callable[[str], ControlModel]
) -> None:
    model = plain(kind)
    cascade = CascadeModel(copy.deepcopy(model), hidden=8)
    calls: list[torch.Tensor] = []
    original = cascade.sample

    def counting(history, x_cond, generator, **options):  # type: ignore[no-untyped-def]
        calls.append(x_cond.clone())
        return original(history, x_cond, generator, **options)

    cascade.sample = counting  # type: ignore[method-assign]
    base = ModelProposer(model)
    history = histories(model, 3)
    for passes in (1, 2):
        calls.clear()
        proposal = CascadeProposer(base, cascade, passes).propose(
            history, 5, torch.Generator().manual_seed(0)
        )
        assert len(calls) == passes
        assert all(c.shape == (15, model.horizon, model.transition_dim) for c in calls)
        assert proposal.actions.shape == (3, 5, model.spec.action_exec, model.act_dim)
        assert proposal.z0 is not None and proposal.z0.shape == (
            3,
            5,
            model.horizon,
            model.transition_dim,
        )
        if model.role == "planner":
            assert proposal.plan_states is not None
            assert proposal.plan_states.shape == (3, 5, model.horizon, model.obs_dim)
        else:
            assert proposal.plan_states is None
    # the second pass refines the first pass's output
    refined = original(
        history.repeat_interleave(5, 0), calls[0], torch.Generator().manual_seed(1)
    ).x0
    assert refined.shape == calls[1].shape
    with pytest.raises(ValueError, match="passes"):
        CascadeProposer(base, cascade, 0)


def _fit_argv(
    tmp_path: Path, dataset: TransitionDataset, model: ControlModel, critic: IQLCritic
) -> list[str]:
    """The tiny cascade's inputs written under `tmp_path`, and the stage's arguments (the last
    four: `--out` and `--params`)."""
    provenance = {
        "env_id": "nav1d",
        "dataset_kind": "full",
        "behavior_policy": "uniform",
        "seed": 0,
    }
    stored = dataclasses.replace(dataset, attrs={**dataset.attrs, **provenance})
    data = write_dataset(tmp_path / "full.hdf5", stored)
    save_model(tmp_path / "m" / "model.safetensors", model)
    save_critic(tmp_path / "critic.safetensors", critic)
    params = _params(tmp_path, TINY)
    return [
        "fit_cascade",
        "--name",
        "tiny",
        "--model",
        str(tmp_path / "m" / "model.safetensors"),
        "--foundation",
        str(tmp_path / "m" / "model.safetensors"),
        "--dataset",
        str(data),
        "--critic",
        str(tmp_path / "critic.safetensors"),
        "--out",
        str(tmp_path / "tiny"),
        "--params",
        str(params),
    ]


def test_a_tiny_fit_runs_saves_and_loads_for_evaluation(
    tmp_path: Path,
    dataset: TransitionDataset,
    plain: Callable[[str], ControlModel],
    critic: IQLCritic,
) -> None:
    model = plain("diffuser")
    argv = _fit_argv(tmp_path, dataset, model, critic)
    out = tmp_path / "tiny"
    assert run_cli("dmc_align", STAGES, argv) == 0
    path = out / "model.safetensors"
    assert is_cascade_checkpoint(path) and (out / "metrics.json").is_file()
    assert (out / "live" / "metrics.json").is_file()
    cascade = load_cascade(path)
    assert cascade.source is not None
    for (name, a), b in zip(
        cascade.source.state_dict().items(), model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)
    # training moved the cascade away from the foundation
    assert cascade.refiner.net.embed.sample[-1].weight.abs().sum() > 0
    # the same stage again gives the same cascade, whatever the global random state
    torch.manual_seed(99)
    again = tmp_path / "again"
    assert run_cli("dmc_align", STAGES, [*argv[:-4], "--out", str(again), *argv[-2:]]) == 0
    for (name, a), b in zip(
        cascade.state_dict().items(),
        load_cascade(again / "model.safetensors").state_dict().values(),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    run = RunSpec(model="tiny", stage="cascade_x2", cascade_passes=2)
    loaded, proposer = load_proposer(str(path), run, "cpu", "test")
    assert isinstance(proposer, CascadeProposer) and proposer.passes == 2
    assert loaded.kind == "diffuser"
    proposal = proposer.propose(histories(loaded, 2), 3, torch.Generator().manual_seed(0))
    assert proposal.actions.shape == (2, 3, 1, 1)
    with pytest.raises(ConfigError, match="cascade_passes"):
        load_proposer(str(path), RunSpec(model="tiny"), "cpu", "test")
    with pytest.raises(ConfigError, match="cascade_passes"):
        load_proposer(str(tmp_path / "m" / "model.safetensors"), run, "cpu", "test")
    # A bad pair mode stops the stage with exit status 2 before any work.
    bad = _params(tmp_path, {**TINY, "pairs": "nope"})
    assert run_cli("dmc_align", STAGES, [*argv[:-1], str(bad)]) == 2


def test_a_snapshot_is_keyed_by_the_bytes_of_every_input_not_the_dataset_alone(
    tmp_path: Path,
    dataset: TransitionDataset,
    plain: Callable[[str], ControlModel],
    critic: IQLCritic,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pairs drawn by another critic (or model) must not continue a snapshot of this one's: a
    # foundation retrained, or a re-queued experiment sharing a resume root, would otherwise
    # resume a cascade trained on other pairs.
    digests: list[str | None] = []

    class Recorded(fit_cascade.CascadeTrainingRun):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            digests.append(args[-1])
            raise _StoppedBeforeTrainingError

    monkeypatch.setattr(fit_cascade, "CascadeTrainingRun", Recorded)
    argv = _fit_argv(tmp_path, dataset, plain("diffuser"), critic)
    with pytest.raises(_StoppedBeforeTrainingError):
        run_cli("dmc_align", STAGES, argv)
    with pytest.raises(_StoppedBeforeTrainingError):
        run_cli("dmc_align", STAGES, argv)  # the same inputs: the same key
    other = copy.deepcopy(critic)
    with torch.no_grad():
        next(other.parameters()).add_(0.5)
    save_critic(tmp_path / "critic.safetensors", other)
    with pytest.raises(_StoppedBeforeTrainingError):
        run_cli("dmc_align", STAGES, argv)
    assert digests[0] == digests[1] != digests[2]


class _StoppedBeforeTrainingError(Exception):
    """Raised in place of training, once the stage has computed the snapshot's key."""
