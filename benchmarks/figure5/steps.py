"""Which adaptation steps raise the cost on unseen tasks? The step-by-step report (``--steps``).

The final checkpoint of every finished run of the selection is meta-tested again exactly as the
comparison did (same tasks, rollouts and settings: with fresh critics the results must equal the
cached meta-test, or the split says nothing about the tables), this time keeping one row per
adaptation step (the trace of :meth:`MetaTester.run`). The steps are then grouped by the cost per
episode of their own rollout D_k: none at all (the step's cost gradient is then 0: nothing in the
rollout says where the cost is), some but at most h, above h. Grouping by D_k selects on its noise
(a rollout that showed no cost is followed by a costlier one even when nothing changes), so each
step's policy also runs one more, independent rollout (the control): the step's effect is the cost
after the step minus the control's. Per group: how many steps, the cost of D_k, of the control and
after the step, the effect, the change the step's surrogate predicted on D_k, and how many controls
and next rollouts are above h. Costs here are OmniSafe's undiscounted cost per episode of the
stochastic adaptation rollouts (those the steps are computed from).

``--steps-critics saved`` adapts the meta-learners with their own critics (their last
checkpoint's) instead of fresh ones; stock runs save no critics and are left out then.
``--steps-cost-advantages returns`` adapts every run with the returns-to-go on the cost measure of
its own constraint as cost advantages (no baseline: unbiased for the constraint's gradient, see
``meta_test_cfgs.cost_advantages``) instead of a fresh critic's, on the same tasks and seeds, so
that its tables read against those of ``--steps``.

Written to the results directory: ``steps.csv`` (one row per step) and ``steps.md`` (per env, each
variant's meta-test on both cost scales and its groups; means ± standard error over steps, pooled
over tasks, steps and seeds), ``steps_saved_critics.*`` with saved critics, ``steps_returns.*``
with returns-to-go. Nothing is written to the runs.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.figure5 import evaluation, results
from benchmarks.figure5.budget import Budget, Job
from benchmarks.figure5.figures import label
from omnisafe_metacpo.evaluation.rule import META_LEARNERS
from omnisafe_metacpo.evaluation.saved_run import meta_test_saved_run
from omnisafe_metacpo.run_files import saved_epochs

GROUPS = ('no cost seen', 'cost seen, at most h', 'cost above h')
CRITICS = {'fresh': 'fresh critics fitted on each test rollout (the comparison\'s rule)',
           'saved': "the meta-learners' own critics (their last checkpoint's), as in training"}
#: The ``meta_test_cfgs.cost_advantages`` rules of ``--steps-cost-advantages``, as the report says
ADVANTAGES = {'fresh_critic': 'fresh critics fitted on each test rollout (the comparison\'s rule)',
              'returns': 'the returns-to-go on the measure of the constraint, no baseline '
                         '(`meta_test_cfgs.cost_advantages: returns`; unbiased)'}
COLUMNS = ['env_id', 'variant', 'algo', 'seed', 'task', 'step', 'group', 'cost_before',
           'cost_control', 'cost_after', 'measured', 'effect', 'predicted', 'case', 'fraction',
           'kl']


def group_of(cost_before: float, limit: float) -> str:
    """The group of a step by the cost per episode of its own rollout."""
    if cost_before == 0.0:
        return GROUPS[0]
    return GROUPS[1] if cost_before <= limit else GROUPS[2]


def trace_run(run_dir: str, epoch: int, settings: dict[str, Any],
              critics: str) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Meta-test one checkpoint with a trace (in a worker); returns its steps and its results.

    Raises:
        RuntimeError: With fresh critics, results that differ from the cached meta-test's.
    """
    # One torch thread, as the training runs and the cached meta-tests have: with one per core,
    # the fresh critics' small fits slow down several-fold while other processes share the cores.
    import torch

    torch.set_num_threads(1)
    trace: list[dict[str, Any]] = []
    found = meta_test_saved_run(run_dir, epoch, overrides=dict(settings), trace=trace,
                                critics=critics)
    record = evaluation.cached(run_dir, epoch, settings) if critics == 'fresh' else None
    if record is not None:
        different = [key for key, value in record['results'].items()
                     if not math.isclose(value, found.get(key, math.nan), rel_tol=1e-9,
                                         abs_tol=1e-9)]
        if different:
            cached_on = record.get('cpu', 'a CPU not recorded (caches before 2026-12-06)')
            raise RuntimeError(f'{run_dir}: the traced meta-test differs from the cached one in '
                               f'{different}. Cached on {cached_on}, traced on '
                               f'{evaluation.cpu_model()}: rollouts are the same bit for bit on '
                               'one CPU model only, so either the code changed what a meta-test '
                               'does or the cache comes from another CPU model (then trace the '
                               'runs on that model, or meta-test them again here)')
    limit = float(settings['cost_limit'])
    for row in trace:
        row.update(measured=row['cost_after'] - row['cost_before'],
                   effect=row['cost_after'] - row['cost_control'],
                   group=group_of(row['cost_before'], limit))
    return trace, found


