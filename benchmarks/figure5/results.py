"""The numbers behind the figure: training curves and meta-test results of all finished runs.

Training curves are read with OmniSafe's own loader (``Plotter.get_datasets``: ``progress.csv``
with the algorithm from ``config.json``); the meta-test results are the per-checkpoint caches of
:mod:`benchmarks.figure5.evaluation`. Statistics over seeds are the mean and the standard error
(sample standard deviation / sqrt(seeds); undefined, NaN, for a single seed).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
from omnisafe.utils.plotter import Plotter

from benchmarks.figure5 import evaluation, runs
from benchmarks.figure5.budget import Budget, Job
from omnisafe_metacpo.adaptation_rule import saved_epochs


def _finished(jobs: list[Job]) -> list[tuple[Job, str]]:
    pairs = []
    for job in jobs:
        run_dir = runs.finished_run(job)
        if run_dir is not None:
            pairs.append((job, run_dir))
    return pairs


def training_curves(jobs: list[Job]) -> pd.DataFrame:
    """One row per (run, epoch): env_id, algo, seed, steps, return, cost.

    ``Metrics/EpRet`` / ``Metrics/EpCost`` of the training tasks: after adaptation for the
    meta-learners (their post-adaptation rollouts), of the current policy for the others.
    """
    frames = []
    plotter = Plotter()
    for job, run_dir in _finished(jobs):
        for data in plotter.get_datasets(run_dir):
            frames.append(pd.DataFrame({
                'env_id': job.env_id,
                'algo': job.algo,
                'seed': job.seed,
                'steps': data['TotalEnvSteps'].astype(float),
                'return': data['Rewards'].astype(float),
                'cost': data['Costs'].astype(float),
            }))
    columns = ['env_id', 'algo', 'seed', 'steps', 'return', 'cost']
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def meta_test_results(budget: Budget, jobs: list[Job]) -> pd.DataFrame:
    """One row per (run, checkpoint, adaptation step): env_id, algo, seed, epoch, steps,
    final (the run's last checkpoint), adapt_step, return, cost, cost_limit."""
    rows = []
    for job, run_dir in _finished(jobs):
        settings = budget.meta_test_cfgs(job.env_id)
        epochs = saved_epochs(run_dir)
        for epoch in epochs:
            record = evaluation.cached(run_dir, epoch, settings)
            if record is None:
                continue
            for k in range(settings['adapt_steps'] + 1):
                rows.append({
                    'env_id': job.env_id, 'algo': job.algo, 'seed': job.seed, 'epoch': epoch,
                    'steps': float(record['env_steps']), 'final': epoch == epochs[-1],
                    'adapt_step': k,
                    'return': record['results'][f'MetaTest/EpRet/step_{k}'],
                    'cost': record['results'][f'MetaTest/EpCost/step_{k}'],
                    'cost_limit': float(settings['cost_limit']),
                })
    columns = ['env_id', 'algo', 'seed', 'epoch', 'steps', 'final', 'adapt_step', 'return',
               'cost', 'cost_limit']
    return pd.DataFrame(rows, columns=columns)


def training_cost_limit(jobs: list[Job], env_id: str) -> float | None:
    """h the constrained runs on ``env_id`` were trained with (from their ``config.json``)."""
    for job, run_dir in _finished(jobs):
        if job.env_id != env_id:
            continue
        with open(os.path.join(run_dir, 'config.json'), encoding='utf-8') as file:
            limit = json.load(file)['algo_cfgs'].get('cost_limit')
        if limit is not None:
            return float(limit)
    return None


def mean_se(frame: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """Mean, standard error and number of seeds of ``value`` per group of ``by``."""
    grouped = frame.groupby(by, sort=False)[value]
    out = grouped.agg(['mean', 'count']).reset_index()
    std = grouped.std(ddof=1).reset_index(drop=True)
    out['se'] = std.to_numpy() / np.sqrt(out['count'].to_numpy())
    return out
