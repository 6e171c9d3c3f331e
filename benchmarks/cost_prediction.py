"""Does a CPO step's linear cost prediction match the cost change it causes? A paired measurement.

A CPO step keeps b + a'x <= 0, where a'x is the change of the cost surrogate L_C
(``InnerLearner.surrogates``) and is meant to predict J_C(phi + x) - J_C(phi). Along a fixed unit
direction d and a step s, this script compares

* the prediction L_C(theta + s d) - L_C(theta - s d), averaged over held-out rollouts of theta
  (rollouts that neither d nor the measurement came from), with
* the measured change J_C(theta + s d) - J_C(theta - s d), averaged over rollouts of the two
  policies run with the same seeds (common random numbers),

a central difference, so that the second-order terms of both cancel. It does so on both cost scales
(``algo_cfgs.cost_measure``) and for several advantage rules, all computed from the same rollouts:

* returns-to-go G_t with the discount of the scale (0.99 for the discounted J_C; 1 for the
  undiscounted cost per episode, and also 0.99 there, the ``gamma`` of MetaCPO's defaults), and
* a baseline: ``none`` (G_t itself: Monte-Carlo advantages, unbiased); ``rollout mean`` (G_t minus
  its mean over the rollout: what OmniSafe's buffer does with ``standardized_cost_adv``); ``fresh
  critic`` (G_t minus a critic fitted to this rollout's own returns, then centred: the meta-test's
  rule, ``omnisafe_metacpo.evaluation.fresh_critics``).

A ratio predicted / measured of 1 says the surrogate is unbiased on that scale. A baseline computed
from the rollout it is used on is not a baseline in the policy-gradient sense: the mean return of a
rollout depends on every action in it, since each G_u with u <= t sums the costs after t, so
E[grad log pi(a_t|s_t) * mean_u G_u] is not 0. Subtracting it removes part of the gradient, and the
part grows as the rollout holds fewer episodes. The direction d is the normalised gradient of the
unbiased discounted surrogate on rollouts of their own. The returns-to-go are computed from the
rollouts' step costs (``Batch.step_costs``).

The same held-out rollouts are also sampled again through the training sampler, with its own cost
advantages (baseline ``sampler: gae``, OmniSafe's GAE with gamma = 0.99, and ``sampler: measure``,
``algo_cfgs.cost_advantage: measure``) and the run's untrained critics: the rules MetaCPO trains
with, end to end.

    python -m benchmarks.cost_prediction --output benchmarks/results/cost_prediction.md
    python -m benchmarks.cost_prediction --episodes 1 --fit 8 --held 8 --measure 8   # a quick look
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import sys
import tempfile
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import omnisafe
import pandas as pd
import torch

from omnisafe_metacpo import cost_measures
from omnisafe_metacpo.evaluation.fresh_critics import FreshCritics, ZeroCritic
from omnisafe_metacpo.evaluation.rule import metacpo_defaults
from omnisafe_metacpo.meta.inner import InnerLearner
from omnisafe_metacpo.sampling.batch import Batch

#: (scale, discount of the returns-to-go): the rows of each rule
RETURNS = (('discounted', 0.99), ('episode', 1.0), ('episode', 0.99))
BASELINES = ('none', 'rollout mean', 'fresh critic')
#: (scale, ``algo_cfgs.cost_advantage``) of the rows whose advantages are the training sampler's
SAMPLERS = (('discounted', 'measure'), ('discounted', 'gae'), ('episode', 'measure'),
            ('episode', 'gae'))
COST_GAMMA = 0.99


def build(env_id: str, log_dir: str, seed: int, **algo_cfgs: Any) -> Any:
    """A MetaCPO algorithm object: its sampler, its untrained (32, 16) actor of ``seed``.

    No observation normalisation (the rollouts of one policy do not depend on which were sampled
    before); ``algo_cfgs`` are set over the defaults.
    """
    custom = {
        'seed': seed,
        'train_cfgs': {'total_steps': 800, 'torch_threads': 1},
        'algo_cfgs': {'steps_per_epoch': 400, 'num_tasks': 2, 'inner_steps': 1,
                      'update_iters': 1, 'batch_size': 200, 'obs_normalize': False,
                      'cost_gamma': COST_GAMMA, **algo_cfgs},
        'meta_test_cfgs': {'freq': 1, 'num_tasks': 1, 'adapt_steps': 1, 'rollout_steps': 100},
        'logger_cfgs': {'log_dir': log_dir, 'use_tensorboard': False, 'save_model_freq': 1},
        'model_cfgs': {'actor': {'hidden_sizes': [32, 16]}},
    }
    return omnisafe.Agent('MetaCPO', env_id, custom_cfgs=custom).agent


def advantages(batch: Batch, gamma: float, baseline: str, critics: FreshCritics) -> Batch:
    """``batch`` with the cost advantages of one rule."""
    target = torch.as_tensor(cost_measures.returns_to_go(batch.step_costs.numpy(), batch.ends,
                                                         gamma), dtype=torch.float32)
    if baseline == 'none':
        adv = target
    elif baseline == 'rollout mean':
        adv = target - target.mean()
    else:
        adv = target - critics.fit(batch.obs, target)
        adv = adv - adv.mean()
    return dataclasses.replace(batch, adv_c=adv.detach())


def measure(  # pylint: disable=too-many-arguments,too-many-locals
    env_id: str,
    episodes: int,
    counts: tuple[int, int, int],
    step: float,
    seed: int,
    log_dir: str,
    returns: tuple[tuple[str, float], ...] = RETURNS,
    baselines: tuple[str, ...] = BASELINES,
    samplers: tuple[tuple[str, str], ...] = SAMPLERS,
) -> list[dict[str, Any]]:
    """The rows of one rollout length.

    Args:
        env_id: A task-distribution env id.
        episodes: Whole episodes per rollout.
        counts: Rollouts (fit, held, measured per policy).
        step: s.
        seed: The run's seed (the untrained policy and the task).
        log_dir: Where the algorithm object may write its run directory.
        returns: (scale, discount of the returns-to-go) pairs to report.
        baselines: The baselines to report (of :data:`BASELINES`).
        samplers: The (scale, ``cost_advantage``) pairs whose rows take the training sampler's
            advantages (of :data:`SAMPLERS`).
    """
    fit_count, held_count, measure_count = counts
    algo = build(env_id, log_dir, seed)
    env, policy = algo._env, algo._policy  # pylint: disable=protected-access
    length = env.episode_length
    learners = {}
    for scale in ('discounted', 'episode'):
        cfgs = copy.deepcopy(algo._cfgs.algo_cfgs)  # pylint: disable=protected-access
        cfgs.cost_measure = scale
        learners[scale] = InnerLearner(policy, cfgs, length)
    defaults = metacpo_defaults(env_id)
    critics = FreshCritics(env.observation_space, env.action_space, defaults.model_cfgs.critic,
                           weight_initialization_mode=defaults.model_cfgs.weight_initialization_mode)
    zero = SimpleNamespace(reward_critic=ZeroCritic(), cost_critic=ZeroCritic())
    task = env.sample_task()
    theta = policy.flat_params().detach()

    def collect(phi: torch.Tensor, first_seed: int, count: int) -> list[Batch]:
        seeds = [first_seed + index for index in range(count)]
        return env.collect_tasks(policy, [phi] * count, zero, [task] * count, episodes * length,
                                 seeds)

    fit = [advantages(batch, COST_GAMMA, 'none', critics) for batch in collect(theta, 10_000,
                                                                               fit_count)]
    point = theta.clone().requires_grad_(True)
    loss = torch.stack([learners['discounted'].surrogates(point, batch)[1] for batch in fit])
    grad = torch.autograd.grad(loss.mean(), point)[0]
    if not bool(grad.norm() > 0):
        raise RuntimeError(f'the {fit_count} fit rollouts hold no cost: no direction to step '
                           'along (use more --fit episodes)')
    direction = -grad / grad.norm()
    plus, minus = theta + step * direction, theta - step * direction

    held = collect(theta, 20_000, held_count)
    after = collect(plus, 30_000, measure_count)
    before = collect(minus, 30_000, measure_count)
    # Each sampler keeps its environments, whose MuJoCo data reserve ~0.2 GB of address space
    # each: with hundreds of them held here, forking the next sampler's helper processes fails
    # under the kernel's overcommit heuristic (ENOMEM). So one sampler's environments at a time.
    env.close()
    measured_by_scale = {
        scale: np.array([learner.cost_value(a) - learner.cost_value(b)
                         for a, b in zip(after, before, strict=True)])
        for scale, learner in learners.items()}
    rows = []
    for scale, gamma in returns:
        learner, measured = learners[scale], measured_by_scale[scale]
        for baseline in baselines:
            with torch.no_grad():
                predicted = []
                for batch in held:
                    rule = advantages(batch, gamma, baseline, critics)
                    predicted.append(float(learner.surrogates(plus, rule)[1]
                                           - learner.surrogates(minus, rule)[1]))
            rows.append(row(env_id, episodes, scale, gamma, baseline, step, counts,
                            np.array(predicted), measured))
    sampled: dict[tuple, list[Batch]] = {}  # by the sampler's settings (gae's are the same twice)
    for scale, rule in samplers:
        learner = learners[scale]
        other = build(env_id, os.path.join(log_dir, f'{scale}_{rule}'), seed,
                      cost_measure=scale, cost_advantage=rule)
        settings = cost_measures.cost_advantage_settings(other._cfgs.algo_cfgs)  # pylint: disable=protected-access
        if settings not in sampled:  # the same rollouts (policy, task, seeds), the run's critics
            sampled[settings] = other._env.collect_tasks(  # pylint: disable=protected-access
                policy, [theta] * held_count, other._actor_critic,  # pylint: disable=protected-access
                [task] * held_count, episodes * length, [20_000 + i for i in range(held_count)])
            if not torch.equal(sampled[settings][0].act, held[0].act):
                raise RuntimeError('the sampler\'s rollouts differ from the held-out ones')
        other._env.close()  # pylint: disable=protected-access
        with torch.no_grad():
            predicted = [float(learner.surrogates(plus, batch)[1]
                               - learner.surrogates(minus, batch)[1])
                         for batch in sampled[settings]]
        rows.append(row(env_id, episodes, scale, settings.gamma, f'sampler: {rule}', step,
                        counts, np.array(predicted), measured_by_scale[scale]))
    return rows


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))


def row(env_id: str, episodes: int, scale: str, gamma: float, baseline: str, step: float,
        counts: tuple[int, int, int], predicted: np.ndarray, measured: np.ndarray
        ) -> dict[str, Any]:
    """One result row; the ratio's standard error by the delta method."""
    pred, pred_se = _mean_se(predicted)
    meas, meas_se = _mean_se(measured)
    ratio = pred / meas
    ratio_se = abs(ratio) * float(np.hypot(pred_se / pred, meas_se / meas))
    return {'env_id': env_id, 'episodes_per_rollout': episodes, 'scale': scale,
            'returns_gamma': gamma, 'baseline': baseline, 'step': step,
            'rollouts': '/'.join(str(count) for count in counts),
            'predicted': pred, 'predicted_se': pred_se, 'measured': meas, 'measured_se': meas_se,
            'ratio': ratio, 'ratio_se': ratio_se}


