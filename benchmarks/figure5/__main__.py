"""Command line of the Figure-5 comparison (see the package docstring).

    python -m benchmarks.figure5 --budget quick      # or paper, tiny, 540k, or a budget YAML file
    python -m benchmarks.figure5 --budget paper --estimate   # the plan and its estimated time
    python -m benchmarks.figure5 --budget 540k --algos MetaCPO MetaCPOPaper MetaTRPO  # a part
    python -m benchmarks.figure5 --budget 540k --report-only  # plots and tables of what is done
    python -m benchmarks.figure5 --budget ablation_car --report-only --steps  # step by step
"""

from __future__ import annotations

import argparse
import os
import sys

from benchmarks.figure5 import costs, report, scheduler, steps
from benchmarks.figure5.budget import Budget, budget_path


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m benchmarks.figure5',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--budget', default='quick',
                        help='quick | paper | tiny | 540k | ablation_car, or a budget YAML file '
                             '(default: quick)')
    parser.add_argument('--runs-dir', default=None,
                        help='where the grids train (default: runs/figure5_<budget>)')
    parser.add_argument('--results-dir', default=None,
                        help='PNGs and tables (default: benchmarks/results/figure5_<budget>)')
    parser.add_argument('--workers', type=int, default=2, help='parallel runs (default: 2)')
    parser.add_argument('--report-every', type=float, default=60.0,
                        help='seconds between progress lines (default: 60)')
    parser.add_argument('--envs', nargs='+', default=None,
                        help='train and meta-test only the runs on these env ids (default: all '
                             'of the budget); the report covers every finished run of the budget')
    parser.add_argument('--algos', nargs='+', default=None,
                        help="train and meta-test only these algorithms' runs, or a labelled "
                             "grid's by its label (default: all of the budget); e.g. the "
                             'meta-learners first, the rest in a later call; the report covers '
                             'every finished run')
    parser.add_argument('--estimate', action='store_true',
                        help='print the jobs and the estimated time, run nothing')
    parser.add_argument('--report-only', action='store_true',
                        help='train and meta-test nothing: write the plots and tables of the '
                             'finished runs and cached meta-tests (the runs are only read)')
    parser.add_argument('--steps', action='store_true',
                        help='also the step-by-step report (steps.csv / .md): meta-test the final '
                             'checkpoints of the finished runs again with a trace of every '
                             'adaptation step (of --envs / --algos if given)')
    parser.add_argument('--steps-critics', choices=('fresh', 'saved'), default='fresh',
                        help="--steps with fresh critics (the comparison's rule, default) or the "
                             "meta-learners' saved ones (steps_saved_critics.csv / .md)")
    parser.add_argument('--steps-cost-advantages', choices=steps.ADVANTAGES,
                        default='fresh_critic',
                        help='--steps with fresh critics: the cost advantages of the adaptation '
                             "steps, fresh_critic (the comparison's rule, default) or returns "
                             '(the returns-to-go, no baseline: steps_returns.csv / .md)')
    args = parser.parse_args(argv)
    if args.steps_cost_advantages != 'fresh_critic' and args.steps_critics != 'fresh':
        parser.error(f'--steps-cost-advantages {args.steps_cost_advantages} replaces the fresh '
                     f'critics: it needs --steps-critics fresh, not {args.steps_critics}')
    return args


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
    # A part of the same budget: the same run directories, so a later call of all of it reuses
    # these runs, and the report of any call covers them all.
    selected = budget.select(args.envs, args.algos)
    runs_dir = os.path.abspath(args.runs_dir or os.path.join('runs', f'figure5_{budget.name}'))
    results_dir = os.path.abspath(args.results_dir or os.path.join(
        'benchmarks', 'results', f'figure5_{budget.name}'))
    if args.estimate:
        _estimate(selected, runs_dir, args.workers)
        return 0
    failed: list[str] = []
    if args.report_only:
        if not os.path.isdir(runs_dir):
            raise SystemExit(f'--runs-dir {runs_dir}: no such directory')
    else:
        summary = scheduler.run_budget(selected, runs_dir, args.workers, args.report_every)
        print(f'[figure5 {budget.name}] trained {len(summary.trained)} runs, reused '
              f'{len(summary.reused)}; meta-tests run {summary.meta_tests_run}, reused '
              f'{summary.meta_tests_reused}; {summary.seconds / 60:.1f} min')
        failed = summary.failed
    written = report.write_report(budget, runs_dir, results_dir)
    if args.steps:
        written += steps.write_steps(selected, runs_dir, results_dir, args.steps_critics,
                                     args.workers, args.steps_cost_advantages)
    for path in written:
        print(f'[figure5 {budget.name}] wrote {path}')
    if failed:
        print('failed:\n  ' + '\n  '.join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
