"""Meta-testing a saved run: the policy of ``RUN/torch_save/epoch-N.pt`` on unseen test tasks.

Any algorithm's run is adapted by the comparison's rule (:mod:`omnisafe_metacpo.evaluation.rule`)
with :class:`~omnisafe_metacpo.evaluation.meta_tester.MetaTester`. On the command line::

    omnisafe-metacpo-meta-test RUN_DIR [--epoch N] [--num-tasks 5] [--cost-limit 5]
        [--task-seed N] [--critics fresh|saved] [--eval-episodes 2]

``--critics saved`` adapts a Meta-CPO / Meta-TRPO run with the critics of its last checkpoint, as
its inner steps were trained (and as its meta-tests during training did), instead of the fresh
critics of the comparison's rule.

``--task-seed N`` draws the test tasks from N instead of the run's seed (other unseen tasks of the
same split); the JSON written records the seed used.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from types import SimpleNamespace
from typing import Any

import torch
from omnisafe.models.actor.actor_builder import ActorBuilder

from omnisafe_metacpo import cost_measures, run_files
from omnisafe_metacpo.evaluation import rule
from omnisafe_metacpo.evaluation.fresh_critics import ZeroCritic, value_critic_builder
from omnisafe_metacpo.evaluation.meta_tester import MetaTester
from omnisafe_metacpo.meta.inner import InnerLearner
from omnisafe_metacpo.policy import FunctionalPolicy
from omnisafe_metacpo.sampling.adapter import TaskRolloutAdapter

#: How the saved run's inner steps get their critics.
CRITICS = ('fresh', 'saved')


def meta_test_saved_run(
    run_dir: str,
    epoch: int | None = None,
    overrides: dict[str, Any] | None = None,
    task_seed: int | None = None,
    trace: list[dict[str, float]] | None = None,
    critics: str = 'fresh',
) -> dict[str, float]:
    """Meta-test the policy saved in ``run_dir/torch_save/epoch-N.pt`` (the last one by default).

    Any algorithm's run, adapted by the rule of :mod:`omnisafe_metacpo.evaluation.rule`: its own
    update rule (CPO step for MetaCPO and constrained stock algorithms, TRPO step for MetaTRPO and
    unconstrained ones), advantages from fresh critics fitted on each test rollout (critics saved
    by the run are not used), the test-time cost limit of ``meta_test_cfgs``.

    Args:
        run_dir: A run directory (with config.json and torch_save/).
        epoch: Which saved epoch; ``None`` takes the highest.
        overrides: Values for ``meta_test_cfgs`` (num_tasks, adapt_steps, rollout_steps,
            cost_limit, eval_episodes, cost_advantages).
        task_seed: Draw the test tasks from this seed; ``None``: the run's seed.
        trace: Collects one row per adaptation step (:meth:`MetaTester.run`).
        critics: ``fresh`` (the comparison's rule, above) or ``saved``: a Meta-CPO / Meta-TRPO
            run adapted as its inner steps were trained, with the reward and cost critics of its
            last checkpoint and its own GAE settings (then ``epoch`` must be the checkpoint's).
            Not the comparison's rule: stock runs save no critics.
    """
    if critics not in CRITICS:
        raise ValueError(f"critics = {critics!r}: 'fresh' or 'saved'")
    if critics == 'saved' and (overrides or {}).get('cost_advantages', 'fresh_critic') != \
            'fresh_critic':
        raise ValueError("meta_test_cfgs.cost_advantages applies to critics = 'fresh' only: the "
                         "'saved' rule adapts with the run's own critics")
    cfgs = rule.load_run_cfgs(run_dir, overrides, sampler_cfgs=critics == 'fresh')
    if epoch is None:
        saved = run_files.saved_epochs(run_dir)
        if not saved:
            raise FileNotFoundError(f'no torch_save/epoch-N.pt in {run_dir}')
        epoch = saved[-1]
    params = torch.load(run_files.saved_policy_path(run_dir, epoch), weights_only=True,
                        map_location='cpu')
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
        learner, value_critics = _saved_critics_rule(run_dir, cfgs, epoch, policy, env)
    else:
        learner = rule.build_learner(policy, cfgs, env.observation_space, env.action_space,
                                     env.episode_length)
        # Rollouts are collected with zero value functions: their value targets are plain
        # returns-to-go, from which the learner's fresh critics compute the advantages.
        value_critics = SimpleNamespace(reward_critic=ZeroCritic(), cost_critic=ZeroCritic())
    tester = MetaTester(cfgs, cfgs.env_id, int(cfgs.seed), learner, task_seed=task_seed,
                        adapter=env)
    try:
        return tester.run(policy.flat_params(), value_critics, normalizer, trace=trace)
    finally:
        env.close()


def _saved_critics_rule(run_dir: str, cfgs: Any, epoch: int, policy: FunctionalPolicy,
                        env: TaskRolloutAdapter) -> tuple[InnerLearner, Any]:
    """The inner learner of a meta-learner's run and the critics of its last checkpoint."""
    if cfgs.algo not in rule.META_LEARNERS:
        raise ValueError(f'critics = saved: {cfgs.algo} runs save no critics (only '
                         f'{", ".join(rule.META_LEARNERS)} runs do)')
    state = torch.load(run_files.checkpoint_path(run_dir), weights_only=True, map_location='cpu')
    # torch_save/epoch-N.pt is written after meta-iteration N - 1, the checkpoint after its own
    if int(state['iteration']) + 1 != epoch:
        raise ValueError(f'critics = saved: the checkpoint holds the critics after meta-iteration '
                         f'{state["iteration"]}, not those of epoch {epoch}')
    builder = value_critic_builder(env.observation_space, env.action_space,
                                   cfgs.model_cfgs.critic,
                                   cfgs.model_cfgs.weight_initialization_mode)
    saved = {}
    for name in ('reward_critic', 'cost_critic'):
        saved[name] = builder.build_critic('v')
        saved[name].load_state_dict(state[name])
    learner = InnerLearner(policy, cfgs.algo_cfgs, env.episode_length,
                           constrained=rule.META_LEARNERS[cfgs.algo])
    return learner, SimpleNamespace(**saved)


# ------------------------------------------------------------------------------ command line
def add_override_options(parser: argparse.ArgumentParser) -> None:
    """The options that override the run's ``meta_test_cfgs`` (see :func:`overrides_from`)."""
    parser.add_argument('--num-tasks', type=int, default=None, metavar='M',
                        help="unseen test tasks (default: the run's meta_test_cfgs.num_tasks)")
    parser.add_argument('--adapt-steps', type=int, default=None, metavar='K',
                        help="CPO / TRPO adaptation steps on each test task (default: the run's "
                             'meta_test_cfgs.adapt_steps)')
    parser.add_argument('--rollout-steps', type=int, default=None, metavar='STEPS',
                        help="environment steps of each test rollout (default: the run's "
                             'meta_test_cfgs.rollout_steps)')
    parser.add_argument('--cost-limit', type=float, default=None, metavar='H',
                        help="cost limit h while adapting (default: the run's "
                             'meta_test_cfgs.cost_limit, else its training limit)')
    parser.add_argument('--eval-episodes', type=int, default=None, metavar='N',
                        help='deterministic evaluation episodes per task and step (0: none; '
                             "default: the run's meta_test_cfgs.eval_episodes)")
    parser.add_argument('--cost-advantages', choices=cost_measures.COST_ADVANTAGES,
                        default=None,
                        help='cost advantages of the adaptation steps: fresh_critic (a critic '
                             'fitted on each test rollout, centred) or returns (the returns-to-go '
                             "on the step's cost measure, no baseline); default: the run's "
                             'meta_test_cfgs.cost_advantages, else fresh_critic')


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """The ``meta_test_cfgs`` values given by the options of :func:`add_override_options`."""
    return {key: value for key, value in {
        'num_tasks': args.num_tasks, 'adapt_steps': args.adapt_steps,
        'rollout_steps': args.rollout_steps, 'cost_limit': args.cost_limit,
        'eval_episodes': args.eval_episodes, 'cost_advantages': args.cost_advantages,
    }.items() if value is not None}


def parser() -> argparse.ArgumentParser:
    """The command line of ``omnisafe-metacpo-meta-test``."""
    result = argparse.ArgumentParser(
        prog='omnisafe-metacpo-meta-test',
        description='Meta-test a saved run: adapt its policy on unseen test tasks of the test '
                    'split and print (and save as JSON) return and cost before and after each '
                    "adaptation step. Settings not given are the run's meta_test_cfgs "
                    "(MetaCPO.yaml's for runs of stock algorithms).")
    result.add_argument('run_dir', help='a run directory (with config.json and torch_save/)')
    result.add_argument('--epoch', type=int, default=None, metavar='N',
                        help='meta-test torch_save/epoch-N.pt (default: the highest N)')
    add_override_options(result)
    result.add_argument('--task-seed', type=int, default=None, metavar='SEED',
                        help="draw the test tasks from this seed (default: the run's seed)")
    result.add_argument('--critics', choices=CRITICS, default='fresh',
                        help="fresh: critics fitted on each test rollout, the comparison's rule "
                             "(default); saved: a meta-learner's own critics from its last "
                             'checkpoint')
    result.add_argument('--output', default=None, metavar='FILE',
                        help='JSON file of the results (default: RUN_DIR/meta_test.json)')
    return result


def main(argv: list[str] | None = None) -> None:
    """Command line: meta-test a saved run and print (and save as JSON) the results."""
    args = parser().parse_args(argv)
    results = meta_test_saved_run(args.run_dir, args.epoch, overrides_from(args),
                                  task_seed=args.task_seed, critics=args.critics)
    for key, value in results.items():
        print(f'{key:28s} {value:10.3f}')
    task_seed = args.task_seed
    if task_seed is None:  # the run's seed, recorded so that the JSON says which tasks these were
        task_seed = int(run_files.load_config(args.run_dir)['seed'])
    output = args.output or os.path.join(args.run_dir, 'meta_test.json')
    with open(output, 'w', encoding='utf-8') as file:
        json.dump({**results, 'task_seed': task_seed, 'critics': args.critics}, file, indent=2)


if __name__ == '__main__':
    main()
