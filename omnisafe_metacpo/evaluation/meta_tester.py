"""Meta-testing: few-shot CPO adaptation on unseen tasks of the ``test`` split.

From the meta-parameters theta, each test task is adapted with ``adapt_steps`` CPO steps (the same
inner learner as in training, first order, cost limit ``meta_test_cfgs.cost_limit``), and the return
and cost of the rollout before each step are logged: ``MetaTest/EpRet/step_0`` is theta itself,
``step_k`` the policy after k adaptation steps. The test tasks are the same at every evaluation
(a fixed seed), so curves over training compare like with like. Test rollouts are not training
data: they update neither theta nor the critics, and they run on a copy of the observation
normaliser.

Costs are logged on both scales: ``MetaTest/EpCost/step_k`` is OmniSafe's undiscounted cost per
episode, ``MetaTest/EpDiscCost/step_k`` the paper's discounted J_C (``algo_cfgs.cost_gamma``;
:mod:`omnisafe_metacpo.cost_measures`).

With ``meta_test_cfgs.eval_episodes`` > 0, the policy of every step k (0 .. K) is also evaluated
as the paper's Figure 5 and OmniSafe's ``Evaluator`` do: that many episodes per task with the mean
action, on seeds of their own (``MetaTest/Eval/EpRet/step_k``, ``.../EpCost/...``,
``.../EpDiscCost/...``). Evaluation rollouts feed no adaptation step and leave the observation
normaliser as they found it, so the adaptation numbers are the same with and without them.

The same tester meta-tests saved runs of any algorithm
(:mod:`omnisafe_metacpo.evaluation.saved_run`).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from omnisafe_metacpo.meta.inner import InnerLearner
from omnisafe_metacpo.sampling.adapter import TaskRolloutAdapter
from omnisafe_metacpo.sampling.batch import SeedStream, rollout_seed

#: What a meta-test reports per step, for the adaptation rollouts (``MetaTest/<name>/step_k``)
#: and the deterministic evaluation (``MetaTest/Eval/<name>/step_k``).
MEASURES = ('EpRet', 'EpCost', 'EpDiscCost')


class MetaTester:
    """Adapts theta on unseen test tasks and logs return and cost after each adaptation step.

    Args:
        cfgs: The run's config (``meta_test_cfgs`` and ``algo_cfgs``).
        env_id: The env id (its ``test`` split is used).
        seed: The run's seed (fixes the test tasks and the test rollouts).
        learner: The inner learner of the run (its steps adapt the test tasks).
        task_seed: Draw the test tasks from this seed instead of ``seed`` (rollouts keep theirs).
        adapter: The test split's rollouts (default: built on first use from ``cfgs``).
    """

    def __init__(
        self,
        cfgs: Any,
        env_id: str,
        seed: int,
        learner: InnerLearner,
        task_seed: int | None = None,
        adapter: TaskRolloutAdapter | None = None,
    ) -> None:
        self._cfgs = cfgs
        self._test = cfgs.meta_test_cfgs
        self._env_id = env_id
        self._seed = seed
        self._task_seed = seed if task_seed is None else int(task_seed)
        self._learner = learner
        self._adapter = adapter

    @property
    def cost_limit(self) -> float:
        """h while adapting at test time."""
        limit = self._test.cost_limit
        return float(self._cfgs.algo_cfgs.cost_limit if limit is None else limit)

    @property
    def eval_episodes(self) -> int:
        """Deterministic evaluation episodes per task and step (0: no evaluation)."""
        return int(self._test.get('eval_episodes') or 0)

    def log_keys(self) -> list[str]:
        """The keys :meth:`run` stores."""
        steps = range(self._test.adapt_steps + 1)
        prefixes = ['MetaTest'] + (['MetaTest/Eval'] if self.eval_episodes else [])
        return [f'{prefix}/{name}/step_{k}' for prefix in prefixes for name in MEASURES
                for k in steps]

    def due(self, iteration: int, epochs: int) -> bool:
        """Whether to meta-test after ``iteration`` (every ``freq`` and after the last)."""
        freq = self._test.freq
        return freq > 0 and ((iteration + 1) % freq == 0 or iteration + 1 == epochs)

    def _env(self) -> TaskRolloutAdapter:
        if self._adapter is None:
            self._adapter = TaskRolloutAdapter(self._env_id, self._seed, self._cfgs, split='test')
        return self._adapter

    def run(  # pylint: disable=too-many-locals
        self,
        theta: torch.Tensor,
        actor_critic: Any,
        obs_normalizer: torch.nn.Module | None,
        logger: Any | None = None,
        trace: list[dict[str, float]] | None = None,
    ) -> dict[str, float]:
        """Meta-test theta; store the results in ``logger`` (if given) and return them.

        Args:
            theta: The meta-parameters (flat).
            actor_critic: Gives the critics for the advantages of the adaptation steps.
            obs_normalizer: The training normaliser, copied (not updated) for the test env.
            logger: Where to store the ``MetaTest/...`` values.
            trace: If given, one row per adaptation step is appended: task, step k, the cost per
                episode of the rollout it was computed from (``cost_before``), of another
                rollout of the same policy (``cost_control``: tracing samples one more rollout
                per step, outside the results) and of the next (``cost_after``), the surrogate's
                predicted cost change, its CPO case, step fraction and KL.
        """
        env = self._env()
        if obs_normalizer is not None:
            env.obs_normalizer.load_state_dict(copy.deepcopy(obs_normalizer.state_dict()))
        env.seed_tasks(rollout_seed(self._task_seed, SeedStream.TEST_TASKS))
        tasks = [env.sample_task() for _ in range(self._test.num_tasks)]
        returns = np.zeros((len(tasks), self._test.adapt_steps + 1))
        costs = np.zeros_like(returns)
        disc_costs = np.zeros_like(returns)
        evaluated = {name: np.zeros_like(returns) for name in MEASURES}
        length = self._learner.episode_length
        phis = [theta.detach()] * len(tasks)
        for k in range(self._test.adapt_steps + 1):
            # The test tasks' rollouts of adaptation step k are sampled together (batched sampler).
            batches = env.collect_tasks(
                self._learner.policy, phis, actor_critic, tasks, self._test.rollout_steps,
                [rollout_seed(self._seed, SeedStream.TEST_ROLLOUT, index, k)
                 for index in range(len(tasks))],
            )
            if trace is not None and k < self._test.adapt_steps:
                # A second, independent rollout of the same policies: what their cost is, free of
                # the selection that grouping steps by their own rollout's cost makes (a rollout
                # that showed no cost is followed by a costlier one even without any step). It
                # leaves the results as they are: other seeds, and the normaliser restored.
                normalizer = copy.deepcopy(env.obs_normalizer.state_dict())
                controls = env.collect_tasks(
                    self._learner.policy, phis, actor_critic, tasks, self._test.rollout_steps,
                    [rollout_seed(self._seed, SeedStream.TEST_CONTROL, index, k)
                     for index in range(len(tasks))],
                )
                env.obs_normalizer.load_state_dict(normalizer)
            if self.eval_episodes:
                self._evaluate(env, phis, actor_critic, tasks, k, evaluated)
            for index, batch in enumerate(batches):
                returns[index, k] = batch.reward_rate * length
                costs[index, k] = batch.cost_rate * length
                disc_costs[index, k] = batch.disc_cost
                if k < self._test.adapt_steps:
                    phi, record = self._learner.inner_step(phis[index], batch, self.cost_limit,
                                                           create_graph=False)
                    phis[index] = phi.detach()
                    if trace is not None:
                        trace.append({'task': index, 'step': k,
                                      'cost_before': float(costs[index, k]),
                                      'cost_control': controls[index].cost_rate * length,
                                      'predicted': record.predicted_cost_change,
                                      'case': record.case, 'fraction': record.fraction,
                                      'kl': record.kl})
        for row in trace if trace is not None else ():
            row['cost_after'] = float(costs[row['task'], row['step'] + 1])
        results = {}
        measured = {'EpRet': returns, 'EpCost': costs, 'EpDiscCost': disc_costs}
        for prefix, values in (('MetaTest', measured), ('MetaTest/Eval', evaluated)):
            if prefix == 'MetaTest/Eval' and not self.eval_episodes:
                continue
            for name in MEASURES:
                for k in range(self._test.adapt_steps + 1):
                    results[f'{prefix}/{name}/step_{k}'] = float(values[name][:, k].mean())
        if logger is not None:
            logger.store(results)
        return results

    def _evaluate(  # pylint: disable=too-many-arguments
        self,
        env: TaskRolloutAdapter,
        phis: list[torch.Tensor],
        actor_critic: Any,
        tasks: list[Any],
        k: int,
        evaluated: dict[str, np.ndarray],
    ) -> None:
        """Evaluate the policies of step k deterministically into column k of ``evaluated``.

        ``eval_episodes`` whole episodes per task with the mean action, seeded apart from the
        adaptation rollouts; the normaliser is restored afterwards, so that nothing of the
        adaptation depends on the evaluation.
        """
        length = self._learner.episode_length
        own = env.obs_normalizer
        normalizer = None if own is None else copy.deepcopy(own.state_dict())
        batches = env.collect_tasks(
            self._learner.policy, phis, actor_critic, tasks, self.eval_episodes * length,
            [rollout_seed(self._seed, SeedStream.TEST_EVAL, index, k)
             for index in range(len(tasks))],
            deterministic=True,
        )
        if own is not None:
            own.load_state_dict(normalizer)
        for index, batch in enumerate(batches):
            evaluated['EpRet'][index, k] = float(np.mean(batch.ep_returns))
            evaluated['EpCost'][index, k] = float(np.mean(batch.ep_costs))
            evaluated['EpDiscCost'][index, k] = batch.disc_cost
