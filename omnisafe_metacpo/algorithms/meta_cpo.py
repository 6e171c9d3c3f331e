"""Meta-CPO: constrained meta-RL with differentiable convex programming (Cho & Sun, AAAI 2024)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from omnisafe.algorithms import registry
from omnisafe.algorithms.on_policy.second_order.cpo import CPO
from omnisafe.common.logger import Logger
from omnisafe.models.actor_critic.constraint_actor_critic import ConstraintActorCritic
from omnisafe.utils import distributed

from omnisafe_metacpo import checkpoint, cost_measures
from omnisafe_metacpo.config import shortest_rollout, validate_meta_config
from omnisafe_metacpo.distributed.launch import usable_cores
from omnisafe_metacpo.distributed.ranks import Ranks
from omnisafe_metacpo.evaluation.meta_tester import MetaTester
from omnisafe_metacpo.meta.inner import InnerLearner
from omnisafe_metacpo.meta.meta_step import MetaStep, MetaStepResult
from omnisafe_metacpo.meta.records import (
    ADAPTATION_KEYS,
    AdaptationStats,
    StepRecord,
    TaskResult,
    TaskSummary,
    adaptation_log,
    count_steps,
)
from omnisafe_metacpo.meta.variants import StepVariants
from omnisafe_metacpo.policy import FunctionalPolicy
from omnisafe_metacpo.progress import RunProgress
from omnisafe_metacpo.sampling.adapter import TaskRolloutAdapter, cpu_critics
from omnisafe_metacpo.sampling.batch import Batch, SeedStream, rollout_seed

#: Config keys added after runs were saved, each with the value that does what the code did before
#: the key existed (a run saved without one resumes as long as the key stays at that value).
ADDED_KEYS: dict[tuple[str, str], Any] = {
    **StepVariants.neutral_keys(),
    ('algo_cfgs', 'cost_measure'): cost_measures.BEFORE_THE_KEY,
    ('algo_cfgs', 'cost_advantage'): 'gae',
}


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

    With ``--parallel N`` the tasks of a meta-iteration are spread over torchrun ranks; every
    rank takes the same decisions and the same steps (:class:`Ranks`, which does nothing in a
    single process).
    """

    constrained: bool = True

    # ------------------------------------------------------------------ set-up (OmniSafe hooks)
    def _init_env(self) -> None:
        validate_meta_config(self._cfgs, self._env_id)
        self._variants = StepVariants.from_cfgs(self._cfgs.algo_cfgs,
                                                rollout_steps=shortest_rollout(self._cfgs))
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
        self._learner = InnerLearner(self._policy, self._cfgs.algo_cfgs, self._env.episode_length,
                                     constrained=self.constrained, variants=self._variants)
        self._meta_step = MetaStep(self._learner, self._cfgs.algo_cfgs, self._variants,
                                   constrained=self.constrained)

    def _init(self) -> None:
        self._next_iteration = 0  # after a resume: the one after the checkpoint's
        self._elapsed = 0.0  # seconds trained, before this process's start after a resume
        self._faults = {'non_finite': 0, 'solver': 0}
        self._consecutive_failures = 0
        self._last_metrics = (float('nan'),) * 3
        self._progress_callback: Callable[[int, str], None] | None = None
        # --parallel N: this rank's share of every meta-iteration's tasks, the rule that keeps
        # the observation normaliser identical on all ranks, and a watchdog that ends the rank
        # if its launcher is killed (torchrun ranks run in their own sessions).
        self._ranks = Ranks.current(self._cfgs.algo_cfgs.num_tasks)
        self._normalizer_sync = self._ranks.normalizer_sync(self._env.obs_normalizer)
        self._ranks.watch_launcher()

    def _init_log(self) -> None:
        resume_dir = self._cfgs.train_cfgs.resume
        state = checkpoint.load(resume_dir, self._cfgs, ADDED_KEYS) if resume_dir else None
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
            self.load_state_dict(state)
        self._meta_tester = MetaTester(self._cfgs, self._env_id, self._seed, self._learner)
        for key in self._log_keys():
            self._logger.register_key(key)
        if state is not None:
            # pylint: disable-next=protected-access
            checkpoint.align_progress(resume_dir, list(self._logger._current_row))
        # What AlgoWrapper set from train_cfgs.torch_threads, which the plug-in's CLI fix capped
        # to the usable cores (the stock CLI asks for 16 whatever the machine).
        self._logger.log(f'INFO: {torch.get_num_threads()} torch threads (train_cfgs.torch_threads,'
                         f' at most the {usable_cores()} cores this process may use)')
        for line in self._ranks.describe(self._cfgs.train_cfgs):
            self._logger.log(line)

    def _log_keys(self) -> list[str]:
        keys = list(ADAPTATION_KEYS)
        keys += ['Meta/GradNormF', 'Meta/GradNormG', *MetaStepResult().log_values()]
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
        start = time.time() - self._elapsed
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
                               self._next_iteration * self._steps_per_epoch,
                               enabled=None if self._ranks.is_main else False)
        share = self._cfgs.algo_cfgs.num_tasks / len(self._ranks.indices)
        self._progress_callback = progress.advance if share == 1 else (
            lambda steps, description: progress.advance(round(steps * share), description))
        progress.start()
        try:
            # A rank's error names the rank, and stops the other ranks instead of leaving them
            # waiting in a collective (torchrun ends the run when one rank fails).
            with self._ranks.failures(self._cfgs.train_cfgs.dist_timeout):
                self._train(start, epochs)
        finally:
            progress.close()
            self._progress_callback = None
        for line in self._ranks.report():
            self._logger.log(line)
        self._logger.close()
        self._env.close()
        return self._last_metrics

    def _train(self, start: float, epochs: int) -> None:
        """Meta-iterations (with meta-tests, logs, saves and checkpoints) up to ``epochs``."""
        for iteration in range(self._next_iteration, epochs):
            epoch_start = time.time()
            self._meta_iteration(iteration)
            if self._meta_tester.due(iteration, epochs) and self._ranks.is_main:
                # Meta-testing runs on rank 0 alone (every rank holds the same theta, critics
                # and normaliser): its results are those of a one-rank run with the same state.
                # The other ranks wait for it at the logger's collectives below.
                test_start = time.time()
                self._meta_tester.run(self._policy.flat_params().cpu(),
                                      cpu_critics(self._actor_critic), self._env.obs_normalizer,
                                      self._logger)
                self._logger.store({'Time/MetaTest': time.time() - test_start})
            self._ranks.store_once(self._logger, {
                'Train/Epoch': iteration, 'TotalEnvSteps': (iteration + 1) * self._steps_per_epoch})
            self._logger.store({
                'Time/Epoch': time.time() - epoch_start,
                'Time/Total': time.time() - start,
                'Time/FPS': self._steps_per_epoch / (time.time() - epoch_start),
            })
            self._logger.dump_tabular()
            self._next_iteration, self._elapsed = iteration + 1, time.time() - start
            last = iteration + 1 == epochs
            if (iteration + 1) % self._cfgs.logger_cfgs.save_model_freq == 0 or last:
                self._logger.torch_save()
            if (iteration + 1) % self._cfgs.train_cfgs.checkpoint_freq == 0 or last:
                checkpoint.save(self.state_dict(), self._logger.log_dir)

    # ------------------------------------------------------------ Algorithm 1, lines 3 to 15
    def _meta_iteration(self, iteration: int) -> None:
        """Sample M tasks, adapt each (K inner steps), meta-gradient, meta step, critics, logs."""
        timers = dict.fromkeys(('Rollout', 'Inner', 'MetaGrad', 'MetaStep', 'Critic'), 0.0)
        theta = self._policy.flat_params().requires_grad_(True)
        # Every rank draws the same M tasks and adapts its share of them (all, on one rank).
        self._env.seed_tasks(rollout_seed(self._seed, iteration, SeedStream.TASKS))
        tasks = [self._env.sample_task() for _ in range(self._cfgs.algo_cfgs.num_tasks)]
        mine = self._ranks.indices

        self._normalizer_sync.begin()
        results, losses = self._adapt_tasks(theta, [tasks[i] for i in mine], iteration, timers,
                                            indices=mine)
        self._normalizer_sync.end()  # every rank's normaliser now holds every rank's rollouts
        # What the meta step and the logs need from every task, in task order on every rank.
        summaries = TaskSummary.from_tensor(self._ranks.gather_tasks(TaskSummary.to_tensor(
            [TaskSummary.of(r, self._env.episode_length, self._learner.cost_value(r.post))
             for r in results])))
        stats = count_steps(summaries)
        self._faults['non_finite'] += stats.non_finite
        self._faults['solver'] += stats.solver_errors

        tick = time.time()
        grad_f, grad_g, finite = self._meta_gradient(theta, losses)
        timers['MetaGrad'] = time.time() - tick

        tick = time.time()
        step = MetaStepResult()  # not taken without a finite meta-gradient
        if finite:
            # b_theta from the M tasks' J_C(phi_K); the meta trust region on every task's D_0
            obs = self._pre_adaptation_states(results)
            step = self._meta_step(theta.detach(), grad_f, grad_g,
                                   float(np.mean([summary.post_value for summary in summaries])),
                                   obs, self._post_losses(results),
                                   self._ranks.mean_over(obs.shape[0]))
        if step.fault is not None:
            self._faults[step.fault] += 1
        if step.accepted:
            self._policy.load(step.theta)
        timers['MetaStep'] = time.time() - tick
        self._count_failure(not finite or step.fault is not None)

        tick = time.time()
        self._update_critics(results, iteration)
        timers['Critic'] = time.time() - tick
        self._check_ranks_identical(iteration)
        self._log_iteration(summaries, stats, grad_f, grad_g, step, timers)

    def _adapt_tasks(  # pylint: disable=too-many-arguments
        self,
        theta: torch.Tensor,
        tasks: list[Any],
        iteration: int,
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
        critics = cpu_critics(self._actor_critic)
        for k in range(cfgs.inner_steps + 1):
            tick = time.time()
            batches = self._env.collect_tasks(
                self._policy, [phi.detach().cpu() for phi in phis], critics, tasks,
                self._rollout_steps,
                [rollout_seed(self._seed, iteration, SeedStream.ROLLOUT, index, k)
                 for index in indices],
                progress=self._progress_callback,
                description=f'meta-iteration {iteration + 1}: '
                + (f'inner step {k + 1}/{cfgs.inner_steps}' if k < cfgs.inner_steps
                   else 'post-adaptation rollouts'),
            )
            batches = [batch.to(self._device) for batch in batches]
            timers['Rollout'] += time.time() - tick
            if k == cfgs.inner_steps:
                break
            tick = time.time()
            for index, batch in enumerate(batches):
                phis[index], record = self._learner.inner_step(phis[index], batch,
                                                               cfgs.cost_limit, create_graph=True)
                records[index].append(record)
            timers['Inner'] += time.time() - tick
        results = [TaskResult(task_records, post, phi.detach())
                   for task_records, post, phi in zip(records, batches, phis, strict=True)]
        losses = [self._learner.surrogates(phi, post) for phi, post in zip(phis, batches,
                                                                          strict=True)]
        return results, losses

    def _meta_gradient(self, theta: torch.Tensor, losses: list[tuple[torch.Tensor, torch.Tensor]],
                       ) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """dF/dtheta and dG/dtheta, means over all M tasks of the exact chain of eq. (11) through
        all K steps, and whether every task's gradients were finite (a task's that are not is
        counted as a fault)."""
        num_tasks = self._cfgs.algo_cfgs.num_tasks
        local = [torch.stack([torch.autograd.grad(loss_f, theta, retain_graph=True)[0],
                              torch.autograd.grad(loss_g, theta)[0]])
                 for loss_f, loss_g in losses]
        task_grads = self._ranks.gather_tasks(torch.stack(local))
        grad_f = torch.zeros_like(theta)
        grad_g = torch.zeros_like(theta)
        finite = True
        for d_f, d_g in task_grads:  # task order, whichever rank adapted the task
            if not (torch.isfinite(d_f).all() and torch.isfinite(d_g).all()):
                finite = False
                self._faults['non_finite'] += 1
            grad_f += d_f / num_tasks
            grad_g += d_g / num_tasks
        return grad_f, grad_g, finite

    @staticmethod
    def _pre_adaptation_states(results: list[TaskResult]) -> torch.Tensor:
        """The states of D_0 of this rank's tasks: where the meta step's KL is measured."""
        return torch.cat([r.records[0].batch.obs if r.records else r.post.obs for r in results])

    def _post_losses(self, results: list[TaskResult]
                     ) -> Callable[[torch.Tensor], tuple[float, float]]:
        """F and G (eq. 10) of a candidate theta, means over all M tasks in task order: each
        task's inner steps replayed on its stored rollouts (by the rank that holds them)."""
        cost_limit = self._cfgs.algo_cfgs.cost_limit

        def post_losses(candidate: torch.Tensor) -> tuple[float, float]:
            local = []
            for result in results:
                phi = self._learner.replay(candidate, result.records, cost_limit)
                with torch.no_grad():
                    loss_f, loss_g = self._learner.surrogates(phi, result.post)
                local.append([float(loss_f), float(loss_g)])
            values = self._ranks.gather_tasks(torch.tensor(local, dtype=torch.float64)).tolist()
            return (float(np.mean([value[0] for value in values])),
                    float(np.mean([value[1] for value in values])))

        return post_losses

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
        is skipped (:meth:`Ranks.local_gradients`).
        """
        # Per task: its K inner rollouts, then (after all tasks) the post-adaptation rollouts,
        # the order of one rank's fit. Columns: observation, reward target, cost target.
        def rows(batches: list[Batch]) -> torch.Tensor:
            return torch.cat([torch.cat([b.obs, b.target_value_r[:, None],
                                         b.target_value_c[:, None]], dim=1) for b in batches])

        inner = self._ranks.gather_task_data(
            [rows([r.batch for r in result.records]) for result in results])
        post = self._ranks.gather_task_data([rows([result.post]) for result in results])
        data = torch.cat(inner + post)
        obs, target_r, target_c = data[:, :-2], data[:, -2], data[:, -1]
        ac = self._actor_critic
        fits = [(self._update_reward_critic, target_r, ac.reward_critic,
                 ac.reward_critic_optimizer),
                (self._update_cost_critic, target_c, ac.cost_critic, ac.cost_critic_optimizer)]
        owned = [(update, target) for index, (update, target, _, _) in enumerate(fits)
                 if self._ranks.owns(index)]
        generator = torch.Generator().manual_seed(
            rollout_seed(self._seed, iteration, SeedStream.CRITIC))
        batch_size = self._cfgs.algo_cfgs.batch_size
        with self._ranks.local_gradients():
            for _ in range(self._cfgs.algo_cfgs.update_iters):
                # Shuffled minibatches by indexing the tensors (a DataLoader over a
                # TensorDataset fetches and collates 512 single samples per minibatch: most of
                # the fit's time).
                order = torch.randperm(obs.shape[0], generator=generator).to(obs.device)
                for start in range(0, obs.shape[0], batch_size):
                    index = order[start:start + batch_size]
                    for update, target in owned:
                        update(obs[index], target[index])
        for index, (_, _, critic, optimizer) in enumerate(fits):
            self._ranks.share_from_owner(index, critic, optimizer)
        with torch.no_grad():
            self._ranks.store_once(self._logger, {
                'Value/reward': self._actor_critic.reward_critic(obs)[0].mean().item(),
                'Value/cost': self._actor_critic.cost_critic(obs)[0].mean().item()})

    def _check_ranks_identical(self, iteration: int) -> None:
        """Compare theta, the critics with their optimisers and the normaliser across ranks."""
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
        self._ranks.check_identical(
            tensors, f'after meta-iteration {iteration + 1}: theta, the critics or the normaliser')

    def _log_iteration(  # pylint: disable=too-many-arguments
        self,
        summaries: list[TaskSummary],
        stats: AdaptationStats,
        grad_f: torch.Tensor,
        grad_g: torch.Tensor,
        step: MetaStepResult,
        timers: dict[str, float],
    ) -> None:
        """Store the meta-iteration's statistics over all M tasks (once) and this rank's times."""
        values = adaptation_log(summaries, stats)
        self._last_metrics = (values['Metrics/EpRet'], values['Metrics/EpCost'],
                              values['Metrics/EpLen'])
        self._ranks.store_once(self._logger, {
            **values,
            'Meta/GradNormF': float(grad_f.norm()),
            'Meta/GradNormG': float(grad_g.norm()),
            **step.log_values(),
            'Faults/NonFinite': self._faults['non_finite'],
            'Faults/SolverErrors': self._faults['solver'],
        })
        self._logger.store({f'Time/{name}': value for name, value in timers.items()})

    # ---------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything the next meta-iteration depends on that the seed does not give
        (:mod:`omnisafe_metacpo.checkpoint`)."""
        actor_critic = self._actor_critic
        normalizer = self._env.obs_normalizer
        return {
            'iteration': self._next_iteration - 1,
            'progress_rows': self._logger.current_epoch,
            'elapsed': self._elapsed,
            'actor': actor_critic.actor.state_dict(),
            'reward_critic': actor_critic.reward_critic.state_dict(),
            'cost_critic': actor_critic.cost_critic.state_dict(),
            'reward_critic_optimizer': actor_critic.reward_critic_optimizer.state_dict(),
            'cost_critic_optimizer': actor_critic.cost_critic_optimizer.state_dict(),
            'obs_normalizer': None if normalizer is None else normalizer.state_dict(),
            'faults': dict(self._faults),
            'consecutive_failures': self._consecutive_failures,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` (a checkpoint of this or an older version)."""
        actor_critic = self._actor_critic
        actor_critic.actor.load_state_dict(state['actor'])
        actor_critic.reward_critic.load_state_dict(state['reward_critic'])
        actor_critic.cost_critic.load_state_dict(state['cost_critic'])
        actor_critic.reward_critic_optimizer.load_state_dict(state['reward_critic_optimizer'])
        actor_critic.cost_critic_optimizer.load_state_dict(state['cost_critic_optimizer'])
        if state['obs_normalizer'] is not None:
            self._env.obs_normalizer.load_state_dict(state['obs_normalizer'])
        self._faults = dict(state['faults'])
        self._consecutive_failures = int(state['consecutive_failures'])
        self._next_iteration = int(state['iteration']) + 1
        self._elapsed = float(state['elapsed'])
