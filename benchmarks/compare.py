"""Compare algorithms of an ``omnisafe benchmark`` run: training curves and unseen-task tests.

    omnisafe benchmark point_circle 2 benchmarks/grids/point_circle.yaml --log-dir /tmp/bench
    python benchmarks/compare.py /tmp/bench/benchmark --output benchmarks/results/point_circle

Writes ``<output>.png`` (return and cost per environment step, mean and standard error over seeds)
and ``<output>.md`` (a table). What the curves show differs by algorithm and is said in the plot:
for MetaCPO/MetaTRPO ``Metrics/EpRet`` is the return after adaptation on training tasks, for
CPO/TRPO the return of the current policy on training tasks. The table is the common yardstick:
every final policy on the same unseen ``test`` tasks, before adaptation (step 0) and, for the
meta-learners, after ``--adapt-steps`` CPO/TRPO adaptation steps.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from collections import defaultdict

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np

from omnisafe_metacpo.meta_test import meta_test_saved_run


def find_runs(root: str) -> dict[str, list[str]]:
    """Run directories under ``root`` by algorithm name."""
    runs: dict[str, list[str]] = defaultdict(list)
    for dirpath, _, files in os.walk(root):
        if 'progress.csv' in files and 'config.json' in files:
            with open(os.path.join(dirpath, 'config.json'), encoding='utf-8') as file:
                runs[json.load(file)['algo']].append(dirpath)
    return dict(sorted(runs.items()))


def curves(run_dirs: list[str], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps, mean and standard error of ``key`` over runs (truncated to the shortest run)."""
    series, steps = [], None
    for run in run_dirs:
        with open(os.path.join(run, 'progress.csv'), encoding='utf-8') as file:
            rows = list(csv.DictReader(file))
        series.append([float(row[key]) for row in rows])
        if steps is None or len(rows) < len(steps):
            steps = [float(row['TotalEnvSteps']) for row in rows]
    length = len(steps)
    values = np.array([s[:length] for s in series])
    stderr = values.std(0, ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0 * values[0]
    return np.array(steps), values.mean(0), stderr


def main() -> None:
    """Plot the curves and meta-test every final policy on unseen tasks."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('root')
    parser.add_argument('--output', required=True)
    parser.add_argument('--cost-limit', type=float, default=10.0)
    parser.add_argument('--test-tasks', type=int, default=5)
    parser.add_argument('--adapt-steps', type=int, default=3)
    parser.add_argument('--rollout-steps', type=int, default=1000)
    args = parser.parse_args()
    runs = find_runs(args.root)
    if not runs:
        raise SystemExit(f'no runs (progress.csv + config.json) under {args.root}')

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for algo, run_dirs in runs.items():
        for axis, key in zip(axes, ('Metrics/EpRet', 'Metrics/EpCost'), strict=True):
            steps, mean, err = curves(run_dirs, key)
            axis.plot(steps, mean, label=f'{algo} ({len(run_dirs)} seeds)')
            axis.fill_between(steps, mean - err, mean + err, alpha=0.2)
    axes[0].set_title('Return on training tasks\n(Meta*: after adaptation; CPO/TRPO: as is)')
    axes[1].set_title('Cost on training tasks')
    axes[1].axhline(args.cost_limit, color='k', linestyle='--', linewidth=1, label='limit h')
    for axis in axes:
        axis.set_xlabel('environment steps')
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(f'{args.output}.png', dpi=120)

    lines = [
        f'Final policies on {args.test_tasks} unseen test tasks ({args.rollout_steps} steps per '
        f'rollout); mean over seeds. Meta*: after {args.adapt_steps} adaptation steps too.',
        '',
        '| algorithm | seeds | return, step 0 | cost, step 0 | return, adapted | cost, adapted |',
        '|---|---|---|---|---|---|',
    ]
    for algo, run_dirs in runs.items():
        meta = algo.startswith('Meta')
        steps = args.adapt_steps if meta else 0
        results = [meta_test_saved_run(run, overrides={
            'num_tasks': args.test_tasks, 'adapt_steps': steps,
            'rollout_steps': args.rollout_steps}) for run in run_dirs]

        def mean(key: str, results: list[dict[str, float]] = results) -> str:
            return f'{np.mean([r[key] for r in results]):.2f}'

        adapted = '– | –'
        if meta:
            adapted = (f'{mean(f"MetaTest/EpRet/step_{steps}")} | '
                       f'{mean(f"MetaTest/EpCost/step_{steps}")}')
        lines.append(f'| {algo} | {len(run_dirs)} | {mean("MetaTest/EpRet/step_0")} | '
                     f'{mean("MetaTest/EpCost/step_0")} | {adapted} |')
    text = '\n'.join(lines)
    print(text)
    with open(f'{args.output}.md', 'w', encoding='utf-8') as file:
        file.write(text + '\n')


if __name__ == '__main__':
    main()
