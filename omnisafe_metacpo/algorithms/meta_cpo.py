"""Meta-CPO: constrained meta-RL with differentiable convex programming (Cho & Sun, AAAI 2024)."""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from omnisafe.algorithms import registry
from omnisafe.algorithms.on_policy.second_order.cpo import CPO
from omnisafe.common.logger import Logger
from omnisafe.models.actor_critic.constraint_actor_critic import ConstraintActorCritic
from omnisafe.utils import distributed

from omnisafe_metacpo import checkpoint, compat, parallel
from omnisafe_metacpo.adaptation import AdaptationStats, InnerLearner, StepRecord
from omnisafe_metacpo.config import validate_meta_config
from omnisafe_metacpo.cpo_step import CPOCase, CPOStepError, cpo_step
from omnisafe_metacpo.cpo_step.fisher import cg_solve
from omnisafe_metacpo.meta_test import MetaTester
from omnisafe_metacpo.policy import FunctionalPolicy
from omnisafe_metacpo.progress import RunProgress
from omnisafe_metacpo.rollout import Batch, TaskRolloutAdapter, rollout_seed

_TASKS, _ROLLOUT, _CRITIC = 1, 2, 3  # streams of per-iteration seeds
#: Columns of a task's summary row (``MetaCPO._task_summary``), then :data:`_STEP` per inner step.
#: ``*_cost``: OmniSafe's undiscounted cost per episode; ``*_disc_cost``: the paper's discounted
#: J_C; ``post_value``: J_C(phi_K) on the scale of ``algo_cfgs.cost_measure`` (b of the meta step).
_SUMMARY = ('post_return', 'post_cost', 'post_length', 'pre_return', 'pre_cost', 'samples',
            'post_disc_cost', 'pre_disc_cost', 'post_value')
