"""Stage `align`: one pass of the alignment recipe (one DVC stage instance per pass).

    python -m dmc_align align --name diffuser_qvpg \
        --foundation data/models/diffuser/model.safetensors --init data/models/diffuser \
        --dataset data/datasets/nav1d/full.hdf5 --critic data/critics/full/critic.safetensors \
        --out data/models/diffuser_qvpg

It loads the foundation (or a `fit_cascade` output: the pass then aligns the cascade, see
`dmc_align.refinement`), attaches the recipe's LoRA adapters and, if `--init` is a previous
pass's directory, that pass's adapters; runs the pass's method under the automatic schedule
(`dmc_align.schedule`), snapshotting its state in `--out/.resume/` so that a killed pass
continues where it was (`dmc_align.snapshots`); and writes into `--out`:
    model.safetensors (+ .yaml)    the model with the adapters merged: every stage loads it like
                                   a foundation, and the next pass's `--init` reads the adapters
    adapter.safetensors (+ .yaml)  the adapters alone, with their LoRA spec
    metrics.json                   the objective before and after, why it stopped, every event
                                   (convergence, rollbacks with their cause, critic updates)
    live/                          curves of the objective, the loss, the learning rate
    timing.json                    the pass's time (ignored by DVC: no stage depends on it)
    critic.safetensors (+ .yaml)   the critic as the pass left it (changed by online fine-tuning)
"""

from __future__ import annotations

import argparse
import json
import logging
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dmc_align.conditions import ConditionPool
from dmc_align.lora import attach_lora, load_adapters, merged_copy, save_adapters
from dmc_align.methods import AlignContext, build_method
from dmc_align.online import OnlineTuner
from dmc_align.progress import PassProgress
from dmc_align.refinement import ObservedReward, RefinedConditions, Refinement
from dmc_align.rewards import DynamicsConsistent, PlanReturn, QFirstAction, RewardModel
from dmc_align.schedule import PassOutcome, PassRunner
from dmc_align.snapshots import PassSnapshot, Stateful
from dmc_align.sources import check_learned_from, learned_name
from dmc_align.spec import METHOD_MODEL_KINDS, AlignConfig, PassSpec
from dmc_core.atomic import atomic_write_text
from dmc_core.checkpoint import file_sha256
from dmc_core.config import entry, to_plain
from dmc_core.data import TransitionDataset, read_dataset
from dmc_core.errors import ConfigError, DivergenceError
from dmc_core.models import ControlModel, WindowSampler, load_model, save_model
from dmc_core.models.cascade import is_cascade_checkpoint, load_cascade, save_cascade
from dmc_core.seeding import torch_generator
from dmc_core.training import Snapshot, choose_device, fingerprint
from dmc_core.training.loop import TIMING_FILE
from dmc_critic import IQLCritic, critic_learned_from, load_critic, save_critic
from dmc_envs.tasks import Task, task_for_dataset

__all__ = ["align", "run_pass"]

log = logging.getLogger(__name__)
OBJECTIVE_SEED_OFFSET = 17


def align(config: AlignConfig, args: argparse.Namespace) -> None:
    """Run pass `args.name` of `config.passes` (see the module docstring)."""
    spec = entry(config.passes, args.name, "align.passes", args.params)
    device = choose_device(config.device)
    model = load_aligned_model(args.foundation, str(device))
    dataset = read_dataset(args.dataset)
    critic = load_critic(args.critic, device=str(device))
    _check_sources(args, spec, model, critic, dataset)
    attach_lora(model, config.lora, seed=config.base.seed)
    continued = load_adapters(args.init, model, config.lora)
    if (spec.after != spec.model) != continued:
        raise ConfigError(
            f"{args.params}: align.passes.{args.name}.after is '{spec.after}' but --init "
            f"{args.init} {'holds' if continued else 'holds no'} adapters"
        )
    out = Path(args.out)
    resume = Snapshot.of_output(out, _fingerprint(args, spec, config))
    with PassProgress(args.name, spec, out) as progress:
        seed = config.base.seed
        outcome = run_pass(args.name, spec, model, dataset, critic, seed, progress, resume)
    if outcome.stop_reason == "gave_up":
        raise DivergenceError(
            f"align {args.name}: gave up after {spec.collapse.max_rollbacks + 1} rollbacks "
            f"(last: {_last_collapse(outcome)}); nothing was saved: see the log, then lower "
            f"align.passes.{args.name}.lr or raise its collapse limits"
        )
    _write_outputs(out, args.name, spec, config, model, outcome)
    # The critic as the pass leaves it: fine-tuned with online data, else the one it was given.
    save_critic(
        out / "critic.safetensors", critic, {"pass": args.name, "online": spec.online.enabled}
    )
    progress.finish(out / TIMING_FILE)
    resume.clear()


