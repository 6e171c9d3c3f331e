"""The numbers behind the figure: training curves and meta-test results of all finished runs.

Training curves are read with OmniSafe's own loader (``Plotter.get_datasets``: ``progress.csv``
with the algorithm from ``config.json``), which names two columns (``Rewards``, ``Costs``) and
keeps the others as they are: the discounted cost ``Metrics/EpDiscCost`` is taken from there (NaN
for runs of a version that did not log it). The meta-test results are the per-checkpoint caches of
:mod:`benchmarks.figure5.evaluation`. Statistics over seeds are the mean and the standard error
(sample standard deviation / sqrt(seeds); undefined, NaN, for a single seed).

Both cost scales are kept side by side (see DESIGN.md, "Two scales of cost"): ``cost`` is
OmniSafe's undiscounted cost per episode, ``disc_cost`` the paper's discounted J_C. A meta-test
has two modes: ``adapt``, the stochastic rollouts the adaptation steps are computed from
(``MetaTest/<measure>/step_k``), and ``eval``, the deterministic evaluation with the mean action
(``MetaTest/Eval/<measure>/step_k``, present when ``meta_test_cfgs.eval_episodes`` > 0).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
import pandas as pd
from omnisafe.utils.plotter import Plotter

from benchmarks.figure5 import evaluation, runs
from benchmarks.figure5.budget import Budget, Job
from omnisafe_metacpo.run_files import saved_epochs

#: Meta-test modes and the prefix of their keys in a meta-test's results.
MODES: dict[str, str] = {'adapt': 'MetaTest', 'eval': 'MetaTest/Eval'}
#: Columns of :func:`meta_test_results` -> the measure in the meta-test's keys.
MEASURES: dict[str, str] = {'return': 'EpRet', 'cost': 'EpCost', 'disc_cost': 'EpDiscCost'}

TRAINING_COLUMNS = ['env_id', 'algo', 'variant', 'seed', 'steps', 'return', 'cost', 'disc_cost']
META_TEST_COLUMNS = ['env_id', 'algo', 'variant', 'seed', 'epoch', 'steps', 'final', 'mode',
                     'adapt_step', 'return', 'cost', 'disc_cost', 'cost_limit']


def finished(jobs: list[Job]) -> list[tuple[Job, str]]:
    """The jobs with a finished run, each with its run directory."""
    pairs = []
    for job in jobs:
        run_dir = runs.finished_run(job)
        if run_dir is not None:
            pairs.append((job, run_dir))
    return pairs


def training_curves(jobs: list[Job]) -> pd.DataFrame:
    """One row per (run, epoch): :data:`TRAINING_COLUMNS`.

    ``Metrics/EpRet``, ``Metrics/EpCost`` and ``Metrics/EpDiscCost`` of the training tasks: after
    adaptation for the meta-learners (their post-adaptation rollouts), of the current policy for
    the others.
    """
    frames = []
    plotter = Plotter()
    for job, run_dir in finished(jobs):
        for data in plotter.get_datasets(run_dir):
            disc = data.get('Metrics/EpDiscCost', math.nan)
            frames.append(pd.DataFrame({
                'env_id': job.env_id,
                'algo': job.algo,
                'variant': job.variant,
                'seed': job.seed,
                'steps': data['TotalEnvSteps'].astype(float),
                'return': data['Rewards'].astype(float),
                'cost': data['Costs'].astype(float),
                'disc_cost': pd.Series(disc, index=data.index, dtype=float),
            }))
    if not frames:
        return pd.DataFrame(columns=TRAINING_COLUMNS)
    return pd.concat(frames, ignore_index=True)[TRAINING_COLUMNS]


def record_rows(results: dict[str, float], adapt_steps: int) -> list[dict[str, Any]]:
    """The rows of one meta-test's results: one per mode present and adaptation step 0..K.

    A cache of a meta-test without the deterministic evaluation (``eval_episodes`` = 0, or a
    version before it) gives ``adapt`` rows only; one without the discounted cost gives NaN there.
    """
    rows = []
    for mode, prefix in MODES.items():
        if f'{prefix}/EpRet/step_0' not in results:
            continue
        for k in range(adapt_steps + 1):
            row: dict[str, Any] = {'mode': mode, 'adapt_step': k}
            for column, measure in MEASURES.items():
                row[column] = float(results.get(f'{prefix}/{measure}/step_{k}', math.nan))
            rows.append(row)
    return rows


def meta_test_results(budget: Budget, jobs: list[Job]) -> pd.DataFrame:
    """One row per (run, checkpoint, mode, adaptation step): :data:`META_TEST_COLUMNS`.

    ``final`` marks the run's last checkpoint; ``cost_limit`` is the test-time h.
    """
    rows = []
    for job, run_dir in finished(jobs):
        settings = budget.meta_test_cfgs(job.env_id)
        epochs = saved_epochs(run_dir)
        for epoch in epochs:
            record = evaluation.cached(run_dir, epoch, settings)
            if record is None:
                continue
            for row in record_rows(record['results'], settings['adapt_steps']):
                rows.append({
                    'env_id': job.env_id, 'algo': job.algo, 'variant': job.variant,
                    'seed': job.seed, 'epoch': epoch, 'steps': float(record['env_steps']),
                    'final': epoch == epochs[-1], **row,
                    'cost_limit': float(settings['cost_limit']),
                })
    return pd.DataFrame(rows, columns=META_TEST_COLUMNS)


def training_cost_limit(jobs: list[Job], env_id: str) -> float | None:
    """h the constrained runs on ``env_id`` were trained with (from their ``config.json``)."""
    for job, run_dir in finished(jobs):
        if job.env_id != env_id:
            continue
        with open(os.path.join(run_dir, 'config.json'), encoding='utf-8') as file:
            limit = json.load(file)['algo_cfgs'].get('cost_limit')
        if limit is not None:
            return float(limit)
    return None


def mean_se(frame: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """Mean, standard error and number of seeds of ``value`` per group of ``by``.

    NaN values (a measure a run did not log) are left out of the mean and of ``count``.
    """
    grouped = frame.groupby(by, sort=False)[value]
    out = grouped.agg(['mean', 'count']).reset_index()
    std = grouped.std(ddof=1).reset_index(drop=True)
    out['se'] = std.to_numpy() / np.sqrt(out['count'].to_numpy())
    return out
