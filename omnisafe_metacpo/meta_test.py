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

Standalone, on a saved run::

    python -m omnisafe_metacpo.meta_test RUN_DIR [--epoch N] [--num-tasks 5] [--cost-limit 5]
        [--task-seed N] [--critics fresh|saved] [--eval-episodes 2]

``--critics saved`` adapts a Meta-CPO / Meta-TRPO run with the critics of its last checkpoint, as
its inner steps were trained (and as its meta-tests during training did), instead of the fresh
critics of the comparison's rule (:mod:`omnisafe_metacpo.adaptation_rule`).

``--task-seed N`` draws the test tasks from N instead of the run's seed (other unseen tasks of the
same split); the JSON written records the seed used.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from typing import Any

import numpy as np
import torch

from omnisafe_metacpo.rollout import TaskRolloutAdapter, rollout_seed

_TEST_TASKS, _TEST_ROLLOUT, _TEST_CONTROL, _TEST_EVAL = 11, 12, 13, 14
#: What a meta-test reports per step, for the adaptation rollouts (``MetaTest/<name>/step_k``)
#: and the deterministic evaluation (``MetaTest/Eval/<name>/step_k``).
MEASURES = ('EpRet', 'EpCost', 'EpDiscCost')


class MetaTester:
    """Adapts theta on unseen test tasks and logs return and cost after each adaptation step.

    Args:
        cfgs: The run's config (``meta_test_cfgs`` and ``algo_cfgs``).
        env_id: The env id (its ``test`` split is used).
        seed: The run's seed (fixes the test tasks and the test rollouts).
        learner: The :class:`~omnisafe_metacpo.adaptation.InnerLearner` of the run.
        task_seed: Draw the test tasks from this seed instead of ``seed`` (rollouts keep theirs).
    """

    def __init__(
        self,
        cfgs: Any,
        env_id: str,
        seed: int,
        learner: Any,
        task_seed: int | None = None,
    ) -> None:
        self._cfgs = cfgs
        self._test = cfgs.meta_test_cfgs
        self._env_id = env_id
        self._seed = seed
        self._task_seed = seed if task_seed is None else int(task_seed)
        self._learner = learner
        self._adapter: TaskRolloutAdapter | None = None

    @property
    def task_seed(self) -> int:
        """The seed the test tasks are drawn from."""
        return self._task_seed

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
        env.seed_tasks(rollout_seed(self._task_seed, _TEST_TASKS))
        tasks = [env.sample_task() for _ in range(self._test.num_tasks)]
        returns = np.zeros((len(tasks), self._test.adapt_steps + 1))
        costs = np.zeros_like(returns)
        disc_costs = np.zeros_like(returns)
        evaluated = {name: np.zeros_like(returns) for name in MEASURES}
        length = self._learner.episode_length
        phis = [theta.detach()] * len(tasks)
        batched = self._cfgs.algo_cfgs.get('sampler', 'batched') == 'batched'
        for k in range(self._test.adapt_steps + 1):
            # The test tasks' rollouts of adaptation step k are sampled together (batched sampler).
            batches = env.collect_tasks(
                self._learner.policy, phis, actor_critic, tasks, self._test.rollout_steps,
                [rollout_seed(self._seed, _TEST_ROLLOUT, index, k) for index in range(len(tasks))],
                batched=batched,
            )
            if trace is not None and k < self._test.adapt_steps:
                # A second, independent rollout of the same policies: what their cost is, free of
                # the selection that grouping steps by their own rollout's cost makes (a rollout
                # that showed no cost is followed by a costlier one even without any step). It
                # leaves the results as they are: other seeds, and the normaliser restored.
                normalizer = copy.deepcopy(env.obs_normalizer.state_dict())
                controls = env.collect_tasks(
                    self._learner.policy, phis, actor_critic, tasks, self._test.rollout_steps,
                    [rollout_seed(self._seed, _TEST_CONTROL, index, k)
                     for index in range(len(tasks))],
                    batched=batched,
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
            [rollout_seed(self._seed, _TEST_EVAL, index, k) for index in range(len(tasks))],
            batched=self._cfgs.algo_cfgs.get('sampler', 'batched') == 'batched',
            deterministic=True,
        )
        if own is not None:
            own.load_state_dict(normalizer)
        for index, batch in enumerate(batches):
            evaluated['EpRet'][index, k] = float(np.mean(batch.ep_returns))
            evaluated['EpCost'][index, k] = float(np.mean(batch.ep_costs))
            evaluated['EpDiscCost'][index, k] = batch.disc_cost


