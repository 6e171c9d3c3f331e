"""Fresh critics at test time: one critic rule for every algorithm that is meta-tested.

Meta-testing adapts each trained policy on unseen tasks with its own update rule (CPO or TRPO
steps), and every step needs advantages, so it needs critics. The algorithms leave different ones
behind: MetaCPO saves critics fitted to its training tasks, OmniSafe's CPO and TRPO save none. A
comparison that let each algorithm use what it saved would measure the critics as much as the
policies, so every algorithm is adapted with the same rule:

1. test rollouts are collected with :class:`ZeroCritic` and GAE's lambda = 1, so the value
   targets of a rollout (advantage + value) are its discounted returns-to-go G_t with nothing
   bootstrapped (episodes are time-limited and test rollouts hold whole episodes: G_t sums what
   the episodic objectives J and J_C sum);
2. before a rollout's advantages are used, fresh reward and cost critics (OmniSafe's critic
   class, the same sizes and the same initial weights for every algorithm and every rollout) are
   fitted to that rollout's (s_t, G_t);
3. A_t = G_t - V(s_t), i.e. GAE with lambda = 1: a critic fitted to a single rollout is a poor
   bootstrap (lambda < 1 would carry its bias into the advantages). Reward advantages are
   standardised and cost advantages centred, as OmniSafe's buffer does in training.

A baseline fitted to the rollout it is applied to is not independent of that rollout's actions, so
it removes part of the gradient: measured on Point-Circle, the cost change the CPO step predicts
from such advantages is 0.5 of the true one on rollouts of 4 episodes and near 0, or of the wrong
sign on the discounted scale, on rollouts of one (``benchmarks/cost_prediction.py``). So the cost
advantages can instead be the returns-to-go themselves (``meta_test_cfgs.cost_advantages:
returns``): no baseline, discounted as the step's cost measure is (1 for the cost per episode,
``cost_gamma`` for J_C), an unbiased estimate of that measure's gradient. The default stays
``fresh_critic``, the rule every published meta-test used.

The rule is stateless (nothing is carried from one rollout to the next), so it does not depend on
the order in which a sampler hands out the rollouts of several tasks.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from omnisafe.models.critic.critic_builder import CriticBuilder
from torch import nn

from omnisafe_metacpo import cost_measures
from omnisafe_metacpo.meta.inner import InnerLearner
from omnisafe_metacpo.meta.records import StepRecord
from omnisafe_metacpo.sampling.batch import Batch


def value_critic_builder(observation_space: Any, action_space: Any, critic_cfgs: Any,
                         weight_initialization_mode: str) -> CriticBuilder:
    """OmniSafe's builder of the value critics a run's ``model_cfgs.critic`` describes (those of
    MetaCPO's ``ConstraintActorCritic``: ``build_critic('v')``)."""
    return CriticBuilder(
        obs_space=observation_space,
        act_space=action_space,
        hidden_sizes=list(critic_cfgs.hidden_sizes),
        activation=critic_cfgs.activation,
        weight_initialization_mode=weight_initialization_mode,
        num_critics=1,
        use_obs_encoder=False,
    )


class ZeroCritic(nn.Module):
    """A value function that is 0 everywhere: collecting with it bootstraps nothing.

    It answers like OmniSafe's ``VCritic`` (a list holding one tensor of values per observation),
    so both samplers can call it where they call the training critics.
    """

    def forward(self, obs: torch.Tensor) -> list[torch.Tensor]:
        """Zero values, one per observation."""
        return [torch.zeros(obs.shape[:-1], dtype=obs.dtype)]


class FreshCritics:
    """Fits fresh reward and cost critics on one rollout and recomputes its advantages.

    Args:
        observation_space: The env's observation space (the critics' input).
        action_space: The env's action space (required by OmniSafe's critic builder).
        critic_cfgs: ``model_cfgs.critic`` (``hidden_sizes``, ``activation``, ``lr``).
        weight_initialization_mode: OmniSafe's initialisation of the critic layers.
        fit_iters: Full-batch Adam steps per critic and rollout.
        init_seed: Seed of the initial weights (the same for every rollout and algorithm).
        standardized_rew_adv: Standardise reward advantages (mean 0, std 1).
        standardized_cost_adv: Centre cost advantages (mean 0; ``fresh_critic`` only).
        cost_advantages: ``fresh_critic`` (A = G - V, V fitted on the rollout) or ``returns``
            (A = the returns-to-go with ``cost_returns_gamma``, no baseline).
        cost_returns_gamma: The discount of the ``returns`` cost advantages: 1 when the step
            constrains the cost per episode, ``cost_gamma`` when it constrains J_C.
    """

    def __init__(  # pylint: disable=too-many-arguments
        self,
        observation_space: Any,
        action_space: Any,
        critic_cfgs: Any,
        weight_initialization_mode: str = 'kaiming_uniform',
        fit_iters: int = 100,
        init_seed: int = 0,
        standardized_rew_adv: bool = True,
        standardized_cost_adv: bool = True,
        cost_advantages: str = 'fresh_critic',
        cost_returns_gamma: float = 1.0,
    ) -> None:
        if cost_advantages not in cost_measures.COST_ADVANTAGES:
            raise ValueError(f'meta_test_cfgs.cost_advantages = {cost_advantages!r}: allowed '
                             f'values are {", ".join(cost_measures.COST_ADVANTAGES)}')
        self._builder = value_critic_builder(observation_space, action_space, critic_cfgs,
                                             weight_initialization_mode)
        self._lr = float(critic_cfgs.lr)
        self._fit_iters = fit_iters
        self._init_seed = init_seed
        self._standardized_rew_adv = standardized_rew_adv
        self._standardized_cost_adv = standardized_cost_adv
        self._cost_advantages = cost_advantages
        self._cost_returns_gamma = float(cost_returns_gamma)

    def _fresh(self) -> nn.Module:
        # Forked RNG: the same initial weights every time, and the caller's random stream (action
        # noise, task draws) is left exactly as it was.
        with torch.random.fork_rng():
            torch.manual_seed(self._init_seed)
            return self._builder.build_critic('v')

    def fit(self, obs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """A fresh critic fitted to ``(obs, target)``; returns its values at ``obs``.

        The fit is on standardised targets (values are scaled back afterwards): returns-to-go
        range from ~1 to several hundred between tasks and envs, and a scale-free fit makes the
        same number of Adam steps enough for all of them.
        """
        mean, std = target.mean(), target.std(unbiased=False)
        if not bool(std > 1e-8):  # a constant target (e.g. no cost at all): nothing to learn
            return torch.full_like(target, float(mean))
        scaled = (target - mean) / std
        critic = self._fresh()
        optimizer = torch.optim.Adam(critic.parameters(), lr=self._lr)
        with torch.enable_grad():
            for _ in range(self._fit_iters):
                optimizer.zero_grad()
                loss = nn.functional.mse_loss(critic(obs)[0], scaled)
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            return critic(obs)[0] * std + mean

    def advantages(self, batch: Batch) -> Batch:
        """``batch`` with advantages A = G - V from critics fitted on it (targets unchanged),
        or with ``returns`` cost advantages the cost returns-to-go."""
        returns_r = batch.target_value_r
        adv_r = returns_r - self.fit(batch.obs, returns_r)
        # (torch's mean and std, not the buffer's operations (sampling.batch.mean_std): the two
        # round differently in the last bits, and meta-test results are kept as they were)
        if self._standardized_rew_adv:
            adv_r = (adv_r - adv_r.mean()) / (adv_r.std(unbiased=False) + 1e-8)
        if self._cost_advantages == 'returns':
            if batch.step_costs is None:
                raise ValueError('meta_test_cfgs.cost_advantages = returns needs the rollout\'s '
                                 'step costs (Batch.step_costs), which this batch lacks')
            adv_c = torch.as_tensor(cost_measures.returns_to_go(
                batch.step_costs.cpu().numpy(), batch.ends, self._cost_returns_gamma),
                dtype=adv_r.dtype, device=adv_r.device)
        else:
            returns_c = batch.target_value_c
            adv_c = returns_c - self.fit(batch.obs, returns_c)
            if self._standardized_cost_adv:
                adv_c = adv_c - adv_c.mean()
        return dataclasses.replace(batch, adv_r=adv_r.detach(), adv_c=adv_c.detach())


class FreshCriticLearner(InnerLearner):
    """An :class:`InnerLearner` whose steps use advantages from :class:`FreshCritics`.

    Args:
        critics: The critic rule applied to each rollout before its step.
        *args: :class:`InnerLearner`'s arguments.
        **kwargs: :class:`InnerLearner`'s keyword arguments.
    """

    def __init__(self, critics: FreshCritics, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.critics = critics

    def inner_step(
        self,
        phi: torch.Tensor,
        batch: Batch,
        cost_limit: float,
        create_graph: bool,
        fraction: float | None = None,
    ) -> tuple[torch.Tensor, StepRecord]:
        """:meth:`InnerLearner.inner_step` on ``batch`` with refitted advantages."""
        return super().inner_step(phi, self.critics.advantages(batch), cost_limit, create_graph,
                                  fraction)
