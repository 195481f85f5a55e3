"""Online fine-tuning (spec §4.6): roll the model out, add the data, keep training the critic.

Every `online.every` updates of a pass, the current model (one sample per decision) plays
`online.episodes` episodes of the dataset's task through its vector environment, with
terminations and time-limit ends recorded as the dataset layout records them. Their transitions
join an online buffer; the critic then takes `online.critic_steps` IQL updates on batches that
draw `online_fraction` of their rows from that buffer and the rest from the offline dataset; and
the histories the rollouts visited join the pass's training conditions. So on a dataset with
partial coverage the critic learns about the states the aligned model actually reaches.

The offline dataset is put on the critic's device once; a round copies only the buffer, so its
cost grows with the new data and not with the dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch

from dmc_align.conditions import ConditionPool
from dmc_align.lora import sampling_mode
from dmc_align.refinement import RefinedConditions, Refinement
from dmc_align.spec import OnlineSpec
from dmc_core.data import TransitionDataset, concatenate_datasets
from dmc_core.models import ControlModel, WindowSampler
from dmc_core.training.resume import (
    load_optimizer_tensors,
    optimizer_tensors,
    prefixed_tensors,
    unprefixed,
)
from dmc_critic import IQLCritic, TransitionSampler
from dmc_critic.batches import TransitionBatch
from dmc_critic.fit import critic_optimizer, train_step
from dmc_envs.evaluation.cascade import CascadeProposer
from dmc_envs.evaluation.episodes import EpisodeResult, Selection, roll_out
from dmc_envs.evaluation.proposers import ModelProposer, Proposer
from dmc_envs.tasks import Task

__all__ = ["OnlineTuner"]

log = logging.getLogger(__name__)


def _proposer(model: ControlModel) -> Proposer:
    """The model's own candidates; a cascade's are its source's samples, refined once."""
    if isinstance(model, Refinement):
        return CascadeProposer(ModelProposer(model.source), model.cascade)
    return ModelProposer(model)