_STEP = ('fraction', 'backtracks', 'case', 'fault', 'kl', 'predicted_cost_change', 'cost')
#: Inner-step faults, coded by their index in a summary row.
_FAULTS = (None, 'non_finite', 'solver')


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
        # BaseAlgo offsets the seed by 1000 * rank, so that OmniSafe's ranks sample different
        # data. Here every rank must draw the same M tasks, and task i the same rollout seeds
        # whichever rank adapts it: everything is seeded from the run's seed, whatever N.
        self._seed = int(self._cfgs.seed)
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
        # All ranks start from rank 0's networks (BaseAlgo seeded each rank differently), as
        # OmniSafe's PolicyGradient does; rank 0's are those of a one-rank run with this seed.
        distributed.sync_params(self._actor_critic)
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
        # --parallel N: this rank's share of every meta-iteration's tasks, the rule that keeps
        # the observation normaliser identical on all ranks, and a watchdog that ends the rank
        # if its launcher is killed (torchrun ranks run in their own sessions).
        self._rank = parallel.rank()
        self._task_indices = parallel.task_indices(self._cfgs.algo_cfgs.num_tasks)
        self._normalizer_sync = parallel.NormalizerSync(self._env.obs_normalizer)
        self._digests: list[str] = []
        if parallel.world_size() > 1:
            parallel.LauncherWatchdog().start()

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
        if state is not None:
            # pylint: disable-next=protected-access
            checkpoint.align_progress(resume_dir, list(self._logger._current_row))
        # What AlgoWrapper set from train_cfgs.torch_threads, which compat.patch_cli_defaults
        # capped to the usable cores (the stock CLI asks for 16 whatever the machine).
        self._logger.log(f'INFO: {torch.get_num_threads()} torch threads (train_cfgs.torch_threads,'
                         f' at most the {compat.usable_cores()} cores this process may use)')
        self._log_ranks()

    def _log_ranks(self) -> None:
        """Say how the tasks are spread over ranks, and each rank's pid (to find a stuck one)."""
        size = parallel.world_size()
        if size == 1:
            return
        pids = [int(p) for p in parallel.gather_rows(torch.tensor([os.getpid()]))]
        train = self._cfgs.train_cfgs
        shares = [len(range(r, self._cfgs.algo_cfgs.num_tasks, size)) for r in range(size)]
        self._logger.log(
            f'INFO: {size} ranks ({parallel.backend(train.device)}, collectives time out after '
            f'train_cfgs.dist_timeout = {train.dist_timeout} s); tasks per rank {shares}; '
            f'rank pids {pids}',
        )

    def _log_keys(self) -> list[str]:
        keys = ['Metrics/EpRet', 'Metrics/EpCost', 'Metrics/EpDiscCost', 'Metrics/EpLen']
        keys += ['MetaTrain/PreAdapt/EpRet', 'MetaTrain/PreAdapt/EpCost',
                 'MetaTrain/PreAdapt/EpDiscCost']
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
        # reports every lockstep, with the task group and inner step being sampled. With
        # several ranks only rank 0 draws it, scaling its own steps to all ranks' (M tasks for
        # its share of them).
        progress = RunProgress(epochs * self._steps_per_epoch,
                               self._start_iteration * self._steps_per_epoch,
                               enabled=None if self._rank == 0 else False)
        share = self._cfgs.algo_cfgs.num_tasks / len(self._task_indices)
        self._progress_callback = progress.advance if share == 1 else (
            lambda steps, description: progress.advance(round(steps * share), description))
        progress.start()
        try:
            # A rank's error names the rank, and stops the other ranks instead of leaving them
            # waiting in a collective (torchrun ends the run when one rank fails).
            with parallel.rank_failures(self._cfgs.train_cfgs.dist_timeout):
                self._train(start, epochs)
        finally:
            progress.close()
            self._progress_callback = None
        if parallel.world_size() > 1:
            self._logger.log(f'INFO: state digest per rank after the last meta-iteration: '
                             f'{self._digests} (theta, critics and their optimisers, normaliser)')
        self._logger.close()
        self._env.close()
        return self._last_metrics

    def _train(self, start: float, epochs: int) -> None:
        """Meta-iterations (with meta-tests, logs, saves and checkpoints) up to ``epochs``."""
        for iteration in range(self._start_iteration, epochs):
            epoch_start = time.time()
            self._meta_iteration(iteration)
            if self._meta_tester.due(iteration, epochs) and self._rank == 0:
                # Meta-testing runs on rank 0 alone (every rank holds the same theta, critics
                # and normaliser): its results are those of a one-rank run with the same state.
                # The other ranks wait for it at the logger's collectives below.
                test_start = time.time()
                self._meta_tester.run(self._policy.flat_params().cpu(), self._rollout_critics(),
                                      self._env.obs_normalizer, self._logger)
                self._logger.store({'Time/MetaTest': time.time() - test_start})
            self._store({'Train/Epoch': iteration,
                         'TotalEnvSteps': (iteration + 1) * self._steps_per_epoch})
            self._logger.store({
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
        num_tasks = cfgs.num_tasks
        timers = dict.fromkeys(('Rollout', 'Inner', 'MetaGrad', 'MetaStep', 'Critic'), 0.0)
        theta = self._policy.flat_params().requires_grad_(True)
        # Every rank draws the same M tasks and adapts its share of them (all, on one rank).
        self._env.seed_tasks(rollout_seed(self._seed, iteration, _TASKS))
        tasks = [self._env.sample_task() for _ in range(num_tasks)]
        mine = self._task_indices

        self._meta_log = {'Meta/Case': -1, 'Meta/StepFraction': 0.0, 'Meta/Backtracks': 0,
                          'Meta/Accepted': 0.0, 'Meta/StepNorm': 0.0, 'Meta/b': float('nan')}
        self._normalizer_sync.begin()
        results, losses = self._adapt_tasks(theta, [tasks[i] for i in mine], iteration,
                                            AdaptationStats(), timers, indices=mine)
        self._normalizer_sync.end()  # every rank's normaliser now holds every rank's rollouts
        # What the meta step and the logs need from every task, in task order on every rank.
        summary = parallel.gather_tasks(self._task_summary(results), num_tasks)
        stats = self._global_stats(summary)
        self._faults['non_finite'] += stats.non_finite
        self._faults['solver'] += stats.solver_errors

        tick = time.time()
        # dF_i/dtheta and dG_i/dtheta through all K steps: the exact chain of eq. (11).
        local = [torch.stack([torch.autograd.grad(loss_f, theta, retain_graph=True)[0],
                              torch.autograd.grad(loss_g, theta)[0]])
                 for loss_f, loss_g in losses]
        task_grads = parallel.gather_tasks(torch.stack(local), num_tasks)
        grad_f = torch.zeros_like(theta)
        grad_g = torch.zeros_like(theta)
        fault = False
        for d_f, d_g in task_grads:  # task order, whichever rank adapted the task
            if not (torch.isfinite(d_f).all() and torch.isfinite(d_g).all()):
                fault = True
                self._faults['non_finite'] += 1
            grad_f += d_f / num_tasks
            grad_g += d_g / num_tasks
        timers['MetaGrad'] = time.time() - tick

        tick = time.time()
        accepted = False if fault else self._meta_step(theta.detach(), grad_f, grad_g, results,
                                                       summary)
        timers['MetaStep'] = time.time() - tick
        self._count_failure(fault or accepted is None)

        tick = time.time()
        self._update_critics(results, iteration)
        timers['Critic'] = time.time() - tick
        self._check_ranks_identical(iteration)
        self._log_iteration(summary, stats, grad_f, grad_g, timers)

    def _adapt_tasks(  # pylint: disable=too-many-arguments
        self,
        theta: torch.Tensor,
        tasks: list[Any],
        iteration: int,
        stats: AdaptationStats,
        timers: dict[str, float],
        indices: list[int] | None = None,
    ) -> tuple[list[TaskResult], list[tuple[torch.Tensor, torch.Tensor]]]:
        """K inner steps on every task from phi_0 = theta, then D_K and (F_i, G_i) (Alg. 1, 4-12).

        The rollouts of inner step k are sampled together (one batched rollout of the tasks'
        policies, ``algo_cfgs.sampler``), then every task takes its own differentiable CPO step.
        Rollout seeds depend on (seed, iteration, task index, k) only, so a task's data does not
        depend on which other tasks are sampled beside it, nor on which rank samples it.

        Args:
            theta: The meta-parameters (a leaf that requires grad).
            tasks: The tasks to adapt (this rank's share of the meta-iteration's tasks).
            iteration: The meta-iteration (rollout seeds).
            stats: Counts the inner steps.
            timers: Accumulates rollout and inner-step time.
            indices: The tasks' indices among the meta-iteration's M tasks (rollout seeds);
                ``None``: 0, 1, ...
        """
        cfgs = self._cfgs.algo_cfgs
        indices = list(range(len(tasks))) if indices is None else indices
        # phi_0 = theta for every task: a graph node of theta; each task's phi is re-bound by its
        # own steps, never modified in place, so tasks never share adapted parameters.
        phis = [theta] * len(tasks)
        records: list[list[StepRecord]] = [[] for _ in tasks]
        critics = self._rollout_critics()
        for k in range(cfgs.inner_steps + 1):
            tick = time.time()
            batches = self._env.collect_tasks(
                self._policy, [phi.detach().cpu() for phi in phis], critics, tasks,
                self._rollout_steps,
                [rollout_seed(self._seed, iteration, _ROLLOUT, index, k) for index in indices],
                batched=cfgs.sampler == 'batched', progress=self._progress_callback,
                description=f'meta-iteration {iteration + 1}: '
                + (f'inner step {k + 1}/{cfgs.inner_steps}' if k < cfgs.inner_steps
                   else 'post-adaptation rollouts'),
            )
            batches = [self._to_device(batch) for batch in batches]
            timers['Rollout'] += time.time() - tick
            if k == cfgs.inner_steps:
                break
            tick = time.time()
            for index, batch in enumerate(batches):
                phis[index], record = self._learner.inner_step(phis[index], batch,
                                                               cfgs.cost_limit, create_graph=True)
                stats.record(record)
                records[index].append(record)
            timers['Inner'] += time.time() - tick
        results = [TaskResult(task_records, post, phi.detach())
                   for task_records, post, phi in zip(records, batches, phis, strict=True)]
        losses = [self._learner.surrogates(phi, post) for phi, post in zip(phis, batches,
                                                                          strict=True)]
        return results, losses

    # --------------------------------------------------------------- devices (train_cfgs.device)
    def _rollout_critics(self) -> Any:
        """The critics as the samplers use them: on the CPU, where the environments step.

        With ``train_cfgs.device: cuda`` the learner's networks live on the GPU; rollouts run
        CPU copies (made once per meta-iteration: the critics change only at its end) and their
        data moves to the GPU (:meth:`_to_device`). On the CPU these are the critics themselves.
        """
        if self._device.type == 'cpu':
            return self._actor_critic
        return SimpleNamespace(
            reward_critic=copy.deepcopy(self._actor_critic.reward_critic).cpu(),
            cost_critic=copy.deepcopy(self._actor_critic.cost_critic).cpu(),
        )

    def _to_device(self, batch: Batch) -> Batch:
        """A rollout's tensors on the learner's device (the batch itself on the CPU)."""
        if self._device.type == 'cpu':
            return batch
        moved = {field.name: getattr(batch, field.name).to(self._device)
                 for field in dataclasses.fields(batch)
                 if isinstance(getattr(batch, field.name), torch.Tensor)}
        return dataclasses.replace(batch, **moved)

    # ------------------------------------------------------------------ tasks across ranks
    def _task_summary(self, results: list[TaskResult]) -> torch.Tensor:
        """One float64 row per task of this rank: what the meta step and the logs need.

        Columns :data:`_SUMMARY`, then :data:`_STEP` for each inner step k. Gathered over ranks
        in task order (:func:`parallel.gather_tasks`), the rows let every rank compute the same
        statistics, in the same order, as one rank holding every task would.
        """
        length = self._env.episode_length
        rows = []
        for result in results:
            pre = result.records[0].batch if result.records else result.post
            post = result.post
            row = [post.reward_rate * length, post.cost_rate * length,
                   float(np.mean(post.ep_lengths)) if post.ep_lengths else float(post.num_steps),
                   pre.reward_rate * length, pre.cost_rate * length,
                   float(sum(r.batch.num_steps for r in result.records) + post.num_steps),
                   post.disc_cost, pre.disc_cost, self._learner.cost_value(post)]
            for record in result.records:
                row += [record.fraction, record.backtracks, record.case,
                        _FAULTS.index(record.fault), record.kl, record.predicted_cost_change,
                        record.cost_value]
            rows.append(row)
        return torch.tensor(rows, dtype=torch.float64)

    @staticmethod
    def _step_column(k: int, name: str) -> int:
        """Column of ``name`` (one of :data:`_STEP`) of inner step k in a task summary."""
        return len(_SUMMARY) + k * len(_STEP) + _STEP.index(name)

    def _global_stats(self, summary: torch.Tensor) -> AdaptationStats:
        """The inner steps of all tasks counted in the order one rank records them (k, task)."""
        stats = AdaptationStats()
        rows = summary.tolist()
        column = self._step_column
        for k in range(self._cfgs.algo_cfgs.inner_steps):
            for row in rows:
                stats.count(row[column(k, 'fraction')], int(row[column(k, 'case')]),
                            int(row[column(k, 'backtracks')]),
                            _FAULTS[int(row[column(k, 'fault')])], row[column(k, 'kl')])
        return stats

    def _store(self, values: dict[str, Any]) -> None:
        """Log values that every rank holds (reduced over all tasks) once, from rank 0.

        OmniSafe's logger averages a key over every value stored on every rank, so a value known
        to all ranks is stored by rank 0 alone; timings, which differ, are stored by every rank
        (their mean is logged).
        """
        if self._rank == 0:
            self._logger.store(values)

    def _check_ranks_identical(self, iteration: int) -> None:
        """Compare theta, the critics with their optimisers and the normaliser across ranks."""
        if parallel.world_size() == 1:
            return
        tensors = list(self._actor_critic.actor.parameters())
        for critic, optimizer in (
            (self._actor_critic.reward_critic, self._actor_critic.reward_critic_optimizer),
            (self._actor_critic.cost_critic, self._actor_critic.cost_critic_optimizer),
        ):
            tensors += list(critic.parameters())
            for state in optimizer.state_dict()['state'].values():
                tensors += [value for value in state.values() if isinstance(value, torch.Tensor)]
        if self._env.obs_normalizer is not None:
            tensors += list(self._env.obs_normalizer.state_dict().values())
        self._digests = parallel.check_identical(
            parallel.state_digest(tensors),
            f'after meta-iteration {iteration + 1}: theta, the critics or the normaliser',
        )

    def _meta_step(
        self,
        theta: torch.Tensor,
        grad_f: torch.Tensor,
        grad_g: torch.Tensor,
        results: list[TaskResult],
        summary: torch.Tensor,
    ) -> bool | None:
        """The meta CPO step of eq. (12) with backtracking; ``None`` on a solver failure.

        Args:
            theta: The meta-parameters.
            grad_f: dF/dtheta, the mean over all M tasks.
            grad_g: dG/dtheta, the mean over all M tasks.
            results: This rank's tasks (their stored rollouts, replayed by the line search).
            summary: Every task's summary row, in task order (:meth:`_task_summary`).
        """
        cfgs = self._cfgs.algo_cfgs
        cost_limit = cfgs.cost_limit
        # b_theta = mean_i J_C(phi_i^K) - h over all M tasks (J_C on the scale of cost_measure).
        post_cost = float(np.mean(summary[:, _SUMMARY.index('post_value')].tolist()))
        b_theta = post_cost - cost_limit
        if not self.constrained:
            grad_g, b_theta = torch.zeros_like(grad_g), -1.0
        # The meta trust region is on theta (eq. 12); with the Fisher metric, the KL of pi_theta
        # on the pre-adaptation states D_0 of every task. A rank holds its tasks' states: means
        # over them are averaged over ranks, weighted by their number of states.
        obs = torch.cat([r.records[0].batch.obs if r.records else r.post.obs for r in results])
        mean_over = None
        if parallel.world_size() > 1:
            def mean_over(local_mean: torch.Tensor) -> torch.Tensor:
                return parallel.weighted_average(local_mean, obs.shape[0])
        fvp = None
        if cfgs.metric == 'fisher' and mean_over is None:
            fvp = self._policy.fisher_vector_product(theta, obs, cfgs.cg_damping)
        elif cfgs.metric == 'fisher':
            # (F + damping I) v with F the KL's Hessian on all ranks' states.
            local_fvp = self._policy.fisher_vector_product(theta, obs, 0.0)

            def global_fvp(vector: torch.Tensor) -> torch.Tensor:
                return mean_over(local_fvp(vector)) + cfgs.cg_damping * vector

            fvp = global_fvp
        try:
            step = cpo_step(grad_f, grad_g,
                            torch.as_tensor(b_theta, dtype=theta.dtype, device=theta.device),
                            torch.as_tensor(cfgs.meta_delta, dtype=theta.dtype,
                                            device=theta.device),
                            backend=cfgs.dco_backend, metric=cfgs.metric, fvp=fvp)
        except CPOStepError:  # a solver failure of the cvxpylayers backend
            self._faults['solver'] += 1
            self._meta_log['Meta/b'] = b_theta
            return None
        x, case = step.x.detach(), int(step.case)
        if self.constrained and b_theta > 0 and cfgs.get('meta_over_limit', 'cpo') == 'recover':
            # (Not in the paper: algo_cfgs.meta_over_limit.) Over the limit, the recovery step of
            # eq. (4) even where the linearised problem is feasible: CPO then also climbs F on the
            # promise of a cost drop that the (noisy, optimistic) dG/dtheta makes and the next
            # rollouts do not show (README, issue 10).
            direction = grad_g.detach() if fvp is None else cg_solve(fvp, grad_g.detach())
            x = -torch.sqrt(2 * cfgs.meta_delta / (grad_g.detach() @ direction)) * direction
            case = int(CPOCase.INFEASIBLE_RECOVERY)
        if not bool(torch.isfinite(x).all()):
            self._faults['non_finite'] += 1
            self._meta_log.update({'Meta/Case': case, 'Meta/b': b_theta})
            return None

        def post_losses(candidate: torch.Tensor) -> tuple[float, float]:
            """F and G (eq. 10) of a candidate theta: inner steps replayed on stored rollouts.

            Each rank replays its tasks; the means are over all M tasks, in task order.
            """
            local = []
            for result in results:
                phi = self._learner.replay(candidate, result.records, cost_limit)
                with torch.no_grad():
                    loss_f, loss_g = self._learner.surrogates(phi, result.post)
                local.append([float(loss_f), float(loss_g)])
            values = parallel.gather_tasks(torch.tensor(local, dtype=torch.float64),
                                           cfgs.num_tasks).tolist()
            return (float(np.mean([value[0] for value in values])),
                    float(np.mean([value[1] for value in values])))

        base_f, base_g = post_losses(theta)

        def evaluate(fraction: float) -> tuple[float, float, float]:
            candidate = theta + fraction * x
            loss_f, loss_g = post_losses(candidate)
            cost_increase = loss_g - base_g if self.constrained else 0.0
            with torch.no_grad():
                divergence = float(self._learner.trust_region_measure(
                    theta, candidate, obs, cfgs.meta_delta, mean_over=mean_over))
            return loss_f - base_f, cost_increase, divergence

        search = self._learner.line_search(x, evaluate, case, b_theta, cfgs.meta_delta)
        if search.accepted:
            self._policy.load(theta + search.fraction * x)
        self._meta_log = {
            'Meta/Case': case,
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
        """Fit the shared reward and cost critics on every rollout of the iteration (OmniSafe's).

        With several ranks the rollouts of all tasks are gathered once (one collective) and the
        critics are fitted on their union, in the order and with the shuffling one rank uses; the
        two critics are independent, so rank 0 fits the reward critic and rank 1 (mod N) the cost
        critic, then each hands its critic and optimiser state to the others. The critics of an
        N-rank run are those of a one-rank run, bit for bit, and OmniSafe's per-minibatch gradient
        averaging, a collective per parameter per minibatch that cost more than the fit itself,
        is skipped (:func:`parallel.local_gradients`).
        """
        # Per task: its K inner rollouts, then (after all tasks) the post-adaptation rollouts,
        # the order of one rank's fit. Columns: observation, reward target, cost target.
        def rows(batches: list[Batch]) -> torch.Tensor:
            return torch.cat([torch.cat([b.obs, b.target_value_r[:, None],
                                         b.target_value_c[:, None]], dim=1) for b in batches])

        num_tasks = self._cfgs.algo_cfgs.num_tasks
        inner = parallel.gather_task_data(
            [rows([r.batch for r in result.records]) for result in results], num_tasks)
        post = parallel.gather_task_data([rows([result.post]) for result in results], num_tasks)
        data = torch.cat(inner + post)
        obs, target_r, target_c = data[:, :-2], data[:, -2], data[:, -1]
        ac = self._actor_critic
        fits = [(parallel.owner(0), self._update_reward_critic, target_r,
                 ac.reward_critic, ac.reward_critic_optimizer),
                (parallel.owner(1), self._update_cost_critic, target_c,
                 ac.cost_critic, ac.cost_critic_optimizer)]
        mine = [(update, target) for owner, update, target, _, _ in fits if owner == self._rank]
        generator = torch.Generator().manual_seed(rollout_seed(self._seed, iteration, _CRITIC))
        batch_size = self._cfgs.algo_cfgs.batch_size
        with parallel.local_gradients():
            for _ in range(self._cfgs.algo_cfgs.update_iters):
                # Shuffled minibatches by indexing the tensors (a DataLoader over a
                # TensorDataset fetches and collates 512 single samples per minibatch: most of
                # the fit's time).
                order = torch.randperm(obs.shape[0], generator=generator).to(obs.device)
                for start in range(0, obs.shape[0], batch_size):
                    index = order[start:start + batch_size]
                    for update, target in mine:
                        update(obs[index], target[index])
        for owner, _, _, critic, optimizer in fits:
            parallel.share_from(owner, critic, optimizer)
        with torch.no_grad():
            self._store({'Value/reward': self._actor_critic.reward_critic(obs)[0].mean().item(),
                         'Value/cost': self._actor_critic.cost_critic(obs)[0].mean().item()})

    def _log_iteration(
        self,
        summary: torch.Tensor,
        stats: AdaptationStats,
        grad_f: torch.Tensor,
        grad_g: torch.Tensor,
        timers: dict[str, float],
    ) -> None:
        """Store the meta-iteration's statistics over all M tasks (rank 0) and this rank's times."""
        columns = summary.T.tolist()  # one list per summary column, tasks in order

        def mean(name: str) -> float:
            return float(np.mean(columns[_SUMMARY.index(name)]))

        self._last_metrics = (mean('post_return'), mean('post_cost'), mean('post_length'))
        self._store({
            # Post-adaptation performance is what Meta-CPO optimises (F and G of eq. 10).
            'Metrics/EpRet': self._last_metrics[0],
            'Metrics/EpCost': self._last_metrics[1],
            'Metrics/EpLen': self._last_metrics[2],
            'Metrics/EpDiscCost': mean('post_disc_cost'),
            'MetaTrain/PreAdapt/EpRet': mean('pre_return'),
            'MetaTrain/PreAdapt/EpCost': mean('pre_cost'),
            'MetaTrain/PreAdapt/EpDiscCost': mean('pre_disc_cost'),
            'MetaTrain/Inner/StepFraction': float(np.mean(stats.fractions or [0.0])),
            'MetaTrain/Inner/Backtracks': float(np.mean(stats.backtracks or [0])),
            'MetaTrain/Inner/Rejected': stats.rejected,
            'Meta/GradNormF': float(grad_f.norm()),
            'Meta/GradNormG': float(grad_g.norm()),
            'Faults/NonFinite': self._faults['non_finite'],
            'Faults/SolverErrors': self._faults['solver'],
        })
        self._store({f'MetaTrain/Inner/Case/{name}': count
                     for name, count in stats.cases.items()})
        self._store(self._inner_diagnostics(summary))
        self._store(self._meta_log)
        self._logger.store({f'Time/{name}': value for name, value in timers.items()})

    def _inner_diagnostics(self, summary: torch.Tensor) -> dict[str, float]:
        """How far the inner steps moved the policy, and whether the surrogates foresaw the cost.

        Per inner step k of every task: the KL between pi_phi_k and pi_phi_k+1 on D_k's states,
        the cost change the surrogate predicted on D_k (L_C(phi_k+1) - L_C(phi_k)) and the change
        measured by the next rollout (J_C(D_k+1) - J_C(D_k), cost per episode on the scale of
        ``algo_cfgs.cost_measure``). Steps rejected by a fault are left out.
        """
        kls, predicted, measured = [], [], []
        column = self._step_column
        steps = range(self._cfgs.algo_cfgs.inner_steps)
        for row in summary.tolist():  # tasks in order
            costs = [row[column(k, 'cost')] for k in steps]
            costs.append(row[_SUMMARY.index('post_value')])
            for k in steps:
                if _FAULTS[int(row[column(k, 'fault')])] is None:
                    kls.append(row[column(k, 'kl')])
                    predicted.append(row[column(k, 'predicted_cost_change')])
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