def _mean_se(values: Any) -> str:
    array = np.asarray(list(values), dtype=float)
    array = array[np.isfinite(array)]
    if len(array) == 0:
        return ''
    if len(array) == 1:  # no standard error from one value
        return f'{array[0]:.1f}'
    return f'{array.mean():.1f} ± {array.std(ddof=1) / np.sqrt(len(array)):.1f}'


def _summary(found: dict[str, list[dict[str, float]]], adapt_steps: int) -> list[str]:
    """Markdown rows: each variant's meta-test on both scales (mean ± standard error over seeds).

    OmniSafe's scale: the cost per episode of the stochastic adaptation rollouts; the paper's: J_C
    of the deterministic evaluation (empty where the meta-test ran none).
    """
    last = adapt_steps
    lines = [f'| variant | return, step {last} | cost per episode, step 0 | cost per episode, '
             f'step {last} | cost per episode, mean of steps 1-{last} | J_C evaluation, step 0 '
             f'| J_C evaluation, step {last} | J_C evaluation, worst of steps 1-{last} |',
             '|---|---|---|---|---|---|---|---|']

    def over_steps(test: dict[str, float], key: str, reduce: Callable) -> float:
        return float(reduce([test.get(f'{key}/step_{k}', math.nan) for k in range(1, last + 1)]))

    for variant, tests in found.items():
        cells = [[test[f'MetaTest/EpRet/step_{last}'] for test in tests],
                 [test['MetaTest/EpCost/step_0'] for test in tests],
                 [test[f'MetaTest/EpCost/step_{last}'] for test in tests],
                 [over_steps(test, 'MetaTest/EpCost', np.mean) for test in tests],
                 [test.get('MetaTest/Eval/EpDiscCost/step_0', math.nan) for test in tests],
                 [test.get(f'MetaTest/Eval/EpDiscCost/step_{last}', math.nan) for test in tests],
                 [over_steps(test, 'MetaTest/Eval/EpDiscCost', np.max) for test in tests]]
        lines.append(f'| {label(variant)} | ' + ' | '.join(_mean_se(c) for c in cells) + ' |')
    return lines


def _groups(frame: pd.DataFrame, limit: float) -> list[str]:
    """Markdown rows: one per (variant, group)."""
    lines = ['| variant | rollout D_k showed | steps | cost of D_k | cost of the same policy, '
             'another rollout | cost after the step | effect of the step (after - another '
             'rollout) | predicted change | above h: another rollout / after the step |',
             '|---|---|---|---|---|---|---|---|---|']
    for variant, mine in frame.groupby('variant', sort=False):
        for group in GROUPS:
            rows = mine[mine['group'] == group]
            if rows.empty:
                continue
            lines.append(
                f'| {label(variant)} | {group} | {len(rows)} ({len(rows) / len(mine):.0%}) | '
                f'{_mean_se(rows["cost_before"])} | {_mean_se(rows["cost_control"])} | '
                f'{_mean_se(rows["cost_after"])} | {_mean_se(rows["effect"])} | '
                f'{_mean_se(rows["predicted"])} | {int((rows["cost_control"] > limit).sum())} / '
                f'{int((rows["cost_after"] > limit).sum())} |')
    return lines