class OnlineTuner:
    """The online rounds of one pass (see the module docstring)."""

    def __init__(
        self,
        spec: OnlineSpec,
        model: ControlModel,
        critic: IQLCritic,
        dataset: TransitionDataset,
        task: Task,
        conditions: ConditionPool | RefinedConditions,
        seed: int,
        report: Callable[[int, dict[str, float]], None] | None = None,
    ) -> None:
        """Keep what the rounds need; the critic gets its own optimiser (IQL's lr). `report`
        receives, after each round, the update it followed and the round's measurements."""
        self.spec, self.model, self.critic = spec, model, critic
        self.report = report
        self.dataset, self.task = dataset, task
        self.conditions, self.seed = conditions, seed
        self._offline: TransitionSampler | None = None  # built at the first round
        self.buffer: TransitionDataset | None = None
        self.rounds = 0
        self.optimizer = critic_optimizer(critic, critic.spec.train)
        self.returns: list[float] = []
        self.success_rates: list[float] = []  # stays empty on a task without success

    def __call__(self, step: int) -> bool:
        """Run a round if one is due after update `step`; True if the critic changed."""
        if step % self.spec.every:
            return False
        self.round()
        if self.report is not None:
            self.report(step, self.measurements())
        return self.spec.critic_steps > 0

    def measurements(self) -> dict[str, float]:
        """The last round's mean episode return, raw and normalised by the task, its
        success rate (where the task defines success), and the buffer's size."""
        assert self.buffer is not None, "no round has run"
        mean = self.returns[-1]
        success = {"success_rate": self.success_rates[-1]} if self.success_rates else {}
        return {
            "return": mean,
            "normalized_return": float(self.task.returns.normalized(mean)),
            **success,
            "buffer_transitions": float(len(self.buffer)),
        }

    def round(self) -> None:
        """Roll out, grow the buffer and the conditions, train the critic."""
        self.rounds += 1
        result = self.roll_out()
        new = result.transitions
        self.buffer = new if self.buffer is None else concatenate_datasets([self.buffer, new])
        self.conditions.extend(_histories(new, self.model.history_len))
        self.returns.append(float(result.returns.mean()))
        if result.successes is not None:
            self.success_rates.append(float(result.successes.mean()))
        log.info(
            "online round %d: mean return %.3f%s, buffer %d transitions",
            self.rounds,
            self.returns[-1],
            f", success {self.success_rates[-1]:.0%}" if result.successes is not None else "",
            len(self.buffer),
        )
        self.train_critic()

    def roll_out(self) -> EpisodeResult:
        """Episodes of the current model, one sample per decision."""
        proposer = _proposer(self.model)
        try:
            with sampling_mode(self.model):
                return roll_out(
                    self.task,
                    proposer,
                    Selection("none", 1),
                    None,
                    episodes=self.spec.episodes,
                    seed=self.seed + 7919 * self.rounds,
                )
        finally:
            self.model.train()

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """What a pass snapshot keeps: the critic, its optimiser, the rolled-out transitions
        and the conditions they added (a `dmc_align.snapshots.Stateful`)."""
        tensors = prefixed_tensors("critic/", self.critic.state_dict())
        tensors |= prefixed_tensors("optim/", optimizer_tensors(self.optimizer))
        if self.buffer is not None:
            arrays = self.buffer.arrays()
            tensors |= {f"buffer/{k}": torch.from_numpy(v.copy()) for k, v in arrays.items()}
        tensors["conditions"] = self.conditions.added()
        return tensors, {"rounds": self.rounds, "returns": self.returns}

    def load_state(self, tensors: Mapping[str, torch.Tensor], record: Mapping[str, Any]) -> None:
        """Continue from `state` output."""
        self.critic.load_state_dict(unprefixed(tensors, "critic/"))
        load_optimizer_tensors(self.optimizer, unprefixed(tensors, "optim/"))
        buffer = unprefixed(tensors, "buffer/")
        self.buffer = (
            TransitionDataset(**{k: v.numpy() for k, v in buffer.items()}) if buffer else None
        )
        self.conditions.extend(tensors["conditions"])
        self.rounds, self.returns = int(record["rounds"]), list(record["returns"])

    def train_critic(self) -> None:
        """`critic_steps` IQL updates on offline + online rows in the configured mixture."""
        assert self.buffer is not None
        device, spec = _device(self.critic), self.critic.spec
        if self._offline is None:
            self._offline = TransitionSampler(self.dataset, spec, device)
        # The buffer's rewards are scaled like the dataset's, whatever the buffer's own spread.
        factor = self._offline.reward_factor
        fresh = TransitionSampler(self.buffer, spec, device, factor=factor)
        offline, online = len(self.dataset), len(self.buffer)
        generator = torch.Generator().manual_seed(self.seed + self.rounds)
        batch = self.spec.critic_batch
        from_online = max(1, round(self.spec.online_fraction * batch))
        trainable = list(self.critic.trainable_parameters())
        for parameter in trainable:
            parameter.requires_grad_(True)
        self.critic.train()
        for _ in range(self.spec.critic_steps):
            old = torch.randint(offline, (batch - from_online,), generator=generator)
            new = torch.randint(online, (from_online,), generator=generator)
            rows = self._offline.batch(old.to(device)), fresh.batch(new.to(device))
            train_step(self.critic, self.optimizer, TransitionBatch.concatenate(*rows))
        self.critic.eval()
        for parameter in trainable:
            parameter.requires_grad_(False)


def _histories(dataset: TransitionDataset, length: int) -> torch.Tensor:
    """Observation histories of every row of episode-major rolled-out transitions."""
    windows = WindowSampler(dataset, horizon=1, history=length)
    return windows.window(torch.arange(windows.num_starts)).history


def _device(critic: IQLCritic) -> torch.device:
    return next(critic.parameters()).device
