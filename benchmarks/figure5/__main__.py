"""Command line of the Figure-5 comparison (see the package docstring).

    python -m benchmarks.figure5 --budget quick      # or paper, tiny, or a budget YAML file
    python -m benchmarks.figure5 --budget paper --estimate   # the plan and its estimated time
"""

from __future__ import annotations

import argparse
import os
import sys

from benchmarks.figure5 import costs, figures, results, scheduler, tables
from benchmarks.figure5.budget import Budget, budget_path


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m benchmarks.figure5',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--budget', default='quick',
                        help='quick | paper | tiny, or a budget YAML file (default: quick)')
    parser.add_argument('--runs-dir', default=None,
                        help='where the grids train (default: runs/figure5_<budget>)')
    parser.add_argument('--results-dir', default=None,
                        help='PNGs and tables (default: benchmarks/results/figure5_<budget>)')
    parser.add_argument('--workers', type=int, default=2, help='parallel runs (default: 2)')
    parser.add_argument('--report-every', type=float, default=60.0,
                        help='seconds between progress lines (default: 60)')
    parser.add_argument('--envs', nargs='+', default=None,
                        help="only these env ids' grids (default: all of the budget)")
    parser.add_argument('--algos', nargs='+', default=None,
                        help="only these algorithms' runs (default: all of the budget); e.g. the "
                             'meta-learners first, the rest in a later call')
    parser.add_argument('--estimate', action='store_true',
                        help='print the jobs and the estimated time, run nothing')
    return parser.parse_args(argv)


def _estimate(budget: Budget, runs_dir: str, workers: int) -> None:
    jobs = budget.jobs(runs_dir, write=False)
    train = sum(costs.train_seconds(job) for job in jobs)
    test = sum(costs.test_seconds(job, budget.meta_test_cfgs(job.env_id)) for job in jobs)
    steps = sum(job.total_steps for job in jobs)
    print(f'[figure5 {budget.name}] {len(jobs)} runs, {steps:,} training env steps, '
          f'{sum(len(job.checkpoints) for job in jobs)} checkpoints to meta-test')
    print(f'estimate (costs.py, this machine): training {train / 3600:.1f} h + meta-testing '
          f'{test / 3600:.1f} h of one worker = {(train + test) / workers / 3600:.1f} h wall '
          f'with {workers} workers')


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; returns the exit status (1 if any job failed)."""
    args = _parse(argv)
    budget = Budget(budget_path(args.budget))
    if args.envs:
        unknown = sorted(set(args.envs) - set(budget.env_ids()))
        if unknown:
            raise SystemExit(f'--envs {" ".join(unknown)}: not in budget {budget.name} '
                             f'(its env ids: {", ".join(budget.env_ids())})')
        # A subset of the same budget: the same run directories, so a later run of all envs
        # reuses these runs.
        budget.grids = {name: grid for name, grid in budget.grids.items()
                        if all(variant['env_id'] in args.envs for variant in grid.variants())}
    if args.algos:
        unknown = sorted(set(args.algos) - set(budget.algos()))
        if unknown:
            raise SystemExit(f'--algos {" ".join(unknown)}: not in budget {budget.name} '
                             f'(its algorithms: {", ".join(budget.algos())})')
        budget.grids = {name: grid for name, grid in budget.grids.items()
                        if all(variant['algo'] in args.algos for variant in grid.variants())}
    runs_dir = os.path.abspath(args.runs_dir or os.path.join('runs', f'figure5_{budget.name}'))
    results_dir = os.path.abspath(args.results_dir or os.path.join(
        'benchmarks', 'results', f'figure5_{budget.name}'))
    if args.estimate:
        _estimate(budget, runs_dir, args.workers)
        return 0
    summary = scheduler.run_budget(budget, runs_dir, args.workers, args.report_every)
    print(f'[figure5 {budget.name}] trained {len(summary.trained)} runs, reused '
          f'{len(summary.reused)}; meta-tests run {summary.meta_tests_run}, reused '
          f'{summary.meta_tests_reused}; {summary.seconds / 60:.1f} min')

    jobs = budget.jobs(runs_dir)
    env_ids, algos = budget.env_ids(), budget.algos()
    training = results.training_curves(jobs)
    meta_test = results.meta_test_results(budget, jobs)
    os.makedirs(results_dir, exist_ok=True)
    for env_id in env_ids:
        settings = budget.meta_test_cfgs(env_id)
        path = os.path.join(results_dir, f'{env_id}.png')
        figures.plot_env(env_id, algos, training, meta_test,
                         results.training_cost_limit(jobs, env_id), settings['cost_limit'],
                         settings['adapt_steps'], path)
        print(f'[figure5 {budget.name}] wrote {path}')
    note = (f'Meta-test of the final checkpoints, budget `{budget.name}`: mean and standard error '
            'over seeds of the return and cost per episode on the same unseen test tasks, after '
            '`adapt_step` adaptation steps (CPO steps for Meta-CPO and the CPO variants, TRPO '
            'steps for Meta-TRPO and TRPO; advantages from fresh critics fitted on each test '
            "rollout). `CPO` is OmniSafe 0.5.0's CPO, with the sign defect of its dual solution; "
            '`CPOCorrected` is the same with the sign corrected.')
    frame = tables.table(meta_test, env_ids, algos)
    tables.write(frame, os.path.join(results_dir, 'meta_test.csv'),
                 os.path.join(results_dir, 'meta_test.md'), note)
    print(f'[figure5 {budget.name}] wrote {os.path.join(results_dir, "meta_test.csv")} and .md')
    if summary.failed:
        print('failed:\n  ' + '\n  '.join(summary.failed), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
