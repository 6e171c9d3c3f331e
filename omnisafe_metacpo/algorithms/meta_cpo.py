"""Meta-CPO: constrained meta-RL with differentiable convex programming (Cho & Sun, AAAI 2024)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omnisafe.algorithms import registry
from omnisafe.algorithms.on_policy.second_order.cpo import CPO
from omnisafe.common.logger import Logger
from omnisafe.models.actor_critic.constraint_actor_critic import ConstraintActorCritic

from omnisafe_metacpo import checkpoint, compat
from omnisafe_metacpo.adaptation import AdaptationStats, InnerLearner, StepRecord
from omnisafe_metacpo.config import validate_meta_config
from omnisafe_metacpo.cpo_step import CPOCase, CPOStepError, cpo_step
from omnisafe_metacpo.meta_test import MetaTester
from omnisafe_metacpo.policy import FunctionalPolicy
from omnisafe_metacpo.progress import RunProgress
from omnisafe_metacpo.rollout import Batch, TaskRolloutAdapter, rollout_seed

_TASKS, _ROLLOUT, _CRITIC = 1, 2, 3  # streams of per-iteration seeds


@dataclass
class TaskResult:
    """One task of a meta-iteration: its inner steps and its post-adaptation rollout D_K."""

    records: list[StepRecord]
    post: Batch
    phi_final: torch.Tensor


class MetaTrainingError(RuntimeError):
    """Raised when updates fail repeatedly (non-finite values or solver errors)."""


@registry.register
class MetaCPO(CPO):
    """Meta-CPO (Algorithm 1 of Cho & Sun, AAAI 2024).

    References:
        - Title: Constrained Meta-Reinforcement Learning for Adaptable Safety Guarantee with
          Differentiable Convex Programming
        - Authors: Minjae Cho, Chuangchuang Sun.
        - URL: `Meta-CPO <https://arxiv.org/abs/2312.10230>`_

    Per meta-iteration: ``num_tasks`` training tasks are drawn; for each, phi_0 = theta and K =
    ``inner_steps`` differentiable CPO steps (eq. 9), each on a fresh rollout of that task, then a
    post-adaptation rollout D_K gives F_i = L_R(phi_K; D_K) and G_i = L_C(phi_K; D_K) (eq. 8, 10).
    Their exact gradients with respect to theta through all K steps (eq. 11, second order, by
    autograd through the differentiable step) feed the meta CPO step (eq. 12) with backtracking
    and the infeasible recovery of eq. 4. ``steps_per_epoch`` counts every environment step of a
    meta-iteration (all tasks, all inner steps), so comparisons with CPO at equal samples are fair.
    """

    constrained: bool = True

    # ------------------------------------------------------------------ set-up (OmniSafe hooks)
    def _init_env(self) -> None:
        validate_meta_config(self._cfgs, self._env_id)
        self._env: TaskRolloutAdapter = TaskRolloutAdapter(self._env_id, self._seed, self._cfgs)
        cfgs = self._cfgs.algo_cfgs
        self._rollout_steps = cfgs.steps_per_epoch // (cfgs.num_tasks * (cfgs.inner_steps + 1))
        self._steps_per_epoch = cfgs.steps_per_epoch

    def _init_model(self) -> None:
        self._actor_critic = ConstraintActorCritic(
            obs_space=self._env.observation_space,
            act_space=self._env.action_space,
            model_cfgs=self._cfgs.model_cfgs,
            epochs=self._cfgs.train_cfgs.epochs,
        ).to(self._device)
        self._policy = FunctionalPolicy(self._actor_critic.actor)
        self._learner = InnerLearner(
            self._policy,
            self._cfgs.algo_cfgs,
            self._env.episode_length,
            constrained=self.constrained,
        )

    def _init(self) -> None:
        self._start_iteration = 0
        self._faults = {'non_finite': 0, 'solver': 0}
        self._consecutive_failures = 0
        self._elapsed_before = 0.0
        self._last_metrics = (float('nan'),) * 3
        self._progress_callback: Callable[[int, str], None] | None = None

    def _init_log(self) -> None:
        resume_dir = self._cfgs.train_cfgs.resume
        state = checkpoint.load(resume_dir, self._cfgs) if resume_dir else None
        if state is None:
            self._logger = Logger(
                output_dir=self._cfgs.logger_cfgs.log_dir,
                exp_name=self._cfgs.exp_name,
                seed=self._cfgs.seed,
                use_tensorboard=self._cfgs.logger_cfgs.use_tensorboard,
                use_wandb=self._cfgs.logger_cfgs.use_wandb,
                config=self._cfgs,
            )
        else:
            self._logger = checkpoint.resumed_logger(resume_dir, state, self._cfgs)
        what_to_save: dict[str, Any] = {
            'pi': self._actor_critic.actor,
            'reward_critic': self._actor_critic.reward_critic,
            'cost_critic': self._actor_critic.cost_critic,
        }
        if self._cfgs.algo_cfgs.obs_normalize:
            what_to_save['obs_normalizer'] = self._env.obs_normalizer
        self._logger.setup_torch_saver(what_to_save)
        if state is None:
            self._logger.torch_save()
        else:
            self._restore(state)
        self._meta_tester = MetaTester(self._cfgs, self._env_id, self._seed, self._learner)
        for key in self._log_keys():
            self._logger.register_key(key)
        # What AlgoWrapper set from train_cfgs.torch_threads, which compat.patch_cli_defaults
        # capped to the usable cores (the stock CLI asks for 16 whatever the machine).
        self._logger.log(f'INFO: {torch.get_num_threads()} torch threads (train_cfgs.torch_threads,'
                         f' at most the {compat.usable_cores()} cores this process may use)')

    def _log_keys(self) -> list[str]:
        keys = ['Metrics/EpRet', 'Metrics/EpCost', 'Metrics/EpLen']
        keys += ['MetaTrain/PreAdapt/EpRet', 'MetaTrain/PreAdapt/EpCost']
        keys += [f'MetaTrain/Inner/Case/{case.name}' for case in CPOCase]
        keys += ['MetaTrain/Inner/StepFraction', 'MetaTrain/Inner/Backtracks',
                 'MetaTrain/Inner/Rejected', *self._INNER_DIAGNOSTICS]
        keys += ['Meta/GradNormF', 'Meta/GradNormG', 'Meta/b', 'Meta/Case', 'Meta/StepFraction',
                 'Meta/Backtracks', 'Meta/Accepted', 'Meta/StepNorm']
        keys += ['Faults/NonFinite', 'Faults/SolverErrors']
        keys += ['Loss/Loss_reward_critic', 'Loss/Loss_cost_critic', 'Value/reward', 'Value/cost']
        keys += self._meta_tester.log_keys()
        keys += ['Train/Epoch', 'TotalEnvSteps', 'Time/Rollout', 'Time/Inner', 'Time/MetaGrad',
                 'Time/MetaStep', 'Time/Critic', 'Time/MetaTest', 'Time/Epoch', 'Time/Total',
                 'Time/FPS']
        return keys

    # ------------------------------------------------------------------------------ training
    def learn(self) -> tuple[float, float, float]:
        """Run meta-iterations until ``train_cfgs.total_steps`` environment steps."""
        start = time.time() - self._elapsed_before
        epochs = self._cfgs.train_cfgs.epochs
        self._logger.log(
            f'INFO: {type(self).__name__} on {self._env_id}: {epochs} meta-iterations of '
            f'{self._cfgs.algo_cfgs.num_tasks} tasks x ({self._cfgs.algo_cfgs.inner_steps} + 1) '
            f'rollouts of {self._rollout_steps} steps',
        )
        # A progress bar over the run's environment steps (only on a terminal): the sampler
        # reports every lockstep, with the task group and inner step being sampled.
        progress = RunProgress(epochs * self._steps_per_epoch,
                               self._start_iteration * self._steps_per_epoch)
        self._progress_callback = progress.advance
        progress.start()
        try:
            self._train(start, epochs)
        finally:
            progress.close()
            self._progress_callback = None
        self._logger.close()
        self._env.close()
        return self._last_metrics

    def _train(self, start: float, epochs: int) -> None:
        """Meta-iterations (with meta-tests, logs, saves and checkpoints) up to ``epochs``."""
        for iteration in range(self._start_iteration, epochs):
            epoch_start = time.time()
            self._meta_iteration(iteration)
            if self._meta_tester.due(iteration, epochs):
                test_start = time.time()
                self._meta_tester.run(self._policy.flat_params(), self._actor_critic,
                                      self._env.obs_normalizer, self._logger)
                self._logger.store({'Time/MetaTest': time.time() - test_start})
            self._logger.store({
                'Train/Epoch': iteration,
                'TotalEnvSteps': (iteration + 1) * self._steps_per_epoch,
                'Time/Epoch': time.time() - epoch_start,
                'Time/Total': time.time() - start,
                'Time/FPS': self._steps_per_epoch / (time.time() - epoch_start),
            })
            self._logger.dump_tabular()
            last = iteration + 1 == epochs
            if (iteration + 1) % self._cfgs.logger_cfgs.save_model_freq == 0 or last:
                self._logger.torch_save()
            if (iteration + 1) % self._cfgs.train_cfgs.checkpoint_freq == 0 or last:
                checkpoint.save(self, iteration, time.time() - start)

    def _meta_iteration(self, iteration: int) -> None:
        cfgs = self._cfgs.algo_cfgs
        timers = dict.fromkeys(('Rollout', 'Inner', 'MetaGrad', 'MetaStep', 'Critic'), 0.0)
        theta = self._policy.flat_params().requires_grad_(True)
        self._env.seed_tasks(rollout_seed(self._seed, iteration, _TASKS))
        tasks = [self._env.sample_task() for _ in range(cfgs.num_tasks)]

        grad_f = torch.zeros_like(theta)
        grad_g = torch.zeros_like(theta)
        stats = AdaptationStats()
        fault = False
        self._meta_log = {'Meta/Case': -1, 'Meta/StepFraction': 0.0, 'Meta/Backtracks': 0,
                          'Meta/Accepted': 0.0, 'Meta/StepNorm': 0.0, 'Meta/b': float('nan')}
        results, losses = self._adapt_tasks(theta, tasks, iteration, stats, timers)
        tick = time.time()
        for loss_f, loss_g in losses:
            # dF_i/dtheta and dG_i/dtheta through all K steps: the exact chain of eq. (11).
            d_f = torch.autograd.grad(loss_f, theta, retain_graph=True)[0]
            d_g = torch.autograd.grad(loss_g, theta)[0]
            if not (torch.isfinite(d_f).all() and torch.isfinite(d_g).all()):
                fault = True
                self._faults['non_finite'] += 1
            grad_f += d_f / cfgs.num_tasks
            grad_g += d_g / cfgs.num_tasks
        timers['MetaGrad'] = time.time() - tick

        tick = time.time()
        accepted = False if fault else self._meta_step(theta.detach(), grad_f, grad_g, results)
        timers['MetaStep'] = time.time() - tick
        self._count_failure(fault or accepted is None)

        tick = time.time()
        self._update_critics(results, iteration)
        timers['Critic'] = time.time() - tick
        self._log_iteration(results, stats, grad_f, grad_g, timers)

    def _adapt_tasks(
        self,
        theta: torch.Tensor,
        tasks: list[Any],
        iteration: int,
        stats: AdaptationStats,
        timers: dict[str, float],
    ) -> tuple[list[TaskResult], list[tuple[torch.Tensor, torch.Tensor]]]:
        """K inner steps on every task from phi_0 = theta, then D_K and (F_i, G_i) (Alg. 1, 4-12).

        The M rollouts of inner step k are sampled together (one batched rollout of M policies,
        ``algo_cfgs.sampler``), then every task takes its own differentiable CPO step. Rollout
        seeds depend on (seed, iteration, task, k) only, so a task's data does not depend on which
        other tasks are sampled beside it.
        """
        cfgs = self._cfgs.algo_cfgs
        # phi_0 = theta for every task: a graph node of theta; each task's phi is re-bound by its
        # own steps, never modified in place, so tasks never share adapted parameters.
        phis = [theta] * len(tasks)
        records: list[list[StepRecord]] = [[] for _ in tasks]
        seeds = range(len(tasks))
        for k in range(cfgs.inner_steps + 1):
            tick = time.time()
            batches = self._env.collect_tasks(
                self._policy, phis, self._actor_critic, tasks, self._rollout_steps,
                [rollout_seed(self._seed, iteration, _ROLLOUT, index, k) for index in seeds],
                batched=cfgs.sampler == 'batched', progress=self._progress_callback,
                description=f'meta-iteration {iteration + 1}: '
                + (f'inner step {k + 1}/{cfgs.inner_steps}' if k < cfgs.inner_steps
                   else 'post-adaptation rollouts'),
            )
            timers['Rollout'] += time.time() - tick
            if k == cfgs.inner_steps:
                break
            tick = time.time()
            for index, batch in enumerate(batches):
                phis[index], record = self._learner.inner_step(phis[index], batch,
                                                               cfgs.cost_limit, create_graph=True)
                stats.record(record)
                if record.fault is not None:
                    self._faults[record.fault] += 1
                records[index].append(record)
            timers['Inner'] += time.time() - tick
        results = [TaskResult(task_records, post, phi.detach())
                   for task_records, post, phi in zip(records, batches, phis, strict=True)]
        losses = [self._learner.surrogates(phi, post) for phi, post in zip(phis, batches,
                                                                          strict=True)]
        return results, losses

    def _meta_step(
        self,
        theta: torch.Tensor,
        grad_f: torch.Tensor,
        grad_g: torch.Tensor,
        results: list[TaskResult],
    ) -> bool | None:
        """The meta CPO step of eq. (12) with backtracking; ``None`` on a solver failure."""
        cfgs = self._cfgs.algo_cfgs
        cost_limit = cfgs.cost_limit
        post_cost = float(np.mean([self._learner.cost_value(r.post) for r in results]))
        b_theta = post_cost - cost_limit
        if not self.constrained:
            grad_g, b_theta = torch.zeros_like(grad_g), -1.0
        # The meta trust region is on theta (eq. 12); with the Fisher metric, the KL of pi_theta
        # on the pre-adaptation states D_0 of every task.
        obs = torch.cat([r.records[0].batch.obs if r.records else r.post.obs for r in results])
        fvp = None
        if cfgs.metric == 'fisher':
            fvp = self._policy.fisher_vector_product(theta, obs, cfgs.cg_damping)
        try:
            step = cpo_step(grad_f, grad_g, torch.as_tensor(b_theta, dtype=theta.dtype),
                            torch.as_tensor(cfgs.meta_delta, dtype=theta.dtype),
                            backend=cfgs.dco_backend, metric=cfgs.metric, fvp=fvp)
        except CPOStepError:  # a solver failure of the cvxpylayers backend
            self._faults['solver'] += 1
            self._meta_log['Meta/b'] = b_theta
            return None
        x = step.x.detach()
        if not bool(torch.isfinite(x).all()):
            self._faults['non_finite'] += 1
            self._meta_log.update({'Meta/Case': int(step.case), 'Meta/b': b_theta})
            return None

        def post_losses(candidate: torch.Tensor) -> tuple[float, float]:
            """F and G (eq. 10) of a candidate theta: inner steps replayed on stored rollouts."""
            values_f, values_g = [], []
            for result in results:
                phi = self._learner.replay(candidate, result.records, cost_limit)
                with torch.no_grad():
                    loss_f, loss_g = self._learner.surrogates(phi, result.post)
                values_f.append(float(loss_f))
                values_g.append(float(loss_g))
            return float(np.mean(values_f)), float(np.mean(values_g))

        base_f, base_g = post_losses(theta)

        def evaluate(fraction: float) -> tuple[float, float, float]:
            candidate = theta + fraction * x
            loss_f, loss_g = post_losses(candidate)
            cost_increase = loss_g - base_g if self.constrained else 0.0
            with torch.no_grad():
                divergence = float(self._learner.trust_region_measure(theta, candidate, obs,
                                                                      cfgs.meta_delta))
            return loss_f - base_f, cost_increase, divergence

        search = self._learner.line_search(x, evaluate, int(step.case), b_theta, cfgs.meta_delta)
        if search.accepted:
            self._policy.load(theta + search.fraction * x)
        self._meta_log = {
            'Meta/Case': int(step.case),
            'Meta/StepFraction': search.fraction,
            'Meta/Backtracks': search.num_backtracks,
            'Meta/Accepted': float(search.accepted),
            'Meta/StepNorm': float(search.fraction * x.norm()),
            'Meta/b': b_theta,
        }
        return search.accepted

    def _count_failure(self, failed: bool) -> None:
        self._consecutive_failures = self._consecutive_failures + 1 if failed else 0
        limit = self._cfgs.algo_cfgs.max_consecutive_failures
        if self._consecutive_failures >= limit:
            raise MetaTrainingError(
                f'{self._consecutive_failures} consecutive meta-iterations failed (non-finite '
                f'values: {self._faults["non_finite"]}, solver errors: {self._faults["solver"]} in '
                f'all); stopping (algo_cfgs.max_consecutive_failures = {limit}). Lower '
                'algo_cfgs.inner_delta / meta_delta or try algo_cfgs.dco_backend: closed_form.',
            )

    def _update_critics(self, results: list[TaskResult], iteration: int) -> None:
        """Fit the shared reward and cost critics on every rollout of the iteration (OmniSafe's)."""
        batches = [r.batch for result in results for r in result.records] + [
            result.post for result in results
        ]
        obs = torch.cat([b.obs for b in batches])
        target_r = torch.cat([b.target_value_r for b in batches])
        target_c = torch.cat([b.target_value_c for b in batches])
        generator = torch.Generator().manual_seed(rollout_seed(self._seed, iteration, _CRITIC))
        batch_size = self._cfgs.algo_cfgs.batch_size
        for _ in range(self._cfgs.algo_cfgs.update_iters):
            # Shuffled minibatches by indexing the tensors (a DataLoader over a TensorDataset
            # fetches and collates 512 single samples per minibatch: most of the fit's time).
            order = torch.randperm(obs.shape[0], generator=generator)
            for index in order.split(batch_size):
                self._update_reward_critic(obs[index], target_r[index])
                self._update_cost_critic(obs[index], target_c[index])
        with torch.no_grad():
            self._logger.store({
                'Value/reward': self._actor_critic.reward_critic(obs)[0].mean().item(),
                'Value/cost': self._actor_critic.cost_critic(obs)[0].mean().item(),
            })

    def _log_iteration(
        self,
        results: list[TaskResult],
        stats: AdaptationStats,
        grad_f: torch.Tensor,
        grad_g: torch.Tensor,
        timers: dict[str, float],
    ) -> None:
        pre = [r.records[0].batch if r.records else r.post for r in results]
        post = [r.post for r in results]
        T = self._env.episode_length
        self._last_metrics = (
            float(np.mean([b.reward_rate * T for b in post])),
            float(np.mean([b.cost_rate * T for b in post])),
            float(np.mean([np.mean(b.ep_lengths) if b.ep_lengths else b.num_steps for b in post])),
        )
        self._logger.store({
            # Post-adaptation performance is what Meta-CPO optimises (F and G of eq. 10).
            'Metrics/EpRet': self._last_metrics[0],
            'Metrics/EpCost': self._last_metrics[1],
            'Metrics/EpLen': self._last_metrics[2],
            'MetaTrain/PreAdapt/EpRet': float(np.mean([b.reward_rate * T for b in pre])),
            'MetaTrain/PreAdapt/EpCost': float(np.mean([b.cost_rate * T for b in pre])),
            'MetaTrain/Inner/StepFraction': float(np.mean(stats.fractions or [0.0])),
            'MetaTrain/Inner/Backtracks': float(np.mean(stats.backtracks or [0])),
            'MetaTrain/Inner/Rejected': stats.rejected,
            'Meta/GradNormF': float(grad_f.norm()),
            'Meta/GradNormG': float(grad_g.norm()),
            'Faults/NonFinite': self._faults['non_finite'],
            'Faults/SolverErrors': self._faults['solver'],
        })
        self._logger.store({f'MetaTrain/Inner/Case/{name}': count
                            for name, count in stats.cases.items()})
        self._logger.store(self._inner_diagnostics(results))
        self._logger.store(self._meta_log)
        self._logger.store({f'Time/{name}': value for name, value in timers.items()})

    def _inner_diagnostics(self, results: list[TaskResult]) -> dict[str, float]:
        """How far the inner steps moved the policy, and whether the surrogates foresaw the cost.

        Per inner step k of every task: the KL between pi_phi_k and pi_phi_k+1 on D_k's states,
        the cost change the surrogate predicted on D_k (L_C(phi_k+1) - L_C(phi_k)) and the change
        measured by the next rollout (J_C(D_k+1) - J_C(D_k), cost per episode). Steps rejected
        by a fault are left out.
        """
        kls, predicted, measured = [], [], []
        for result in results:
            costs = [r.cost_value for r in result.records]
            costs.append(self._learner.cost_value(result.post))
            for k, record in enumerate(result.records):
                if record.fault is None:
                    kls.append(record.kl)
                    predicted.append(record.predicted_cost_change)
                    measured.append(costs[k + 1] - costs[k])
        if not kls:
            return dict.fromkeys(self._INNER_DIAGNOSTICS, float('nan'))
        return {
            'MetaTrain/Inner/KL': float(np.mean(kls)),
            'MetaTrain/Inner/KLMax': float(np.max(kls)),
            'MetaTrain/Inner/PredictedCostChange': float(np.mean(predicted)),
            'MetaTrain/Inner/MeasuredCostChange': float(np.mean(measured)),
            'MetaTrain/Inner/CostChangeError': float(np.mean(np.abs(np.subtract(predicted,
                                                                                measured)))),
        }

    _INNER_DIAGNOSTICS = ('MetaTrain/Inner/KL', 'MetaTrain/Inner/KLMax',
                          'MetaTrain/Inner/PredictedCostChange',
                          'MetaTrain/Inner/MeasuredCostChange', 'MetaTrain/Inner/CostChangeError')

    # ---------------------------------------------------------------------------- checkpoints
    def _restore(self, state: dict[str, Any]) -> None:
        checkpoint.restore(self, state)
