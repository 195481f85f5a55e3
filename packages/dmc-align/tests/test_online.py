"""Online fine-tuning inside a pass: every round rolls the model out, grows the buffer and the
training conditions, trains the critic, and re-bases the schedule."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from dmc_align import align
from dmc_align.align import run_pass
from dmc_align.conditions import ConditionPool
from dmc_align.lora import attach_lora
from dmc_align.online import OnlineTuner
from dmc_align.progress import PassProgress
from dmc_align.spec import LoraSpec, OnlineSpec, PassSpec
from dmc_core.config import from_plain
from dmc_core.data import TransitionDataset
from dmc_core.models import ControlModel
from dmc_critic import IQLCritic
from dmc_envs.evaluation.episodes import EpisodeResult
from dmc_envs.tasks import task_for_dataset

EPISODES, EVERY, STEPS = 3, 2, 5  # rounds after updates 2 and 4


class RecordingTuner(OnlineTuner):
    """The pass's own tuner, recording the buffer and the conditions around every round."""

    made: ClassVar[list[RecordingTuner]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sizes: list[tuple[int, int, int, int]] = []  # buffer, conditions: before, after
        RecordingTuner.made.append(self)

    def round(self) -> None:
        buffer = 0 if self.buffer is None else len(self.buffer)
        conditions = len(self.conditions)
        super().round()
        assert self.buffer is not None
        self.sizes.append((buffer, len(self.buffer), conditions, len(self.conditions)))


def test_online_rounds_grow_the_data_and_train_the_critic(
    fitted: Callable[[str], ControlModel],
    critic: IQLCritic,
    dataset: TransitionDataset,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A round that adds nothing, trains no critic, is not seen by the schedule, or whose
    returns miss the pass's curves fails this."""
    monkeypatch.setattr(align, "OnlineTuner", RecordingTuner)
    monkeypatch.setattr(RecordingTuner, "made", [])
    model = attach_lora(fitted("policy"), LoraSpec(rank=2, alpha=2.0))
    online = {
        "enabled": True,
        "every": EVERY,
        "episodes": EPISODES,
        "critic_steps": 3,
        "critic_batch": 16,
    }
    values = {"model": "m", "after": "m", "dataset": "d", "critic": "c", "method": "sft"}
    knobs = {
        "max_steps": STEPS,
        "eval_every": STEPS,
        "conditions": 4,
        "held_out": 8,
        "sft": {"candidates": 2, "batch_size": 4},
        "online": online,
    }
    spec = from_plain(PassSpec, {**values, **knobs}, "test", "pass")
    before = {k: v.clone() for k, v in critic.state_dict().items()}

    progress = PassProgress("p", spec, tmp_path)
    outcome = run_pass("p", spec, model, dataset, critic, seed=0, progress=progress)

    (tuner,) = RecordingTuner.made
    horizon = int(dataset.attrs["env_kwargs"]["horizon"])
    added = EPISODES * horizon
    assert tuner.rounds == 2 and len(tuner.returns) == 2
    # Each round adds its episodes' transitions to the buffer and their histories to the pool.
    assert tuner.sizes == [
        (0, added, tuner.sizes[0][2], tuner.sizes[0][2] + added),
        (added, 2 * added, tuner.sizes[0][2] + added, tuner.sizes[0][2] + 2 * added),
    ]
    # The pool the pass samples from is the tuner's: it holds the rolled-out histories.
    assert tuner.sizes[0][2] == len(dataset) - spec.held_out
    changed = [k for k, v in critic.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "the critic did not change"
    assert all(torch.isfinite(v).all() for v in critic.state_dict().values())
    updates = [e for e in outcome.events if e["kind"] == "critic_updated"]
    assert [e["step"] for e in updates] == [EVERY, 2 * EVERY]
    assert not critic.training and not any(p.requires_grad for p in critic.parameters())
    # Each round's mean return is on the pass's curves at the update it followed.
    assert progress.curves is not None
    curves = progress.curves.state()
    assert curves["online/return"] == [[EVERY, tuner.returns[0]], [2 * EVERY, tuner.returns[1]]]
    scale = tuner.task.returns
    assert [v for _, v in curves["online/normalized_return"]] == pytest.approx(
        [scale.normalized(r) for r in tuner.returns]
    )
    assert [v for _, v in curves["online/buffer_transitions"]] == [added, 2 * added]
    assert "online/success_rate" not in curves  # Nav1D defines no success


class SucceedingFirstEpisode(OnlineTuner):
    """Rolls out as the pass does, then reports the first episode of each round a success
    (Nav1D has none), as a task that defines success would."""

    def roll_out(self) -> EpisodeResult:
        result = super().roll_out()
        successes = np.zeros(len(result.returns), dtype=bool)
        successes[0] = True
        return dataclasses.replace(result, successes=successes)


def test_an_online_round_reports_its_success_rate_where_the_task_defines_success(
    fitted: Callable[[str], ControlModel],
    critic: IQLCritic,
    dataset: TransitionDataset,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A round whose episodes' successes are dropped, or averaged wrongly, fails this."""
    model = attach_lora(fitted("policy"), LoraSpec(rank=2, alpha=2.0))
    pool = ConditionPool.from_dataset(dataset, model.history_len, 8, torch.Generator())
    online = {"enabled": True, "episodes": 4, "critic_steps": 0}
    reported: list[tuple[int, dict[str, float]]] = []
    tuner = SucceedingFirstEpisode(
        from_plain(OnlineSpec, online, "t", "o"),
        model,
        critic,
        dataset,
        task_for_dataset(dataset.attrs, "test"),
        pool,
        seed=0,
        report=lambda step, measured: reported.append((step, measured)),
    )
    with caplog.at_level(logging.INFO, logger="dmc_align.online"):
        tuner(50)
    assert reported[0][0] == 50 and reported[0][1]["success_rate"] == 0.25
    assert "online round 1: mean return" in caplog.text and "success 25%" in caplog.text


def test_an_online_round_on_a_mujoco_task_records_terminations_and_trains_the_critic() -> None:
    """A round that drops an episode's rows, loses its terminal, or copies no new data fails."""
    from dmc_core.models import ModelSpec, build_model
    from dmc_core.models.spec import FormulationSpec
    from dmc_critic import CriticSpec, build_critic
    from dmc_envs.tasks import CollectSpec, build_task

    hopper = build_task("hopper")
    data, attrs = hopper.collect(CollectSpec("uniform", 0, 400, seed=0, options={}))
    dataset = TransitionDataset(**data.arrays(), attrs={**hopper.provenance(), **attrs})
    torch.manual_seed(0)
    spec = ModelSpec(
        kind="diffusion_policy",
        horizon=2,
        history=2,
        backbone={"name": "mlp", "hidden": 16, "blocks": 1},
        formulation=FormulationSpec(steps=4),
    )
    model = attach_lora(build_model(spec, dataset), LoraSpec(rank=2, alpha=2.0))
    critic = build_critic(CriticSpec(hidden=16), dataset)
    for parameter in critic.parameters():
        parameter.requires_grad_(False)
    before = {k: v.clone() for k, v in critic.state_dict().items()}
    pool = ConditionPool.from_dataset(dataset, model.history_len, 8, torch.Generator())
    online = {"enabled": True, "episodes": 3, "critic_steps": 2, "critic_batch": 8}
    tuner = OnlineTuner(
        from_plain(OnlineSpec, online, "t", "o"), model, critic, dataset, hopper, pool, seed=0
    )
    conditions = len(pool)
    tuner.round()

    buffer = tuner.buffer
    assert buffer is not None and buffer.num_episodes == 3
    # A random-ish policy makes the hopper fall well before 1000 steps: every episode ends
    # in a termination, and the buffer holds exactly the rows of the three episodes.
    assert buffer.terminals.sum() == 3 and not buffer.timeouts.any()
    assert len(buffer) == len(pool) - conditions
    np.testing.assert_array_equal(
        buffer.episode_ends, np.cumsum([s.stop - s.start for s in buffer.episode_slices()]) - 1
    )
    changed = [k for k, v in critic.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "the critic did not train on the round"


@pytest.mark.parametrize(
    ("knobs", "piece"),
    [({"reward": "plan_return"}, "plan reward"), ({"dynamics_weight": 1.0}, "differentiable")],
)
def test_a_pass_needing_a_piece_hopper_lacks_stops_before_training_naming_it(
    knobs: dict[str, Any], piece: str
) -> None:
    from dmc_core.models import ModelSpec, build_model
    from dmc_critic import CriticSpec, build_critic
    from dmc_envs.tasks import CollectSpec, MissingPieceError, build_task

    hopper = build_task("hopper")
    data, attrs = hopper.collect(CollectSpec("uniform", 0, 200, seed=0, options={}))
    dataset = TransitionDataset(**data.arrays(), attrs={**hopper.provenance(), **attrs})
    spec = ModelSpec(kind="diffuser", horizon=4, backbone={"name": "unet", "dim": 8})
    model = attach_lora(build_model(spec, dataset), LoraSpec(rank=2, alpha=2.0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    values = {"model": "m", "after": "m", "dataset": "d", "critic": "c", "method": "sft"}
    values |= {"held_out": 8, **knobs}
    pass_spec = from_plain(PassSpec, values, "test", "pass")
    critic = build_critic(CriticSpec(hidden=8), dataset)
    with pytest.raises(MissingPieceError, match=rf"needs the task's {piece}.*'hopper'"):
        run_pass("p", pass_spec, model, dataset, critic, seed=0)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
