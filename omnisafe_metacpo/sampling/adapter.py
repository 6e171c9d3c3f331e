"""Rollouts of policies in pinned tasks, with advantages per rollout: the samplers' front.

:class:`TaskRolloutAdapter` is OmniSafe's ``OnPolicyAdapter`` (same env construction and wrappers:
observation normalisation, action scaling, ``AutoReset``) on the plug-in's
:class:`~omnisafe_metacpo.sampling.envs.TaskDistributionEnv`, with a rollout that returns its data
instead of logging it (:meth:`~TaskRolloutAdapter.collect`, the sequential reference).
OmniSafe's ``VectorOnPolicyBuffer`` computes the GAE advantages and value targets: each episode
is closed with ``finish_path``, bootstrapping with the value of the final observation on a
time-limit truncation or at the end of the rollout, and with zero on a termination. The sampler
of a run (``algo_cfgs.sampler``) is chosen once, when the adapter is built:
:meth:`~TaskRolloutAdapter.collect_tasks` runs it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from omnisafe.adapter import OnPolicyAdapter
from omnisafe.common.buffer import VectorOnPolicyBuffer
from omnisafe.models.actor_critic.constraint_actor_critic import ConstraintActorCritic
from omnisafe.utils.config import Config

from omnisafe_metacpo import cost_measures
from omnisafe_metacpo.policy import FunctionalPolicy
from omnisafe_metacpo.sampling import fast_normalizer
from omnisafe_metacpo.sampling.batch import Batch, disc_fields, rollout_noise
from omnisafe_metacpo.sampling.batched import BatchedRollout, gae
from omnisafe_metacpo.sampling.envs import TaskDistributionEnv, unwrapped
from task_distributions import Task


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
        self._batched: BatchedRollout | None = None  # built on first use
        #: ``algo_cfgs.sampler`` (stock configs have none: the batched sampler)
        self.sampler: str = cfgs.algo_cfgs.get('sampler', 'batched')
        env = unwrapped(self._env)
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
        actor_critic: Any,
        tasks: Sequence[Task],
        steps: int,
        seeds: Sequence[int],
        progress: Callable[[int, str], None] | None = None,
        description: str = '',
        deterministic: bool = False,
    ) -> list[Batch]:
        """One rollout per task, policy i (flat parameters ``thetas[i]``) in ``tasks[i]``.

        With the adapter's :attr:`sampler` (``algo_cfgs.sampler``): ``batched``, the M rollouts
        step together (:meth:`collect_batched`, the fast default), or ``sequential``, one after
        another (:meth:`collect_sequential`, the reference). Either way rollout i depends only on
        (thetas[i], tasks[i], seeds[i]) and the shared observation normaliser.

        Args:
            policy: The actor as a function of flat parameters.
            thetas: One flat parameter vector per task.
            actor_critic: Gives the reward and cost critics (``reward_critic``, ``cost_critic``).
            tasks: One task per rollout.
            steps: Environment steps per rollout.
            seeds: One seed per rollout.
            progress: ``progress(steps, description)`` after every lockstep / environment step.
            description: What is being sampled, for ``progress``.
            deterministic: Act with the policy's mean action (an evaluation rollout) instead of
                sampling around it.
        """
        collect = self.collect_batched if self.sampler == 'batched' else self.collect_sequential
        return collect(policy, thetas, actor_critic, tasks, steps, seeds, progress, description,
                       deterministic)

    def collect_batched(  # pylint: disable=too-many-arguments
        self,
        policy: FunctionalPolicy,
        thetas: Sequence[torch.Tensor],
        actor_critic: Any,
        tasks: Sequence[Task],
        steps: int,
        seeds: Sequence[int],
        progress: Callable[[int, str], None] | None = None,
        description: str = '',
        deterministic: bool = False,
    ) -> list[Batch]:
        """:meth:`collect_tasks` with the batched sampler (:mod:`.batched`: the M rollouts in
        lockstep)."""
        if self._batched is None:
            self._batched = BatchedRollout(self._env_id, self._split, self._cfgs.algo_cfgs,
                                           self.obs_normalizer, self.action_space,
                                           self._env_action_space, self._episode_length)
        critics = (actor_critic.reward_critic, actor_critic.cost_critic)
        return self._batched.collect(policy, thetas, critics, tasks, steps, seeds,
                                     progress, description, deterministic=deterministic)

    def collect_sequential(  # pylint: disable=too-many-arguments
        self,
        policy: FunctionalPolicy,
        thetas: Sequence[torch.Tensor],
        actor_critic: Any,
        tasks: Sequence[Task],
        steps: int,
        seeds: Sequence[int],
        progress: Callable[[int, str], None] | None = None,
        description: str = '',
        deterministic: bool = False,
    ) -> list[Batch]:
        """:meth:`collect_tasks` one rollout after another through :meth:`collect`."""
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
        (:mod:`omnisafe_metacpo.sampling.batched`), which must give the same rollouts.

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
        values_c = torch.zeros(steps)  # V_C(s_t), and below V_C(s_t+1) or the bootstrap value
        next_c = torch.zeros(steps)
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
            values_c[step] = value_c[0]
            if step > 0 and not (ends and ends[-1] == step - 1):
                next_c[step - 1] = value_c[0]
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
            next_c[step] = 0.0 if (done or time_out) else last_c[0]
            if done or time_out:
                ends.append(step)
                returns.append(ep_ret)
                costs.append(ep_cost)
                lengths.append(ep_len)
                ep_ret = ep_cost = ep_len = 0.0
            buffer.finish_path(last_r.reshape(1), last_c.reshape(1), 0)
        data = buffer.get()
        cost_rule = cost_measures.cost_advantage_settings(self._cfgs.algo_cfgs)
        if not cost_rule.bootstrap_time_limit:
            # OmniSafe's buffer discounts costs with the reward's gamma, bootstraps at time limits
            # and centres; the measure's advantages are computed here as the batched sampler does.
            continues = torch.ones((steps, 1), dtype=torch.float64)
            continues[ends] = 0.0
            continues[-1] = 0.0
            adv_c, target_c = gae(torch.from_numpy(step_costs.astype(np.float32))[:, None],
                                  values_c[:, None], next_c[:, None], continues, cost_rule.gamma,
                                  cost_rule.lam)
            data['adv_c'], data['target_value_c'] = adv_c[:, 0], target_c[:, 0]
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


def cpu_critics(actor_critic: Any) -> Any:
    """The critics as the samplers use them: on the CPU, where the environments step.

    With ``train_cfgs.device: cuda`` the learner's networks live on the GPU; rollouts run CPU
    copies (make them once per meta-iteration: the critics change only at its end), and the
    learner moves the rollouts' data to its device (:meth:`Batch.to`). On the CPU these are the
    critics themselves.
    """
    if next(actor_critic.reward_critic.parameters()).device.type == 'cpu':
        return actor_critic
    return SimpleNamespace(
        reward_critic=copy.deepcopy(actor_critic.reward_critic).cpu(),
        cost_critic=copy.deepcopy(actor_critic.cost_critic).cpu(),
    )
