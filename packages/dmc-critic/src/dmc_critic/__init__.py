"""dmc-critic: critics (IQL) and critic-based action selection.

`build_critic(spec, dataset)` makes an untrained IQL critic, `fit_iql` trains it on a
`TransitionSampler`, `save_critic` / `load_critic` round-trip it through a checkpoint, and
`select_candidates` picks one of M generated actions by its Q (or averages them).
"""

from __future__ import annotations

from dmc_critic.batches import TransitionBatch, TransitionSampler
from dmc_critic.checkpoints import (
    CRITIC_CHECKPOINT_KIND,
    critic_learned_from,
    load_critic,
    save_critic,
)
from dmc_critic.fit import critic_optimizer, fit_iql, train_step
from dmc_critic.iql import IQLCritic, build_critic
from dmc_critic.losses import expectile_loss, td_target
from dmc_critic.networks import ScalarMLP
from dmc_critic.rewards import (
    done_flags,
    episode_returns,
    finishing_undervalued,
    returns_to_go,
    reward_factor,
    transform_rewards,
)
from dmc_critic.selection import SELECTION_RULES, select_candidates
from dmc_critic.spec import (
    REWARD_NORMALIZATIONS,
    CriticSpec,
    CriticTrainSpec,
    critic_spec_from_dict,
)

__version__ = "0.1.0"

__all__ = [
    "CRITIC_CHECKPOINT_KIND",
    "REWARD_NORMALIZATIONS",
    "SELECTION_RULES",
    "CriticSpec",
    "CriticTrainSpec",
    "IQLCritic",
    "ScalarMLP",
    "TransitionBatch",
    "TransitionSampler",
    "build_critic",
    "critic_learned_from",
    "critic_optimizer",
    "critic_spec_from_dict",
    "done_flags",
    "episode_returns",
    "expectile_loss",
    "finishing_undervalued",
    "fit_iql",
    "load_critic",
    "returns_to_go",
    "reward_factor",
    "save_critic",
    "select_candidates",
    "td_target",
    "train_step",
    "transform_rewards",
]