def meta_test_saved_run(
    run_dir: str,
    epoch: int | None = None,
    overrides: dict[str, Any] | None = None,
    task_seed: int | None = None,
    trace: list[dict[str, float]] | None = None,
    critics: str = 'fresh',
) -> dict[str, float]:
    """Meta-test the policy saved in ``run_dir/torch_save/epoch-N.pt`` (the last one by default).

    Any algorithm's run, adapted by the rule of :mod:`omnisafe_metacpo.adaptation_rule`: its own
    update rule (CPO step for MetaCPO and constrained stock algorithms, TRPO step for MetaTRPO and
    unconstrained ones), advantages from fresh critics fitted on each test rollout (critics saved
    by the run are not used), the test-time cost limit of ``meta_test_cfgs``.

    Args:
        run_dir: A run directory (with config.json and torch_save/).
        epoch: Which saved epoch; ``None`` takes the highest.
        overrides: Values for ``meta_test_cfgs`` (num_tasks, adapt_steps, rollout_steps,
            cost_limit).
        task_seed: Draw the test tasks from this seed; ``None``: the run's seed.
        trace: Collects one row per adaptation step (:meth:`MetaTester.run`).
        critics: ``fresh`` (the comparison's rule, above) or ``saved``: a Meta-CPO / Meta-TRPO
            run adapted as its inner steps were trained, with the reward and cost critics of its
            last checkpoint and its own GAE settings (then ``epoch`` must be the checkpoint's).
            Not the comparison's rule: stock runs save no critics.
    """
    from types import SimpleNamespace

    from omnisafe.models.actor.actor_builder import ActorBuilder

    from omnisafe_metacpo import adaptation_rule
    from omnisafe_metacpo.fresh_critics import ZeroCritic
    from omnisafe_metacpo.policy import FunctionalPolicy

    if critics not in ('fresh', 'saved'):
        raise ValueError(f"critics = {critics!r}: 'fresh' or 'saved'")
    cfgs = adaptation_rule.load_run_cfgs(run_dir, overrides, sampler_cfgs=critics == 'fresh')
    if epoch is None:
        saved = adaptation_rule.saved_epochs(run_dir)
        if not saved:
            raise FileNotFoundError(f'no torch_save/epoch-N.pt in {run_dir}')
        epoch = saved[-1]
    params = torch.load(os.path.join(run_dir, 'torch_save', f'epoch-{epoch}.pt'),
                        weights_only=True, map_location='cpu')
    env = TaskRolloutAdapter(cfgs.env_id, int(cfgs.seed), cfgs, split='test')
    actor = ActorBuilder(
        obs_space=env.observation_space,
        act_space=env.action_space,
        hidden_sizes=cfgs.model_cfgs.actor.hidden_sizes,
        activation=cfgs.model_cfgs.actor.activation,
        weight_initialization_mode=cfgs.model_cfgs.weight_initialization_mode,
    ).build_actor(cfgs.model_cfgs.actor_type)
    actor.load_state_dict(params['pi'])
    normalizer = None
    if 'obs_normalizer' in params:
        normalizer = copy.deepcopy(env.obs_normalizer)
        normalizer.load_state_dict(params['obs_normalizer'])
    policy = FunctionalPolicy(actor)
    if critics == 'saved':
        learner, collectors = _saved_critics_rule(run_dir, cfgs, epoch, policy, env)
    else:
        learner = adaptation_rule.build_learner(policy, cfgs, env.observation_space,
                                                env.action_space, env.episode_length)
        # Rollouts are collected with zero value functions: their value targets are plain
        # returns-to-go, from which the learner's fresh critics compute the advantages.
        collectors = SimpleNamespace(reward_critic=ZeroCritic(), cost_critic=ZeroCritic())
    tester = MetaTester(cfgs, cfgs.env_id, int(cfgs.seed), learner, task_seed=task_seed)
    tester._adapter = env  # pylint: disable=protected-access
    try:
        return tester.run(policy.flat_params(), collectors, normalizer, trace=trace)
    finally:
        env.close()