def _fingerprint(args: argparse.Namespace, spec: PassSpec, config: AlignConfig) -> str:
    """What a pass's snapshot must match: its settings and the bytes of every input file."""
    inputs = [args.foundation, args.dataset, args.critic, Path(args.init) / "adapter.safetensors"]
    hashes = [file_sha256(path) if Path(path).is_file() else None for path in inputs]
    return fingerprint(to_plain(spec), to_plain(config.lora), config.base.seed, hashes)


def _last_collapse(outcome: PassOutcome) -> str:
    collapses = [e for e in outcome.events if "action" in e]
    return f"{collapses[-1]['kind']} at update {collapses[-1]['step']}" if collapses else "none"


def load_aligned_model(path: str, device: str) -> ControlModel:
    """The model a pass aligns: a foundation, or a cascade bound to the model it refines."""
    if is_cascade_checkpoint(path):
        return Refinement(load_cascade(path, device=device))  # type: ignore[return-value]
    return load_model(path, device=device)


def run_pass(
    name: str,
    spec: PassSpec,
    model: ControlModel,
    dataset: TransitionDataset,
    critic: IQLCritic,
    seed: int,
    progress: PassProgress | None = None,
    resume: Snapshot | None = None,
) -> PassOutcome:
    """Align `model` (adapters attached) by one pass; it ends on the best state it saw.

    `progress` shows and logs it (default: a bar only); with `resume`, the pass snapshots its
    state there every `spec.snapshot_every` updates and continues from a matching snapshot it
    finds (`dmc_align.snapshots`).

    Raises:
        ConfigError: the pass's method cannot align this kind of model (EDA needs a BDM).
    """
    _check_method(name, spec, model)
    model.train()
    generator = torch_generator(seed + zlib.crc32(name.encode()) % 100_000)
    conditions: ConditionPool | RefinedConditions = ConditionPool.from_dataset(
        dataset, model.history_len, spec.held_out, torch_generator(seed)
    )
    if isinstance(model, Refinement):  # each history with a sample of the source to refine
        conditions = RefinedConditions(conditions, model, torch_generator(seed + 1))
    windows = WindowSampler(dataset, model.horizon, model.history_len)
    # The task is built only when the pass needs a piece of it: q_first_action offline needs none.
    task = _task(name, spec, dataset) if _needs_task(spec) else None
    context = AlignContext(model, _reward(name, spec, model, critic, task), spec, windows)
    if progress is None:
        progress = PassProgress(name, spec, None)
    online = None
    if spec.online.enabled:
        assert task is not None
        online = OnlineTuner(
            spec.online, model, critic, dataset, task, conditions, seed, progress.online_round
        )
    method = build_method(context)
    parts: dict[str, Stateful] = {"progress": progress}
    if online is not None:
        parts["online"] = online
    if isinstance(method, Stateful):  # a method that carries data across its batches
        parts["method"] = method
    runner = PassRunner(
        context,
        method,
        conditions,
        generator,
        objective_seed=seed + OBJECTIVE_SEED_OFFSET,
        on_round=lambda step: progress.advance() or (online is not None and online(step)),
        on_measure=progress.measured,
    )
    snapshots = None if resume is None else PassSnapshot(resume, spec.snapshot_every, parts)
    outcome = runner.run(snapshots)
    log.info(
        "%s: objective %.4f -> %.4f (best at step %d of %d; %s; %d events)",
        name,
        outcome.initial_objective,
        outcome.best_objective,
        outcome.best_step,
        outcome.steps,
        outcome.stop_reason,
        len(outcome.events),
    )
    return outcome