def write_steps(  # pylint: disable=too-many-locals
    budget: Budget,
    runs_dir: str,
    results_dir: str,
    critics: str = 'fresh',
    workers: int = 2,
    cost_advantages: str = 'fresh_critic',
    log: Callable[[str], None] = print,
) -> list[str]:
    """Trace the final checkpoints of the finished runs of ``budget``; write the step tables.

    Args:
        budget: The budget or a selection of it (:meth:`Budget.select`): the runs to trace.
        runs_dir: Root of the grid directories (only read).
        results_dir: Where ``steps.csv`` / ``.md`` go.
        critics: ``fresh`` (the comparison's rule) or ``saved`` (the meta-learners' own).
        workers: Processes tracing runs side by side.
        cost_advantages: The cost advantages of the adaptation steps with fresh critics, of
            :data:`ADVANTAGES` (``meta_test_cfgs.cost_advantages``).
        log: Where progress lines go.

    Returns:
        The paths written.

    Raises:
        ValueError: An unknown ``cost_advantages``, or ``returns`` with saved critics.
    """
    if cost_advantages not in ADVANTAGES:
        raise ValueError(f'cost_advantages = {cost_advantages!r}: allowed '
                         f'{" or ".join(ADVANTAGES)}')
    if critics != 'fresh' and cost_advantages != 'fresh_critic':
        raise ValueError(f'cost_advantages = {cost_advantages!r} replaces the fresh critics; with '
                         f'critics = {critics!r} leave it at fresh_critic')
    # Only a rule other than the comparison's enters the settings: the comparison's traces must
    # find (and equal) the cached meta-tests, whose settings do not name it.
    extra = {} if cost_advantages == 'fresh_critic' else {'cost_advantages': cost_advantages}
    pairs: list[tuple[Job, str]] = []
    for job, run_dir in results.finished(budget.jobs(runs_dir, write=False)):
        if critics == 'saved' and job.algo not in META_LEARNERS:
            log(f'[figure5 {budget.name}] steps: {job.name} left out (saves no critics)')
            continue
        pairs.append((job, run_dir))
    calls = [(run_dir, saved_epochs(run_dir)[-1], {**budget.meta_test_cfgs(job.env_id), **extra},
              critics) for job, run_dir in pairs]
    log(f'[figure5 {budget.name}] steps: tracing {len(calls)} runs ({critics} critics, '
        f'{cost_advantages})')
    with ProcessPoolExecutor(max_workers=max(workers, 1),
                             mp_context=mp.get_context('spawn')) as pool:
        traced = list(pool.map(trace_run, *zip(*calls, strict=True))) if calls else []
    rows: list[dict[str, Any]] = []
    found: dict[str, dict[str, list[dict[str, float]]]] = {}
    for (job, _), (trace, test) in zip(pairs, traced, strict=True):
        rows += [{'env_id': job.env_id, 'variant': job.variant, 'algo': job.algo,
                  'seed': job.seed, **row} for row in trace]
        found.setdefault(job.env_id, {}).setdefault(job.variant, []).append(test)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    name = 'steps' if critics == 'fresh' else 'steps_saved_critics'
    stem = os.path.join(results_dir, name if not extra else f'{name}_{cost_advantages}')
    os.makedirs(results_dir, exist_ok=True)
    frame.to_csv(stem + '.csv', index=False)
    command = ' '.join(['python -m benchmarks.figure5', *sys.argv[1:]])
    lines = [f'Adaptation steps on the unseen test tasks of budget `{budget.name}`, grouped by '
             'the cost per episode of the rollout each step was computed from (means ± '
             'standard error over steps, pooled over tasks, steps and seeds; effect = cost after '
             'the step minus another rollout of the policy before it; the predicted change is on '
             "the scale of the algorithm's own constraint, `algo_cfgs.cost_measure`, discounted "
             'for MetaCPOPaper). Advantages of the adaptation steps: '
             f'{CRITICS[critics] if not extra else ADVANTAGES[cost_advantages]}. Both cost '
             "scales in the first table: OmniSafe's (cost per episode of the stochastic "
             "adaptation rollouts) and the paper's (J_C of the deterministic evaluation); the "
             "groups are on OmniSafe's.", '', f'`{command}`']
    for env_id, tests in found.items():
        settings = budget.meta_test_cfgs(env_id)
        lines += ['', f'### {env_id} (h = {settings["cost_limit"]:g}; {settings["num_tasks"]} '
                  f'tasks x {settings["adapt_steps"]} steps of {settings["rollout_steps"]} env '
                  'steps)', '', *_summary(tests, settings['adapt_steps']), '',
                  *_groups(frame[frame['env_id'] == env_id], float(settings['cost_limit']))]
    with open(stem + '.md', 'w', encoding='utf-8') as file:
        file.write('\n'.join(lines) + '\n')
    return [stem + '.csv', stem + '.md']
