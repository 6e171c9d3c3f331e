"""Validation of MetaCPO / MetaTRPO configs, before anything is built or written.

OmniSafe already rejects unknown keys (``KeyError: Invalid key``). Here the values are checked and
every error names the field and the allowed values.
"""

from __future__ import annotations

import math
from typing import Any

from omnisafe.utils.distributed import world_size

import task_distributions
from omnisafe_metacpo import run_files
from omnisafe_metacpo.cost_measures import COST_ADVANTAGE_RULES, COST_ADVANTAGES, COST_MEASURES

BACKENDS = ('closed_form', 'cvxpylayers')
METRICS = ('euclidean', 'fisher')
SAMPLERS = ('batched', 'sequential')


class MetaConfigError(ValueError):
    """A MetaCPO / MetaTRPO config value outside its allowed range."""


def require(condition: bool, field: str, value: Any, allowed: str) -> None:
    if not condition:
        raise MetaConfigError(f'{field} = {value!r} is not allowed: expected {allowed}')


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    # Finite only: an inf trust region or cost limit would turn every step and b non-finite.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_meta_config(cfgs: Any, env_id: str) -> None:
    """Raise :class:`MetaConfigError` for the first invalid value of a MetaCPO config.

    (The options beyond the paper are checked where they are read:
    :meth:`omnisafe_metacpo.meta.variants.StepVariants.from_cfgs`.)
    """
    supported = sorted(task_distributions.supported_env_ids())
    require(env_id in supported, 'env_id', env_id,
            f'an env id with a task distribution: {", ".join(supported)}')
    algo = cfgs.algo_cfgs
    require(is_int(algo.num_tasks) and algo.num_tasks >= 1, 'algo_cfgs.num_tasks',
            algo.num_tasks, 'an integer >= 1')
    require(is_int(algo.inner_steps) and algo.inner_steps >= 0, 'algo_cfgs.inner_steps',
            algo.inner_steps, 'an integer >= 0')
    rollouts = algo.num_tasks * (algo.inner_steps + 1)
    require(
        is_int(algo.steps_per_epoch) and algo.steps_per_epoch >= rollouts
        and algo.steps_per_epoch % rollouts == 0,
        'algo_cfgs.steps_per_epoch', algo.steps_per_epoch,
        f'a positive multiple of num_tasks * (inner_steps + 1) = {rollouts}',
    )
    for name in ('inner_delta', 'meta_delta'):
        value = algo[name]
        require(is_number(value) and value > 0, f'algo_cfgs.{name}', value, 'a finite number > 0')
    require(is_number(algo.cost_limit) and algo.cost_limit >= 0, 'algo_cfgs.cost_limit',
            algo.cost_limit, 'a finite number >= 0')
    require(algo.dco_backend in BACKENDS, 'algo_cfgs.dco_backend', algo.dco_backend,
            ' or '.join(BACKENDS))
    require(algo.metric in METRICS, 'algo_cfgs.metric', algo.metric, ' or '.join(METRICS))
    require(algo.cost_measure in COST_MEASURES, 'algo_cfgs.cost_measure', algo.cost_measure,
            ' or '.join(COST_MEASURES))
    cost_advantage = algo.get('cost_advantage', 'gae')
    require(cost_advantage in COST_ADVANTAGE_RULES, 'algo_cfgs.cost_advantage', cost_advantage,
            ' or '.join(COST_ADVANTAGE_RULES))
    require(is_number(algo.cost_gamma) and 0 < algo.cost_gamma <= 1, 'algo_cfgs.cost_gamma',
            algo.cost_gamma, 'a number in (0, 1]')
    require(algo.env_workers is None or (is_int(algo.env_workers) and algo.env_workers >= 0),
            'algo_cfgs.env_workers', algo.env_workers,
            'null (one per further usable core) or an integer >= 0')
    require(algo.sampler in SAMPLERS, 'algo_cfgs.sampler', algo.sampler, ' or '.join(SAMPLERS))
    if algo.sampler == 'batched':
        # The batched sampler applies observation normalisation itself; OmniSafe's reward and
        # cost normalisers are per-environment wrappers that only the sequential sampler runs.
        # Its GAE is OmniSafe's 'gae' estimator computed for all tasks at once (sampling.batched).
        require(algo.adv_estimation_method == 'gae', 'algo_cfgs.adv_estimation_method',
                algo.adv_estimation_method,
                "'gae' with algo_cfgs.sampler = batched (or set algo_cfgs.sampler: sequential)")
        for name in ('reward_normalize', 'cost_normalize'):
            require(not algo[name], f'algo_cfgs.{name}', algo[name],
                    'False with algo_cfgs.sampler = batched (or set algo_cfgs.sampler: '
                    'sequential)')
    require(is_number(algo.cg_damping) and algo.cg_damping >= 0, 'algo_cfgs.cg_damping',
            algo.cg_damping, 'a finite number >= 0')
    require(is_int(algo.backtrack_steps) and algo.backtrack_steps >= 1,
            'algo_cfgs.backtrack_steps', algo.backtrack_steps, 'an integer >= 1')
    require(is_number(algo.backtrack_coeff) and 0 < algo.backtrack_coeff < 1,
            'algo_cfgs.backtrack_coeff', algo.backtrack_coeff, 'a number in (0, 1)')
    require(is_int(algo.max_consecutive_failures) and algo.max_consecutive_failures >= 1,
            'algo_cfgs.max_consecutive_failures', algo.max_consecutive_failures,
            'an integer >= 1')
    require(is_int(algo.update_iters) and algo.update_iters >= 0, 'algo_cfgs.update_iters',
            algo.update_iters, 'an integer >= 0')
    require(is_int(algo.batch_size) and algo.batch_size >= 1, 'algo_cfgs.batch_size',
            algo.batch_size, 'an integer >= 1')

    train = cfgs.train_cfgs
    require(train.vector_env_nums == 1, 'train_cfgs.vector_env_nums', train.vector_env_nums,
            '1 (each environment runs one pinned task)')
    require(is_int(train.parallel) and train.parallel >= 1, 'train_cfgs.parallel', train.parallel,
            'an integer >= 1 (ranks that share the tasks of each meta-iteration)')
    validate_dist_timeout(train.dist_timeout)
    _validate_task_split(algo, world_size())
    require(train.total_steps >= algo.steps_per_epoch, 'train_cfgs.total_steps',
            train.total_steps, f'>= algo_cfgs.steps_per_epoch = {algo.steps_per_epoch}')
    require(is_int(train.checkpoint_freq) and train.checkpoint_freq >= 1,
            'train_cfgs.checkpoint_freq', train.checkpoint_freq, 'an integer >= 1')
    resume = train.resume
    require(isinstance(resume, str), 'train_cfgs.resume', resume, 'a run directory or ""')
    if resume:
        require(run_files.has_checkpoint(resume), 'train_cfgs.resume', resume,
                f'a run directory holding {run_files.CHECKPOINT}')

    test = cfgs.meta_test_cfgs
    require(is_int(test.freq) and test.freq >= 0, 'meta_test_cfgs.freq', test.freq,
            'an integer >= 0 (0: never)')
    require(is_int(test.num_tasks) and test.num_tasks >= 1, 'meta_test_cfgs.num_tasks',
            test.num_tasks, 'an integer >= 1')
    require(is_int(test.adapt_steps) and test.adapt_steps >= 0, 'meta_test_cfgs.adapt_steps',
            test.adapt_steps, 'an integer >= 0')
    require(is_int(test.rollout_steps) and test.rollout_steps >= 1,
            'meta_test_cfgs.rollout_steps', test.rollout_steps, 'an integer >= 1')
    require(test.cost_limit is None or (is_number(test.cost_limit) and test.cost_limit >= 0),
            'meta_test_cfgs.cost_limit', test.cost_limit, 'null or a finite number >= 0')
    eval_episodes = test.get('eval_episodes', 0)
    require(is_int(eval_episodes) and eval_episodes >= 0, 'meta_test_cfgs.eval_episodes',
            eval_episodes, 'an integer >= 0 (0: no deterministic evaluation)')
    cost_advantages = test.get('cost_advantages', 'fresh_critic')
    require(cost_advantages in COST_ADVANTAGES, 'meta_test_cfgs.cost_advantages',
            cost_advantages, ' or '.join(COST_ADVANTAGES))


def shortest_rollout(cfgs: Any) -> int:
    """The fewest environment steps of a rollout that an inner step sees: training or meta-test."""
    algo = cfgs.algo_cfgs
    return min(algo.steps_per_epoch // (algo.num_tasks * (algo.inner_steps + 1)),
               cfgs.meta_test_cfgs.rollout_steps)


def validate_dist_timeout(value: Any) -> None:
    """``train_cfgs.dist_timeout``: seconds a collective may wait for the other ranks."""
    require(is_number(value) and value > 0, 'train_cfgs.dist_timeout', value,
            'a finite number of seconds > 0 (how long a rank waits for the others before the '
            'run stops with an error)')


def _validate_task_split(algo: Any, ranks: int) -> None:
    """Every rank needs a task (``parallel``)."""
    if ranks == 1:
        return
    require(algo.num_tasks >= ranks, 'algo_cfgs.num_tasks', algo.num_tasks,
            f'at least one task per rank: >= {ranks} with {ranks} ranks')
