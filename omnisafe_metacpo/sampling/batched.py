"""Rollouts of M policies in M pinned tasks, stepped in lockstep: the fast sampler.

A meta-iteration samples M tasks x (K + 1) rollouts, and the M rollouts of one inner step are
independent: task i runs its own phi_i^k. Run one after another through OmniSafe's adapter, each
environment step pays for a forward pass of the actor and both critics on one observation, the
observation normaliser's update, four wrapper layers of tensor conversions and a buffer store,
several times what the environment itself costs. Here the M environments advance together:

* the M policies act in one batched forward pass (:class:`~omnisafe_metacpo.policy.StackedActor`);
* the critics are not evaluated while stepping: values depend only on the observations, so they are
  computed once per rollout on all T x M observations (and the bootstrap observations) at the end;
* the observation normaliser (OmniSafe's ``Normalizer``, the very object the adapter's
  ``ObsNormalize`` wrapper holds, so saving, checkpoints and resume see one normaliser) is updated
  once per lockstep with the M new observations, by OmniSafe's arithmetic done mostly in numpy
  (:mod:`omnisafe_metacpo.sampling.fast_normalizer`: the same bits);
* the environments are the task-distribution envs under OmniSafe's wrappers; what the wrappers did
  per step is done here on the batch with the same formulas: ``ActionScale``'s affine map,
  ``AutoReset`` (reset on termination or truncation, keeping the final observation for the
  bootstrap), ``ObsNormalize`` (final observations first, then the new ones);
* GAE and value targets as OmniSafe's ``OnPolicyBuffer`` computes them, for the M rollouts at once
  (:func:`gae`; bootstrap with the value of the final observation on truncation and at the
  rollout's end, zero on termination), advantages standardised per task as the buffer does.

What differs from the sequential path (``TaskRolloutAdapter.collect``, kept as the reference): the
normaliser sees the M tasks' observations interleaved step by step instead of task after task, so
normalised observations differ slightly while statistics accumulate; the batched matrix products
may round differently in the last bits. Actions use the same per-rollout noise stream in both paths
(``rollout_noise``), so with a frozen normaliser the two give the same rollouts (tested).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from omnisafe.common.normalizer import Normalizer

from omnisafe_metacpo import cost_measures
from omnisafe_metacpo.distributed.collectives import world_size
from omnisafe_metacpo.distributed.launch import usable_cores
from omnisafe_metacpo.policy import FunctionalPolicy
from omnisafe_metacpo.sampling import fast_normalizer
from omnisafe_metacpo.sampling.batch import Batch, disc_fields, mean_std, rollout_noise
from task_distributions import Task
from task_distributions.lockstep import Lockstep

#: ``progress(steps, description)``: told after each lockstep how many env steps were taken.
ProgressCallback = Callable[[int, str], None]


class BatchedRollout:
    """Steps one task-distribution env per task in lockstep.

    Args:
        env_id: Env id with a task distribution.
        split: ``'train'`` or ``'test'``.
        algo_cfgs: The algorithm's ``algo_cfgs`` (GAE and standardisation settings).
        obs_normalizer: The shared running normaliser (updated in place), or ``None``.
        action_space: The adapter's action space (the policy's range, [-1, 1]).
        env_action_space: The environment's own action space.
    """

    def __init__(
        self,
        env_id: str,
        split: str,
        algo_cfgs: Any,
        obs_normalizer: Normalizer | None,
        action_space: Any,
        env_action_space: Any,
        episode_length: int | None = None,
    ) -> None:
        self._env_id = env_id
        self._split = split
        self._cfgs = algo_cfgs
        self.obs_normalizer = obs_normalizer
        self._low = torch.as_tensor(action_space.low, dtype=torch.float32)
        self._high = torch.as_tensor(action_space.high, dtype=torch.float32)
        self._episode_length = episode_length
        self._env_workers = algo_cfgs.get('env_workers')  # absent from stock configs: auto
        self._envs: Lockstep | None = None
        # OmniSafe's ActionScale(low=-1, high=1) maps the policy's range onto the env's.
        self._env_low = torch.as_tensor(env_action_space.low, dtype=torch.float32)
        self._env_high = torch.as_tensor(env_action_space.high, dtype=torch.float32)

    def _lockstep(self, count: int) -> Lockstep:
        """The environments of ``count`` tasks (kept from one rollout to the next).

        ``algo_cfgs.env_workers`` helper processes (null: one per further core this process may
        use, shared among ``--parallel`` ranks) step their shares while this process steps its
        own, between sending the actions and reading the results.
        """
        if self._envs is not None and len(self._envs) == count:
            return self._envs
        self.close()
        workers = self._env_workers
        if workers is None:
            workers = max(0, usable_cores() // world_size() - 1)
        self._envs = Lockstep(self._env_id, self._split, count, workers)
        return self._envs

    def _normalize(self, raw: np.ndarray) -> np.ndarray:
        """Float32 observations, normalised (numpy: the loop below works on numpy arrays)."""
        obs = np.asarray(raw, dtype=np.float32)
        if self.obs_normalizer is None:
            return obs
        # OmniSafe's Normalizer.normalize, bit for bit, with numpy doing the elementwise part
        return fast_normalizer.normalize(self.obs_normalizer, obs)

    def close(self) -> None:
        """Close the environments (and stop the helper processes)."""
        if self._envs is not None:
            self._envs.close()
            self._envs = None

    @torch.no_grad()
    def collect(  # pylint: disable=too-many-locals,too-many-statements
        self,
        policy: FunctionalPolicy,
        thetas: Sequence[torch.Tensor],
        critics: tuple[torch.nn.Module, torch.nn.Module],
        tasks: Sequence[Task],
        steps: int,
        seeds: Sequence[int],
        progress: ProgressCallback | None = None,
        description: str = '',
        deterministic: bool = False,
    ) -> list[Batch]:
        """Run policy i (parameters ``thetas[i]``) for ``steps`` steps in ``tasks[i]``.

        Rollout i depends on (thetas[i], tasks[i], seeds[i]) and the normaliser only, not on M:
        the env of task i is reset with ``seeds[i]`` and its action noise is ``rollout_noise``.

        Args:
            policy: The actor as a function of flat parameters.
            thetas: One flat parameter vector per task.
            critics: The reward and cost critics (for advantages and value targets).
            tasks: The tasks, one per rollout.
            steps: Environment steps per rollout.
            seeds: One seed per rollout (layouts and action noise).
            progress: Called after each lockstep with the number of env steps taken.
            description: Passed to ``progress``.
            deterministic: Act with the mean action (an evaluation rollout): no noise.
        """
        count = len(tasks)
        envs = self._lockstep(count)
        # Every episode of rollout i runs in tasks[i]; the env is reset with seeds[i].
        obs = self._normalize(envs.reset(tasks, seeds))
        actor = policy.stacked(torch.stack([theta.detach() for theta in thetas]))
        act_dim = int(self._low.shape[0])
        noise = torch.stack([rollout_noise(seed, steps, act_dim) for seed in seeds], dim=1)
        if deterministic:
            noise = torch.zeros_like(noise)
        # The per-step arithmetic is numpy on float32 arrays: elementwise + - * are rounded
        # as torch rounds them, and each torch call would cost more than the arithmetic. The
        # noise term std * noise is the same product computed for all steps at once.
        noisy = (actor.std * noise).numpy()
        low, env_low = self._low.numpy(), self._env_low.numpy()
        scale = ((self._env_high - self._env_low) / (self._high - self._low)).numpy()

        obs_buf = np.empty((steps, count, obs.shape[-1]), dtype=np.float32)
        act_buf = np.empty((steps, count, act_dim), dtype=np.float32)
        rewards = np.zeros((steps, count), dtype=np.float32)
        costs = np.zeros((steps, count), dtype=np.float32)
        # Per task: (last step of an episode, terminated?) and the normalised final observations.
        ends: list[list[tuple[int, bool]]] = [[] for _ in range(count)]
        finals: list[list[np.ndarray]] = [[] for _ in range(count)]
        for step in range(steps):
            obs_buf[step] = obs
            act = actor.mean(torch.from_numpy(obs)).numpy() + noisy[step]
            act_buf[step] = act
            # (the result's arrays are overwritten at the next lockstep: copied below)
            result = envs.step(env_low + scale * (act - low))
            rewards[step] = result.rewards
            costs[step] = result.costs
            ended = result.ended
            if ended:
                # ObsNormalize normalises the final observations before the new ones.
                final = self._normalize(np.stack([o for _, _, o in ended]))
                for row, (index, terminated, _) in enumerate(ended):
                    ends[index].append((step, terminated))
                    finals[index].append(final[row])
            obs = self._normalize(result.obs)
            if progress is not None:
                progress(count, description)

        # Values once per rollout and task (so that a task's numbers do not depend on the others):
        # its observations, its final observations, the observation after its last step.
        value_r = torch.empty((steps, count))
        value_c = torch.empty((steps, count))
        next_r = torch.empty((steps, count))  # V(s_{t+1}) in an episode, else the bootstrap
        next_c = torch.empty((steps, count))
        continues = torch.ones((steps, count), dtype=torch.float64)  # 0 at an episode's end
        continues[-1] = 0.0
        for index in range(count):
            rows = torch.from_numpy(np.concatenate([obs_buf[:, index], *(o[None] for o in
                                                                          finals[index]),
                                                    obs[index:index + 1]]))
            for critic, value, after in ((critics[0], value_r, next_r),
                                         (critics[1], value_c, next_c)):
                values = critic(rows)[0]
                value[:, index] = values[:steps]
                after[:-1, index] = values[1:steps]
                after[-1, index] = values[-1]  # cut by the end of the rollout
                for (step, terminated), final in zip(ends[index], values[steps:-1], strict=True):
                    # terminated: nothing to bootstrap; truncated: the final observation's value
                    after[step, index] = 0.0 if terminated else final
            for step, _ in ends[index]:
                continues[step, index] = 0.0
        adv_r, target_r = gae(torch.from_numpy(rewards), value_r, next_r, continues,
                              self._cfgs.gamma, self._cfgs.lam)
        cost_rule = cost_measures.cost_advantage_settings(self._cfgs)
        if not cost_rule.bootstrap_time_limit:  # the measure ends with the episode
            for index in range(count):
                for step, _ in ends[index]:
                    next_c[step, index] = 0.0
        adv_c, target_c = gae(torch.from_numpy(costs), value_c, next_c, continues, cost_rule.gamma,
                              cost_rule.lam)
        obs_all, act_all = torch.from_numpy(obs_buf), torch.from_numpy(act_buf)
        return [
            self._batch(policy, thetas[index], obs_all[:, index], act_all[:, index],
                        (adv_r[:, index], adv_c[:, index], target_r[:, index], target_c[:, index]),
                        ends[index], rewards[:, index], costs[:, index])
            for index in range(count)
        ]

    def _batch(  # pylint: disable=too-many-arguments
        self,
        policy: FunctionalPolicy,
        theta: torch.Tensor,
        obs: torch.Tensor,
        act: torch.Tensor,
        advantages: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
        ends: list[tuple[int, bool]],
        rewards: np.ndarray,
        costs: np.ndarray,
    ) -> Batch:
        """One task's :class:`Batch`, standardised as ``OnPolicyBuffer.get`` does.

        The standardisation is OmniSafe's (population mean and std of the rollout) computed here:
        ``OnPolicyBuffer.get`` would all-reduce the statistics over distributed ranks, which must
        not happen for one task's rollout.
        """
        obs, act = obs.contiguous(), act.contiguous()
        adv_r, adv_c, target_r, target_c = (x.contiguous() for x in advantages)
        if self._cfgs.standardized_rew_adv:
            mean, std = mean_std(adv_r)
            adv_r = (adv_r - mean) / (std + 1e-8)
        if cost_measures.cost_advantage_settings(self._cfgs).centre:
            adv_c = adv_c - mean_std(adv_c)[0]
        # log pi(a|s) of the sampling policy, with the same function the surrogates use: the
        # importance ratio at phi_k is then exactly 1.
        logp = policy.log_prob(theta.detach(), obs, act)
        returns, ep_costs, lengths = [], [], []
        start = 0
        for step, _ in ends:
            returns.append(float(rewards[start:step + 1].astype(np.float64).sum()))
            ep_costs.append(float(costs[start:step + 1].astype(np.float64).sum()))
            lengths.append(float(step + 1 - start))
            start = step + 1
        steps = int(obs.shape[0])
        length = self._episode_length or steps
        return Batch(
            obs=obs,
            act=act,
            logp=logp,
            adv_r=adv_r,
            adv_c=adv_c,
            target_value_r=target_r,
            target_value_c=target_c,
            cost_rate=float(costs.astype(np.float64).sum()) / steps,
            reward_rate=float(rewards.astype(np.float64).sum()) / steps,
            ep_returns=returns,
            ep_costs=ep_costs,
            ep_lengths=lengths,
            **disc_fields(costs.astype(np.float64), [step for step, _ in ends],
                          self._cfgs.cost_gamma, length),
        )


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    continues: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE advantages and value targets of M rollouts at once, as OmniSafe's buffer computes them.

    ``OnPolicyBuffer.finish_path`` does, per episode, ``deltas = r + gamma * V' - V`` in float32,
    then ``discount_cumsum(deltas, gamma * lam)`` -- a Python loop over the episode's steps in
    float64 -- and ``target = adv + V``. Here the same operations run
    once over the (T, M) arrays, the loop over T stepping all M rollouts together;
    ``continues`` (0 at the last step of an episode) cuts the sum at episode ends: multiplying the
    carried sum by 1 or adding 0 is exact, so the results equal OmniSafe's bit for bit (tested).

    Args:
        rewards: (T, M) rewards or costs (float32).
        values: (T, M) V(s_t) (float32).
        next_values: (T, M) V(s_{t+1}) within an episode, the bootstrap value at its last step.
        continues: (T, M) float64, 0 at the last step of an episode, 1 elsewhere.
        gamma: Discount.
        lam: GAE lambda.

    Returns:
        (advantages, value targets), each (T, M) float32.
    """
    deltas = (rewards + gamma * next_values - values).to(torch.float64).numpy()
    discount = gamma * lam
    # the loop in numpy (float64 elementwise, rounded as torch rounds it): a torch call per
    # operation would cost several times more
    cuts = continues.numpy()
    adv = np.empty_like(deltas)
    carried = np.zeros(deltas.shape[1], dtype=np.float64)
    for step in range(deltas.shape[0] - 1, -1, -1):
        carried = deltas[step] + discount * (carried * cuts[step])
        adv[step] = carried
    advantages = torch.from_numpy(adv)
    return advantages.to(torch.float32), (advantages + values).to(torch.float32)

