"""Measure the per-step costs of :mod:`benchmarks.figure5.costs` on this machine.

    python -m benchmarks.figure5.measure [--budget quick] [--workers 2] [--output FILE]

Trains one epoch of every (algorithm, env) of the budget with its grid settings (2 workers by
default: both cores busy, as in a comparison), then meta-tests the result with the budget's
meta-test settings, and prints the CPU seconds per environment step of each (about 6 minutes
for ``quick`` on 2 idle cores). Runs go to a temporary directory that is removed afterwards.
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing as mp
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from benchmarks.figure5 import evaluation, runs
from benchmarks.figure5.budget import Budget, Job, budget_path


def _measure(job: Job, settings: dict[str, Any]) -> dict[str, Any]:
    """Train one epoch of ``job`` and meta-test it; the seconds of each (in a worker)."""
    from omnisafe.utils.exp_grid_tools import train

    # CPU time of this process: what a run costs a core of its own (a 2-worker comparison on 2
    # cores), whatever else the machine is running while it is measured; wall time for reference.
    wall, cpu = time.time(), time.process_time()
    train(job.name, job.algo, job.env_id, copy.deepcopy(job.custom_cfgs))  # train() edits it
    train_wall, train_cpu = time.time() - wall, time.process_time() - cpu
    run_dir = runs.finished_run(job)
    assert run_dir is not None, f'{job.name}: no finished run'
    wall, cpu = time.time(), time.process_time()
    evaluation.meta_test_checkpoint(run_dir, 1, settings)
    test_wall, test_cpu = time.time() - wall, time.process_time() - cpu
    test_steps = settings['num_tasks'] * (settings['adapt_steps'] + 1) * settings['rollout_steps']
    return {'algo': job.algo, 'env_id': job.env_id, 'train_wall': train_wall,
            'train_cpu': train_cpu, 'train_per_step': train_cpu / job.steps_per_epoch,
            'test_wall': test_wall, 'test_cpu': test_cpu, 'test_per_step': test_cpu / test_steps}


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--budget', default='quick')
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--output', default=None, help='also write the table to this file')
    args = parser.parse_args()
    budget = Budget(budget_path(args.budget))
    root = tempfile.mkdtemp(prefix='figure5_measure_', dir='/tmp')
    try:
        one_each = {}
        for job in budget.jobs(root):
            if (job.algo, job.env_id) in one_each:
                continue
            cfgs = copy.deepcopy(job.custom_cfgs)
            cfgs['train_cfgs']['total_steps'] = job.steps_per_epoch
            cfgs['logger_cfgs']['save_model_freq'] = 1
            one_each[(job.algo, job.env_id)] = Job(job.grid, job.exp_dir, cfgs, 1,
                                                   job.steps_per_epoch, 1)
        pool = ProcessPoolExecutor(max_workers=args.workers, mp_context=mp.get_context('spawn'))
        futures = [pool.submit(_measure, job, budget.meta_test_cfgs(job.env_id))
                   for job in one_each.values()]
        rows = [future.result() for future in futures]
        pool.shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    lines = ['| algorithm | env | train: CPU s (wall s), 1 epoch | CPU ms/step | '
             'meta-test: CPU s (wall s) | CPU ms/test step |', '|---|---|---|---|---|---|']
    for row in rows:
        lines.append(f"| {row['algo']} | {row['env_id']} | {row['train_cpu']:.1f} "
                     f"({row['train_wall']:.1f}) | {row['train_per_step'] * 1e3:.3f} | "
                     f"{row['test_cpu']:.1f} ({row['test_wall']:.1f}) | "
                     f"{row['test_per_step'] * 1e3:.3f} |")
    text = '\n'.join(lines)
    print(text)
    if args.output:
        with open(args.output, 'w', encoding='utf-8') as file:
            file.write(text + '\n')


if __name__ == '__main__':
    main()
