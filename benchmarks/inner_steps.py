"""Which adaptation steps raise the cost on unseen tasks? The meta-test's steps, split by what the
rollout they were computed from showed.

Each run that ``benchmarks/ablation.py`` trained (``--root``, variants, seeds) is meta-tested again
exactly as the ablation did (same tasks, rollouts and settings; the results are checked against its
``meta_test.json``), this time keeping one row per adaptation step (``MetaTester.run``'s trace).
The steps are then grouped by the cost per episode of their own rollout D_k: none at all (the
step's cost gradient a_k is then 0: nothing in the rollout says where the cost is), some but at most
h, above h. Grouping by D_k selects on its noise (a rollout that showed no cost is followed by a
costlier one even when nothing changes), so each step's policy also runs one more, independent
rollout (the control): the step's effect is the cost after the step minus the control's. Per
group: how many steps, the cost of D_k, of the control and after the step, the effect, the change
the step's surrogate predicted on D_k, and how many controls and next rollouts are above h.

    python benchmarks/inner_steps.py --env-id MetaCarCircleHazard-v0 --root runs/comparison_540k \
        --variants CPOCorrected rollout_500 rollout_500_inner_delta_0.001 --seeds 0 1 2 \
        --name inner_steps_540k

Results: ``benchmarks/results/<name>_<env>.csv`` (one row per step) and ``.md`` (the groups; means
with the standard error over steps, pooled over tasks, steps and seeds).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from ablation import _progress_csv, _run_dir  # noqa: E402  (the ablation's own run layout)

GROUPS = ('no cost seen', 'cost seen, at most h', 'cost above h')
CRITICS = {'fresh': "fresh critics fitted on each test rollout (the ablation's rule)",
           'saved': "the meta-learners' own critics (their last checkpoint's), as in training"}


def group_of(cost_before: float, limit: float) -> str:
    """The group of a step by the cost per episode of its own rollout."""
    if cost_before == 0.0:
        return GROUPS[0]
    return GROUPS[1] if cost_before <= limit else GROUPS[2]


def trace_run(root: str, env_id: str, variant: str, seed: int,
              args: argparse.Namespace) -> tuple[list[dict], float, dict[str, float]]:
    """The adaptation steps of one run's meta-test, its test-time cost limit and its results."""
    from omnisafe_metacpo.adaptation_rule import load_run_cfgs
    from omnisafe_metacpo.meta_test import meta_test_saved_run

    log_dir = _run_dir(root, env_id, variant, seed)
    progress = _progress_csv(log_dir)
    if progress is None:
        raise FileNotFoundError(f'no trained run under {log_dir}: run benchmarks/ablation.py first')
    run = os.path.dirname(progress)
    overrides = {'num_tasks': args.test_tasks, 'adapt_steps': args.adapt_steps,
                 'rollout_steps': args.test_rollout_steps}
    trace: list[dict] = []
    results = meta_test_saved_run(run, overrides=overrides, trace=trace, critics=args.critics)
    stored = os.path.join(log_dir, 'meta_test.json')
    # the same meta-test as the ablation's, or the split says nothing about its table
    if args.critics == 'fresh' and os.path.isfile(stored):
        with open(stored, encoding='utf-8') as file:
            saved = json.load(file)
        different = [key for key, value in results.items()
                     if not math.isclose(value, saved[key], rel_tol=1e-9, abs_tol=1e-9)]
        if different:
            raise RuntimeError(f'{log_dir}: meta-test differs from its meta_test.json in '
                               f'{different}: not the ablation\'s meta-test settings?')
    limit = float(load_run_cfgs(run, overrides).meta_test_cfgs.cost_limit)
    for row in trace:
        row.update(variant=variant, seed=seed, measured=row['cost_after'] - row['cost_before'],
                   effect=row['cost_after'] - row['cost_control'],
                   group=group_of(row['cost_before'], limit))
    return trace, limit, results


def _mean_se(values: list[float]) -> str:
    array = np.asarray(values, dtype=float)
    array = array[np.isfinite(array)]
    if len(array) == 0:
        return ''
    se = array.std(ddof=1) / np.sqrt(len(array)) if len(array) > 1 else float('nan')
    return f'{array.mean():.1f} ± {se:.1f}'