def _saved_critics_rule(run_dir: str, cfgs: Any, epoch: int, policy: Any,
                        env: TaskRolloutAdapter) -> tuple[Any, Any]:
    """The inner learner of a meta-learner's run and the critics of its last checkpoint."""
    from types import SimpleNamespace

    from omnisafe.models.critic.critic_builder import CriticBuilder

    from omnisafe_metacpo import adaptation_rule
    from omnisafe_metacpo.adaptation import InnerLearner
    from omnisafe_metacpo.checkpoint import CHECKPOINT

    if cfgs.algo not in adaptation_rule.META_LEARNERS:
        raise ValueError(f'critics = saved: {cfgs.algo} runs save no critics (only '
                         f'{", ".join(adaptation_rule.META_LEARNERS)} runs do)')
    state = torch.load(os.path.join(run_dir, CHECKPOINT), weights_only=True, map_location='cpu')
    # torch_save/epoch-N.pt is written after meta-iteration N - 1, the checkpoint after its own
    if int(state['iteration']) + 1 != epoch:
        raise ValueError(f'critics = saved: the checkpoint holds the critics after meta-iteration '
                         f'{state["iteration"]}, not those of epoch {epoch}')
    builder = CriticBuilder(
        obs_space=env.observation_space, act_space=env.action_space,
        hidden_sizes=list(cfgs.model_cfgs.critic.hidden_sizes),
        activation=cfgs.model_cfgs.critic.activation,
        weight_initialization_mode=cfgs.model_cfgs.weight_initialization_mode,
        num_critics=1, use_obs_encoder=False)
    saved = {}
    for name in ('reward_critic', 'cost_critic'):
        saved[name] = builder.build_critic('v')
        saved[name].load_state_dict(state[name])
    learner = InnerLearner(policy, cfgs.algo_cfgs, env.episode_length,
                           constrained=adaptation_rule.META_LEARNERS[cfgs.algo])
    return learner, SimpleNamespace(**saved)


def main(argv: list[str] | None = None) -> None:
    """Command line: meta-test a saved run and print (and save as JSON) the results."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('run_dir')
    parser.add_argument('--epoch', type=int, default=None)
    parser.add_argument('--num-tasks', type=int, default=None)
    parser.add_argument('--adapt-steps', type=int, default=None)
    parser.add_argument('--rollout-steps', type=int, default=None)
    parser.add_argument('--cost-limit', type=float, default=None)
    parser.add_argument('--eval-episodes', type=int, default=None,
                        help='deterministic evaluation episodes per task and step (0: none)')
    parser.add_argument('--task-seed', type=int, default=None,
                        help="draw the test tasks from this seed (default: the run's seed)")
    parser.add_argument('--critics', choices=('fresh', 'saved'), default='fresh',
                        help="fresh: the comparison's rule; saved: a meta-learner's own critics")
    parser.add_argument('--output', default=None, help='JSON file (default RUN_DIR/meta_test.json)')
    args = parser.parse_args(argv)
    overrides = {key: value for key, value in {
        'num_tasks': args.num_tasks, 'adapt_steps': args.adapt_steps,
        'rollout_steps': args.rollout_steps, 'cost_limit': args.cost_limit,
        'eval_episodes': args.eval_episodes,
    }.items() if value is not None}
    results = meta_test_saved_run(args.run_dir, args.epoch, overrides, task_seed=args.task_seed,
                                  critics=args.critics)
    for key, value in results.items():
        print(f'{key:28s} {value:10.3f}')
    task_seed = args.task_seed
    if task_seed is None:  # the run's seed, recorded so that the JSON says which tasks these were
        with open(os.path.join(args.run_dir, 'config.json'), encoding='utf-8') as file:
            task_seed = int(json.load(file)['seed'])
    output = args.output or os.path.join(args.run_dir, 'meta_test.json')
    with open(output, 'w', encoding='utf-8') as file:
        json.dump({**results, 'task_seed': task_seed, 'critics': args.critics}, file, indent=2)


if __name__ == '__main__':
    main()
