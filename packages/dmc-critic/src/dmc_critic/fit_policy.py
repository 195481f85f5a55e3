"""Stage `fit_policy`: train one baseline policy, BC or IQL's own (AWR), on a dataset.

    python -m dmc_critic fit_policy --name iql --dataset data/datasets/hopper/random.hdf5 \
        --critic data/critics/full/critic.safetensors --out data/models/iql

Writes `<out>/model.safetensors` with its `model.yaml` sidecar (a `dmc-policy` checkpoint: it
sits where `evaluate` reads models, which tells it apart from a diffusion model by its kind) and
learning curves under `<out>/live/`: the loss, the mean and largest weight, and the advantage
Q(s, mu(s)) - V(s) of the policy's mean action on fixed dataset states. Every `checkpoint_every`
steps it leaves a resumable snapshot in `<out>/.resume/`; a killed run started again continues
from there, as long as its settings, dataset and critic are unchanged.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dmc_core.checkpoint import file_sha256
from dmc_core.config import BaseConfig, entry, knob
from dmc_core.data import TransitionDataset, read_dataset
from dmc_core.errors import ConfigError
from dmc_core.pretrain import learning_rate
from dmc_core.training import EMA, ResumableRun, World, adam, choose_device, descend, fingerprint
from dmc_critic.batches import TransitionSampler
from dmc_critic.checkpoints import critic_learned_from, load_critic
from dmc_critic.iql import IQLCritic
from dmc_critic.policies import GaussianPolicy, PolicySpec, build_policy, regression_loss
from dmc_critic.policies.checkpoints import save_policy

__all__ = ["FitPolicyConfig", "PolicyRun", "fit_policy"]

log = logging.getLogger(__name__)

#: Dataset states on which the advantage of the policy's mean action is logged.
PROBE_STATES = 1024


@dataclass(frozen=True)
class FitPolicyConfig:
    """Stage `fit_policy`: the baseline policies, one DVC stage instance per entry."""

    base: BaseConfig = knob(factory=BaseConfig)
    policies: dict[str, PolicySpec] = knob(factory=dict)
    device: str = knob("auto", choices=("auto", "cpu", "cuda"), doc="auto: a GPU if present")


def fit_policy(config: FitPolicyConfig, args: argparse.Namespace) -> None:
    """Train `config.policies[args.name]` on `args.dataset` with the critic `args.critic`; write
    it to `args.out`."""
    spec = entry(config.policies, args.name, "fit_policy.policies", args.params)
    critic = load_critic(args.critic)
    if critic_learned_from(args.critic, critic) != spec.dataset:
        raise ConfigError(
            f"{args.params}: fit_policy.policies.{args.name}.critic: the critic {args.critic} "
            f"learned from '{critic.spec.dataset}', the policy learns from '{spec.dataset}'"
        )
    if critic.spec.action_chunk != 1:
        raise ConfigError(
            f"{args.params}: fit_policy.policies.{args.name}.critic: the critic {args.critic} "
            f"scores chunks of {critic.spec.action_chunk} actions; a baseline policy acts one "
            f"action at a time and needs a critic with action_chunk 1"
        )
    dataset = read_dataset(args.dataset)
    world = World(0, 1, choose_device(config.device))
    inputs = fingerprint(file_sha256(args.dataset), file_sha256(args.critic))
    out, seed = Path(args.out), config.base.seed
    PolicyRun(spec, dataset, critic, out, world, seed, args.name, inputs).train()


class PolicyRun(ResumableRun):
    """One `fit_policy` run: policy, optimiser, the fixed critic, snapshot; `train()` runs it."""

    stage = "fit_policy"

    def __init__(
        self,
        spec: PolicySpec,
        dataset: TransitionDataset,
        critic: IQLCritic,
        out: Path,
        world: World,
        seed: int,
        name: str,
        inputs_digest: str | None = None,
    ) -> None:
        """Build the policy (normalisers fitted to the dataset), its optimiser and sampler (the
        critic's batches); the critic stays fixed. `inputs_digest` (of the dataset and critic
        files) keys the snapshot."""
        self.spec, self.schedule = spec, spec.train
        self.out, self.world, self.seed, self.name = out, world, seed, name
        self.critic = critic.to(world.device).eval()
        torch.manual_seed(seed)
        self.policy: GaussianPolicy = build_policy(spec, dataset).to(world.device)
        self.optimizer = adam(self.policy.parameters(), spec.train.lr)
        self.sampler = TransitionSampler(dataset, critic.spec, world.device)
        rows = np.random.default_rng(seed).permutation(len(dataset))[:PROBE_STATES]
        self.probe = self.sampler.batch(torch.as_tensor(rows, device=world.device)).obs
        self.snapshot = self.make_snapshot(spec, dataset, inputs_digest)
        self.policy.train()

    @property
    def parameters(self) -> int:
        """Trainable parameters (mean network and log-std)."""
        return sum(p.numel() for p in self.policy.parameters())

    def step(self, step: int, generators: tuple[torch.Generator, ...]) -> dict[str, float]:
        """One Adam step on the weighted log-likelihood of a batch, at the cosine's rate."""
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.spec.train, step)  # type: ignore[arg-type]
        batch = self.sampler.sample(self.spec.train.batch_size, generators[0])
        loss, metrics = regression_loss(self.policy, batch, self.critic, self.spec)
        descend(loss, self.optimizer, self.policy, grad_clip=0.0)
        return metrics

    def gauges(self) -> dict[str, float]:
        """The learning rate in use, and the advantage of the policy's mean action."""
        return {"lr": self.optimizer.param_groups[0]["lr"], "advantage": self.advantage()}

    @torch.no_grad()
    def advantage(self) -> float:
        """Mean of Q(s, mu(s)) - V(s) over the probe states: above 0, the policy's own action
        beats what the critic expects of the data's actions there."""
        q = self.critic.q(self.probe, self.policy.mean_action(self.probe))
        return float((q - self.critic.v(self.probe)).mean())

    def trained(self) -> tuple[torch.nn.Module, EMA | None, torch.optim.Optimizer]:
        """What a snapshot holds."""
        return self.policy, None, self.optimizer

    def finish(self, summary: dict[str, float]) -> Path:
        """Save the policy with the run's summary and its final advantage."""
        self.policy.eval()
        path = self.out / "model.safetensors"
        advantage = self.advantage()
        metadata = {
            "name": self.name,
            "steps": self.spec.train.steps,
            "parameters": self.parameters,
            "advantage": advantage,
            **summary,
        }
        save_policy(path, self.policy, metadata)
        log.info(
            "%s: wrote %s (%s, %d parameters; advantage of the mean action %.3f)",
            self.name,
            path,
            self.spec.kind,
            self.parameters,
            advantage,
        )
        return path