def summary(results: dict[str, list[dict[str, float]]], adapt: int) -> list[str]:
    """Markdown rows: each variant's meta-test (mean ± standard error over seeds)."""
    lines = [f'| variant | return, step {adapt} | cost, step 0 | cost, step {adapt} | '
             f'cost, mean of steps 1-{adapt} |', '|---|---|---|---|---|']
    for variant, runs in results.items():
        cells = [[run[f'MetaTest/EpRet/step_{adapt}'] for run in runs],
                 [run['MetaTest/EpCost/step_0'] for run in runs],
                 [run[f'MetaTest/EpCost/step_{adapt}'] for run in runs],
                 [np.mean([run[f'MetaTest/EpCost/step_{k}'] for k in range(1, adapt + 1)])
                  for run in runs]]
        lines.append(f'| {variant} | ' + ' | '.join(_mean_se(cell) for cell in cells) + ' |')
    return lines


def table(rows: list[dict], variants: list[str], limit: float) -> list[str]:
    """Markdown rows: one per (variant, group)."""
    lines = ['| variant | rollout D_k showed | steps | cost of D_k | cost of the same policy, '
             'another rollout | cost after the step | effect of the step (after - another '
             'rollout) | predicted change | above h: another rollout / after the step |',
             '|---|---|---|---|---|---|---|---|---|']
    for variant in variants:
        mine = [row for row in rows if row['variant'] == variant]
        for group in GROUPS:
            steps = [row for row in mine if row['group'] == group]
            if not steps:
                continue
            above = (sum(row['cost_control'] > limit for row in steps),
                     sum(row['cost_after'] > limit for row in steps))
            lines.append(
                f'| {variant} | {group} | {len(steps)} ({len(steps) / len(mine):.0%}) | '
                f'{_mean_se([r["cost_before"] for r in steps])} | '
                f'{_mean_se([r["cost_control"] for r in steps])} | '
                f'{_mean_se([r["cost_after"] for r in steps])} | '
                f'{_mean_se([r["effect"] for r in steps])} | '
                f'{_mean_se([r["predicted"] for r in steps])} | {above[0]} / {above[1]} |')
    return lines


def main() -> None:
    """Trace every (variant, seed), then write the rows and the groups."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--env-id', default='MetaCarCircleHazard-v0')
    parser.add_argument('--root', required=True, help="the ablation's --root")
    parser.add_argument('--variants', nargs='+', required=True)
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--name', default='inner_steps')
    parser.add_argument('--test-tasks', type=int, default=5)
    parser.add_argument('--adapt-steps', type=int, default=5)
    parser.add_argument('--test-rollout-steps', type=int, default=1000)
    parser.add_argument('--critics', choices=('fresh', 'saved'), default='fresh',
                        help="fresh: the ablation's rule; saved: the meta-learners' own critics")
    args = parser.parse_args()
    # One torch thread for the meta-tests here, as the training runs have (torch_threads): with
    # torch's default of one per core, the fresh critics' small fits slow down several-fold while
    # other runs share the cores (a Car meta-test: 34 s with one thread, over 150 s with two, beside
    # two training runs).
    torch.set_num_threads(1)
    rows: list[dict] = []
    results: dict[str, list[dict[str, float]]] = {variant: [] for variant in args.variants}
    limits = set()
    for variant in args.variants:
        for seed in args.seeds:
            trace, limit, result = trace_run(args.root, args.env_id, variant, seed, args)
            rows += trace
            results[variant].append(result)
            limits.add(limit)
            print(f'traced {variant} seed {seed}: {len(trace)} steps', flush=True)
    if len(limits) != 1:
        raise SystemExit(f'the runs meta-test with different cost limits {sorted(limits)}')
    (limit,) = limits
    stem = os.path.join(HERE, 'results', f'{args.name}_{args.env_id}')
    fields = ['variant', 'seed', 'task', 'step', 'group', 'cost_before', 'cost_control',
              'cost_after', 'measured', 'effect', 'predicted', 'case', 'fraction', 'kl']
    with open(stem + '.csv', 'w', encoding='utf-8', newline='') as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows({key: row[key] for key in fields} for row in rows)
    lines = [f'Adaptation steps on {args.env_id}\'s unseen test tasks (h = {limit:g}), grouped by '
             f'the cost per episode of the rollout each step was computed from; runs of '
             f'`{args.root}`, seeds {args.seeds}, {args.test_tasks} tasks x {args.adapt_steps} '
             f'steps of {args.test_rollout_steps} env steps each; means ± standard error over '
             f'steps (costs per episode; effect = cost after the step minus another rollout of '
             f'the policy before it).',
             '`' + ' '.join(['python benchmarks/inner_steps.py', *sys.argv[1:]]) + '`', '',
             f'Advantages of the adaptation steps: {CRITICS[args.critics]}.', '',
             *summary(results, args.adapt_steps), '', *table(rows, args.variants, limit)]
    text = '\n'.join(lines)
    with open(stem + '.md', 'w', encoding='utf-8') as file:
        file.write(text + '\n')
    print(text)


if __name__ == '__main__':
    main()
