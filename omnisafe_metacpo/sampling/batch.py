"""One rollout's data (:class:`Batch`) and the seeds that make every rollout reproducible.

A rollout depends only on (policy, task, seed, observation normaliser): its environment is reset
with its seed and its action noise is :func:`rollout_noise` of that seed. Seeds are derived from
a key (run seed, iteration, stream, task, step) by :func:`rollout_seed`; :class:`SeedStream` names
the streams.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np
import torch

from omnisafe_metacpo import cost_measures


class SeedStream(IntEnum):
    """The independent streams of seeds drawn from a run's seed (one key of every
    :func:`rollout_seed`), so that no two uses of the seed draw the same numbers.

    The values are part of every saved run's results: changing one changes its tasks or rollouts.
    """

    #: the M training tasks of a meta-iteration
    TASKS = 1
    #: the rollouts of training tasks (per iteration, task and inner step)
    ROLLOUT = 2
    #: the minibatch order of the critics' fit
    CRITIC = 3
    #: the unseen test tasks of a meta-test
    TEST_TASKS = 11
    #: the adaptation rollouts of a meta-test
    TEST_ROLLOUT = 12
    #: the control rollouts of a traced meta-test
    TEST_CONTROL = 13
    #: the deterministic evaluation of a meta-test
    TEST_EVAL = 14


@dataclass
class Batch:
    """One rollout D of one policy in one task (no grad; on the CPU as sampled, see :meth:`to`)."""

    obs: torch.Tensor
    act: torch.Tensor
    logp: torch.Tensor
    adv_r: torch.Tensor
    adv_c: torch.Tensor
    target_value_r: torch.Tensor
    target_value_c: torch.Tensor
    cost_rate: float
    reward_rate: float
    ep_returns: list[float] = field(default_factory=list)
    ep_costs: list[float] = field(default_factory=list)
    ep_lengths: list[float] = field(default_factory=list)
    #: The paper's discounted J_C per episode of this rollout (:func:`cost_measures.per_episode`
    #: with ``algo_cfgs.cost_gamma``), beside OmniSafe's undiscounted ``cost_rate * T``.
    disc_cost: float = float('nan')
    #: gamma^(t - start of t's episode) per step (float32): the discounted cost surrogate's weights.
    disc_weights: torch.Tensor | None = None
    #: sum_t gamma^t c_t of each finished episode, from its start.
    ep_disc_costs: list[float] = field(default_factory=list)
    #: The step costs c_t (float64), for advantages on a measure's own discount.
    step_costs: torch.Tensor | None = None
    #: The last step of every finished episode, ascending.
    ends: list[int] = field(default_factory=list)

    @property
    def num_steps(self) -> int:
        """Environment steps in this rollout."""
        return int(self.obs.shape[0])

    def to(self, device: torch.device) -> Batch:
        """This rollout with its tensors on ``device`` (the batch itself on the CPU).

        Environments step on the CPU; a learner on a GPU (``train_cfgs.device``) moves each
        rollout there once.
        """
        if device.type == 'cpu':
            return self
        moved = {item.name: getattr(self, item.name).to(device)
                 for item in dataclasses.fields(self)
                 if isinstance(getattr(self, item.name), torch.Tensor)}
        return dataclasses.replace(self, **moved)


def disc_fields(costs: np.ndarray, ends: list[int], gamma: float, length: int) -> dict[str, Any]:
    """The discounted-cost fields of a :class:`Batch`, its step costs and episode ends."""
    weights = cost_measures.discount_weights(len(costs), ends, gamma)
    return {
        'disc_cost': cost_measures.per_episode(costs, ends, gamma, length),
        'disc_weights': torch.from_numpy(weights.astype(np.float32)),
        'ep_disc_costs': cost_measures.episode_sums(costs, ends, gamma),
        'step_costs': torch.from_numpy(np.array(costs, dtype=np.float64)),
        'ends': [int(end) for end in ends],
    }


def mean_std(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population std with the operations of OmniSafe's ``dist_statistics_scalar``.

    (What ``OnPolicyBuffer.get`` standardises advantages with; ``Tensor.mean`` and ``Tensor.std``
    round differently in the last bits.)
    """
    count = torch.tensor(len(values))
    mean = torch.sum(values) / count
    return mean, torch.sqrt(torch.sum((values - mean) ** 2) / count)


def rollout_noise(seed: int, steps: int, act_dim: int) -> torch.Tensor:
    """Standard normal action noise (steps, act_dim) of the rollout seeded with ``seed``.

    Actions are ``mean + std * noise`` (reparametrised sampling): drawing the noise of each rollout
    from its own generator makes a rollout independent of which other rollouts are sampled beside
    it (the batched sampler, distributed ranks) and of torch's global random state.
    """
    return torch.randn((steps, act_dim), generator=torch.Generator().manual_seed(seed))


def rollout_seed(*key: int) -> int:
    """A 31-bit seed that depends only on ``key`` (e.g. run seed, stream, iteration, task, step)."""
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1)[0] & 0x7FFFFFFF)