def _needs_task(spec: PassSpec) -> bool:
    return spec.online.enabled or spec.reward == "plan_return" or spec.dynamics_weight > 0


def _task(name: str, spec: PassSpec, dataset: TransitionDataset) -> Task:
    """The dataset's task, with every piece this pass needs (else an error naming it)."""
    task = task_for_dataset(dataset.attrs, f"align.passes.{name}.dataset '{spec.dataset}'")
    if spec.reward == "plan_return":
        task.require("plan_reward", f"align.passes.{name}.reward plan_return")
    if spec.dynamics_weight > 0:
        task.require("differentiable_dynamics", f"align.passes.{name}.dynamics_weight > 0")
    return task


def _reward(
    name: str, spec: PassSpec, model: ControlModel, critic: IQLCritic, task: Task | None
) -> RewardModel:
    if model.role != "planner" and (spec.reward == "plan_return" or spec.dynamics_weight > 0):
        knob = "reward plan_return" if spec.dynamics_weight == 0 else "dynamics_weight > 0"
        raise ConfigError(f"{knob} needs a planner; '{spec.model}' is a {model.kind}")
    reward: RewardModel = QFirstAction(critic)
    if spec.reward == "plan_return":
        assert task is not None and task.plan_reward is not None
        reward = PlanReturn(task.plan_reward)
    if spec.dynamics_weight > 0:
        assert task is not None and task.differentiable_dynamics is not None
        reward = DynamicsConsistent(
            reward, task.differentiable_dynamics, spec.dynamics_width, spec.dynamics_weight
        )
    return ObservedReward(reward) if isinstance(model, Refinement) else reward


def _check_method(name: str, spec: PassSpec, model: ControlModel) -> None:
    kinds = METHOD_MODEL_KINDS.get(spec.method)
    if kinds is not None and model.kind not in kinds:
        raise ConfigError(
            f"align.passes.{name}.method: {spec.method} aligns {' or '.join(kinds)} models only; "
            f"'{spec.model}' is a {model.kind}"
        )
    if isinstance(model, Refinement) and spec.method == "qvpg" and spec.qvpg.bc_weight > 0:
        raise ConfigError(
            f"align.passes.{name}.qvpg.bc_weight: must be 0 for a cascade ('{spec.model}'); "
            "dataset windows carry no sample to refine"
        )


def _check_sources(
    args: argparse.Namespace,
    spec: PassSpec,
    model: ControlModel,
    critic: IQLCritic,
    dataset: TransitionDataset,
) -> None:
    check_learned_from(
        f"{args.params}: align.passes.{args.name}",
        learned_name(spec.dataset, dataset),
        [
            ("foundation", args.foundation, model.spec.dataset),
            ("critic", args.critic, critic_learned_from(args.critic, critic)),
        ],
    )


def _write_outputs(
    out: Path,
    name: str,
    spec: PassSpec,
    config: AlignConfig,
    model: ControlModel,
    outcome: PassOutcome,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "pass": name,
        "method": spec.method,
        "foundation": spec.model,
        "after": spec.after,
        "rollbacks": sum(1 for e in outcome.events if "action" in e),
        **{k: v for k, v in asdict(outcome).items() if k != "curve"},
    }
    save_adapters(out, model, config.lora)
    merged = merged_copy(model).eval()
    metadata = {"alignment": {**record, "spec": to_plain(spec)}}
    if isinstance(merged, Refinement):  # the aligned cascade, its source inside
        save_cascade(out / "model.safetensors", merged.cascade, metadata)
    else:
        save_model(out / "model.safetensors", merged, metadata)
    atomic_write_text(out / "metrics.json", json.dumps(record, indent=2) + "\n")