def markdown(frame: pd.DataFrame, command: str, seconds: float) -> str:
    """The results as a Markdown page."""
    lines = [
        '# The linear cost prediction of a CPO step against the measured change',
        '',
        f'`{command}` ({seconds / 60:.0f} min; see the docstring of '
        '`benchmarks/cost_prediction.py`). Predicted: L_C(theta + s d) - L_C(theta - s d) on '
        'held-out rollouts; measured: J_C(theta + s d) - J_C(theta - s d) with common random '
        'numbers; mean ± s.e. over rollouts. Rollouts (fit/held/measured) are per rollout '
        'length; a ratio of 1: the prediction is unbiased.',
        '',
        '| env | episodes per rollout | scale | discount of G_t | baseline | predicted | measured '
        '| ratio |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for item in frame.itertuples():
        lines.append(
            f'| {item.env_id} | {item.episodes_per_rollout} | {item.scale} | '
            f'{item.returns_gamma:g} | {item.baseline} | {item.predicted:.3f} ± '
            f'{item.predicted_se:.3f} | {item.measured:.3f} ± {item.measured_se:.3f} | '
            f'{item.ratio:.2f} ± {item.ratio_se:.2f} |')
    rollouts = ', '.join(f'{e} episode(s): {r}' for e, r in
                         frame.groupby('episodes_per_rollout')['rollouts'].first().items())
    lines += ['', f'Step s = {frame["step"].iloc[0]:g}; rollouts fit/held/measured per policy: '
              f'{rollouts}.', '']
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure and write the table (stdout, or ``--output`` with a ``.csv`` beside it)."""
    parser = argparse.ArgumentParser(prog='python -m benchmarks.cost_prediction',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--env-id', default='MetaPointCircle-v0')
    parser.add_argument('--episodes', type=int, nargs='+', default=[1, 4],
                        help='whole episodes per rollout, one measurement each (default: 1 4)')
    parser.add_argument('--fit', type=int, default=256,
                        help='episodes the direction is fitted on (default: 256)')
    parser.add_argument('--held', type=int, default=768,
                        help='episodes the prediction is made on (default: 768)')
    parser.add_argument('--measure', type=int, default=512,
                        help='episodes per policy of the measured change (default: 512)')
    parser.add_argument('--step', type=float, default=0.01, help='s (default: 0.01)')
    parser.add_argument('--seed', type=int, default=3, help="the policy's seed (default: 3)")
    parser.add_argument('--output', default=None, help='a Markdown file (and a .csv beside it)')
    args = parser.parse_args(argv)
    for episodes in args.episodes:
        if episodes < 1 or min(args.fit, args.held, args.measure) < 2 * episodes:
            parser.error(f'--episodes {episodes}: --fit, --held and --measure must each hold at '
                         'least two rollouts of that many episodes')
    torch.set_num_threads(1)
    start = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as log_dir:
        for episodes in args.episodes:
            counts = (args.fit // episodes, args.held // episodes, args.measure // episodes)
            rows += measure(args.env_id, episodes, counts, args.step, args.seed,
                            os.path.join(log_dir, str(episodes)))
    frame = pd.DataFrame(rows)
    command = 'python -m benchmarks.cost_prediction ' + ' '.join(sys.argv[1:] if argv is None
                                                                  else argv)
    page = markdown(frame, command.strip(), time.time() - start)
    if args.output is None:
        print(page)
    else:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, 'w', encoding='utf-8') as file:
            file.write(page)
        frame.to_csv(os.path.splitext(args.output)[0] + '.csv', index=False)
        print(page)
    return 0


if __name__ == '__main__':
    sys.exit(main())
