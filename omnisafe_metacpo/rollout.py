"""Rollouts of one policy in one pinned task, with advantages per rollout.

:class:`TaskRolloutAdapter` is OmniSafe's ``OnPolicyAdapter`` (same env construction and wrappers:
observation normalisation, action scaling, ``AutoReset``) on the plug-in's
:class:`~omnisafe_metacpo.envs.TaskDistributionEnv`, with a rollout that returns its data instead of
logging it. OmniSafe's ``VectorOnPolicyBuffer`` computes the GAE advantages and value targets:
each episode is closed with ``finish_path``, bootstrapping with the value of the final observation
on a time-limit truncation or at the end of the rollout, and with zero on a termination.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from omnisafe.adapter import OnPolicyAdapter
from omnisafe.common.buffer import VectorOnPolicyBuffer
from omnisafe.envs.core import Wrapper
from omnisafe.models.actor_critic.constraint_actor_critic import ConstraintActorCritic
from omnisafe.utils.config import Config

from omnisafe_metacpo import cost_measures, fast_normalizer
from omnisafe_metacpo.envs import TaskDistributionEnv
from omnisafe_metacpo.policy import FunctionalPolicy
from task_distributions import Task


@dataclass
class Batch:
    """One rollout D of one policy in one task (all tensors on the CPU, no grad)."""

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

    @property
    def num_steps(self) -> int:
        """Environment steps in this rollout."""
        return int(self.obs.shape[0])


class TaskRolloutAdapter(OnPolicyAdapter):
    """OmniSafe's on-policy adapter with task control and a data-returning rollout.

    Args:
        env_id: Env id with a task distribution.
        seed: Seed of the environment and (unless ``env_cfgs.task_seed`` is set) the task stream.
        cfgs: The algorithm's config.
        split: Which split of the distribution to run (``'train'`` or ``'test'``).
    """

    def __init__(self, env_id: str, seed: int, cfgs: Config, split: str = 'train') -> None:
        cfgs = copy.deepcopy(cfgs)
        env_cfgs = cfgs.env_cfgs.todict() if cfgs.get('env_cfgs') else {}
        # OnlineAdapter builds its envs with make(env_id, ..., **env_cfgs). ``class_name`` in
        # env_cfgs selects the task-distribution env also for standard ids (make() alone would pick
        # the stock SafetyGymnasiumEnv). Tasks are pinned by the algorithm (``collect``).
        env_cfgs.update(class_name=TaskDistributionEnv.__name__, split=split)
        cfgs['env_cfgs'] = Config.dict2config(env_cfgs)
        # Environments, wrappers and the observation normaliser stay on the CPU whatever
        # train_cfgs.device: stepping is CPU work, rollouts return CPU batches (``Batch``), and
        # the algorithm moves them to its device (a GPU run of MetaCPO).
        cfgs.train_cfgs.device = 'cpu'
        super().__init__(env_id, 1, seed, cfgs)
        self._split = split
        self._batched: Any = None  # the BatchedRollout, built on first use
        env = self._env
        while isinstance(env, Wrapper):  # OmniSafe wrappers answer None for max_episode_steps
            env = env._env  # pylint: disable=protected-access
        self._episode_length = int(env.max_episode_steps)
        self._env_action_space = env.action_space  # the env's own range, below ActionScale
        # OmniSafe's normaliser update with numpy arithmetic, same bits (fast_normalizer); installed
        # on the instance before anything (the ranks' NormalizerSync) wraps its _push.
        fast_normalizer.install(self.obs_normalizer)

    @property
    def episode_length(self) -> int:
        """The env's own episode length (T in the cost surrogate)."""
        return self._episode_length

    def seed_tasks(self, seed: int) -> None:
        """Restart the env's task stream from ``seed``."""
        self._env.seed_tasks(seed)

    def sample_task(self) -> Task:
        """Draw a task from this adapter's split (the env's seeded task stream)."""
        return self._env.sample_task()

    @property
    def obs_normalizer(self) -> torch.nn.Module | None:
        """The running observation normaliser, if observations are normalised."""
        return self.save().get('obs_normalizer')

    def collect_tasks(  # pylint: disable=too-many-arguments
        self,
        policy: FunctionalPolicy,
        thetas: Sequence[torch.Tensor],
        actor_critic: ConstraintActorCritic,
        tasks: Sequence[Task],
        steps: int,
        seeds: Sequence[int],
        batched: bool = True,
        progress: Callable[[int, str], None] | None = None,
        description: str = '',
        deterministic: bool = False,
    ) -> list[Batch]:
        """One rollout per task, policy i (flat parameters ``thetas[i]``) in ``tasks[i]``.

        ``batched``: the M rollouts step together (:mod:`omnisafe_metacpo.batched_rollout`, the
        fast default); otherwise one after another with :meth:`collect` (the reference). Either
        way rollout i depends only on (thetas[i], tasks[i], seeds[i]) and the shared observation
        normaliser.

        Args:
            policy: The actor as a function of flat parameters.
            thetas: One flat parameter vector per task.
            actor_critic: Gives the reward and cost critics.
            tasks: One task per rollout.
            steps: Environment steps per rollout.
            seeds: One seed per rollout.
            batched: Use the batched sampler.
            progress: ``progress(steps, description)`` after every lockstep / environment step.
            description: What is being sampled, for ``progress``.
            deterministic: Act with the policy's mean action (an evaluation rollout) instead of
                sampling around it.
        """
        critics = (actor_critic.reward_critic, actor_critic.cost_critic)
        if batched:
            # Imported here: batched_rollout builds on this module's Batch and rollout_noise.
            from omnisafe_metacpo.batched_rollout import BatchedRollout

            if self._batched is None:
                self._batched = BatchedRollout(self._env_id, self._split, self._cfgs.algo_cfgs,
                                               self.obs_normalizer, self.action_space,
                                               self._env_action_space, self._episode_length)
            return self._batched.collect(policy, thetas, critics, tasks, steps, seeds,
                                         progress, description, deterministic=deterministic)
        batches = []
        for theta, task, seed in zip(thetas, tasks, seeds, strict=True):
            # The policy is evaluated as the batched sampler evaluates it (a stack of one), so
            # that the two paths differ only in how environments, wrappers and buffers are run.
            actor = policy.stacked(theta.detach().unsqueeze(0))
            batches.append(self.collect(actor, actor_critic, task, steps, seed,
                                        deterministic=deterministic))
            if progress is not None:
                progress(steps, description)
        return batches

    def close(self) -> None:
        """Close the adapter's environments (the batched sampler's too)."""
        if self._batched is not None:
            self._batched.close()
        super().close()

    @torch.no_grad()
    def collect(  # pylint: disable=too-many-locals
        self,
        actor: Callable[[torch.Tensor], torch.distributions.Normal],
        actor_critic: ConstraintActorCritic,
        task: Task,
        steps: int,
        seed: int,
        deterministic: bool = False,
    ) -> Batch:
        """Run ``actor`` for ``steps`` environment steps in ``task`` and compute advantages.

        The env is reset with ``seed`` and the action noise is ``rollout_noise(seed, ...)``, so a
        rollout depends only on (policy, task, seed, normaliser): what makes runs reproducible and
        resumable. This is the sequential reference of the batched sampler
        (:mod:`omnisafe_metacpo.batched_rollout`), which must give the same rollouts.

        Args:
            actor: The policy to run: an actor module or a
                :class:`~omnisafe_metacpo.policy.StackedActor` of one policy.
            actor_critic: Gives the reward and cost critics for the advantages.
            task: The task every episode of this rollout runs in.
            steps: Number of environment steps.
            seed: Seed of the layouts and of the action noise.
            deterministic: Act with the mean action (no noise).
        """
        noise = rollout_noise(seed, steps, self.action_space.shape[0])
        if deterministic:
            noise = torch.zeros_like(noise)
        self._env.set_task(task, hold=True)  # every episode of this rollout runs in ``task``
        obs, _ = self.reset(seed=seed)
        buffer = VectorOnPolicyBuffer(
            obs_space=self.observation_space,
            act_space=self.action_space,
            size=steps,
            gamma=self._cfgs.algo_cfgs.gamma,
            lam=self._cfgs.algo_cfgs.lam,
            lam_c=self._cfgs.algo_cfgs.lam_c,
            advantage_estimator=self._cfgs.algo_cfgs.adv_estimation_method,
            standardized_adv_r=self._cfgs.algo_cfgs.standardized_rew_adv,
            standardized_adv_c=self._cfgs.algo_cfgs.standardized_cost_adv,
            penalty_coefficient=0.0,
            num_envs=1,
            device=torch.device('cpu'),
        )
        reward_critic, cost_critic = actor_critic.reward_critic, actor_critic.cost_critic
        ep_ret = ep_cost = ep_len = 0.0
        total_reward = total_cost = 0.0
        returns, costs, lengths = [], [], []
        step_costs = np.zeros(steps, dtype=np.float64)
        ends: list[int] = []
        for step in range(steps):
            dist = actor(obs)
            act = dist.mean + dist.stddev * noise[step]
            logp = dist.log_prob(act).sum(-1)
            value_r, value_c = reward_critic(obs)[0], cost_critic(obs)[0]
            next_obs, reward, cost, terminated, truncated, info = self.step(act)
            raw_reward = float(info.get('original_reward', reward).sum())
            raw_cost = float(info.get('original_cost', cost).sum())
            ep_ret, ep_cost, ep_len = ep_ret + raw_reward, ep_cost + raw_cost, ep_len + 1
            total_reward, total_cost = total_reward + raw_reward, total_cost + raw_cost
            step_costs[step] = raw_cost
            buffer.store(obs=obs, act=act, reward=reward, cost=cost, value_r=value_r,
                         value_c=value_c, logp=logp)
            obs = next_obs
            done, time_out = bool(terminated[0]), bool(truncated[0])
            if not (done or time_out or step == steps - 1):
                continue
            if done:  # a real end: nothing to bootstrap
                last_r = last_c = torch.zeros(1)
            else:  # truncated by the time limit, or cut by the end of the rollout
                last_obs = info['final_observation'] if time_out else obs
                last_r, last_c = reward_critic(last_obs)[0], cost_critic(last_obs)[0]
            if done or time_out:
                ends.append(step)
                returns.append(ep_ret)
                costs.append(ep_cost)
                lengths.append(ep_len)
                ep_ret = ep_cost = ep_len = 0.0
            buffer.finish_path(last_r.reshape(1), last_c.reshape(1), 0)
        data = buffer.get()
        gamma = self._cfgs.algo_cfgs.cost_gamma
        return Batch(
            obs=data['obs'],
            act=data['act'],
            logp=data['logp'],
            adv_r=data['adv_r'],
            adv_c=data['adv_c'],
            target_value_r=data['target_value_r'],
            target_value_c=data['target_value_c'],
            cost_rate=total_cost / steps,
            reward_rate=total_reward / steps,
            ep_returns=returns,
            ep_costs=costs,
            ep_lengths=lengths,
            **disc_fields(step_costs, ends, gamma, self._episode_length),
        )


def disc_fields(costs: np.ndarray, ends: list[int], gamma: float, length: int) -> dict[str, Any]:
    """The discounted-cost fields of a :class:`Batch` from its step costs and episode ends."""
    weights = cost_measures.discount_weights(len(costs), ends, gamma)
    return {
        'disc_cost': cost_measures.per_episode(costs, ends, gamma, length),
        'disc_weights': torch.from_numpy(weights.astype(np.float32)),
        'ep_disc_costs': cost_measures.episode_sums(costs, ends, gamma),
    }


def rollout_noise(seed: int, steps: int, act_dim: int) -> torch.Tensor:
    """Standard normal action noise (steps, act_dim) of the rollout seeded with ``seed``.

    Actions are ``mean + std * noise`` (reparametrised sampling): drawing the noise of each rollout
    from its own generator makes a rollout independent of which other rollouts are sampled beside
    it (the batched sampler, distributed ranks) and of torch's global random state.
    """
    return torch.randn((steps, act_dim), generator=torch.Generator().manual_seed(seed))


def rollout_seed(*key: int) -> int:
    """A 31-bit seed that depends only on ``key`` (e.g. run seed, iteration, task, step)."""
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1)[0] & 0x7FFFFFFF)
