"""Why does Meta-CPO's adapted cost exceed h? One setting changed at a time, measured.

Each variant is MetaCPO with the paper's settings (the ``MetaCPOPaper`` preset) but one change
(metric, a KL bound on the Euclidean steps, the inner trust region, K, the rollout length per
inner step), or MetaCPO's defaults with one more change (``rollout_500_*``); ``CPOCorrected`` is
the baseline the targets compare with; ``TRPO`` and ``MetaTRPO`` are the paper's unconstrained
baselines (with their own defaults, the policy (32, 16)). Every run is
trained through the stock CLI (``omnisafe train``), then its final policy is meta-tested on the
same unseen test tasks with its own adaptation rule (``meta_test_saved_run``: fresh critics,
``adapt_steps`` CPO steps at the test-time cost limit). Also read from ``progress.csv`` (mean of
the last three meta-iterations): the KL of the inner steps, the cost change the surrogate
predicted against the one measured by the next rollout, and the training cost after adaptation.

    python benchmarks/ablation.py [--env-id MetaPointCircle-v0] [--total-steps 300000]
        [--seeds 0 1 2] [--variants paper fisher ...] [--workers 2] [--root runs/ablation]

Resumable: a run with a ``meta_test.json`` is not redone; an unfinished Meta-CPO / Meta-TRPO run
goes on from its last checkpoint (``train_cfgs.resume``), an unfinished baseline starts again.
Results: ``benchmarks/results/ablation_<env>.csv`` and ``.md`` (mean and standard error over
seeds).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BIN = os.path.dirname(sys.executable)

#: One change each against the paper's settings (``MetaCPOPaper``; algo_cfgs keys and values).
VARIANTS: dict[str, dict[str, object]] = {
    'paper': {},
    'fisher': {'metric': 'fisher'},
    'kl_bound_0.01': {'kl_bound': 0.01},
    'inner_delta_0.001': {'inner_delta': 0.001},
    'K_2': {'inner_steps': 2},
    'rollout_2000': {'steps_per_epoch': 60000},
    # rollouts of 500 steps: twice the meta-iterations for the same samples
    'rollout_500': {'steps_per_epoch': 15000},
    # MetaCPO's defaults (500-step rollouts) with one more change each, for the environments
    # where they still leave the adapted cost above h (Car-Circle-Hazard)
    'rollout_500_h5': {'steps_per_epoch': 15000, 'cost_limit': 5.0},
    'rollout_500_inner_delta_0.001': {'steps_per_epoch': 15000, 'inner_delta': 0.001},
    'rollout_500_kl_bound_0.01': {'steps_per_epoch': 15000, 'kl_bound': 0.01},
    # inner gradients from half of each rollout, line search on the other half (held out)
    'rollout_500_holdout_50': {'steps_per_epoch': 15000, 'inner_holdout_block': 50},
    # the paper's 1,000-step rollouts, line search on the other episode (Car and Circle: 500)
    'holdout_500': {'inner_holdout_block': 500},
    # inner steps move the policy's head alone (log_std and the last layer; ANIL)
    'rollout_500_head': {'steps_per_epoch': 15000, 'inner_params': 'head'},
    'head': {'inner_params': 'head'},
    # the meta step is the recovery step whenever the training tasks' adapted cost is above h
    'rollout_500_recover': {'steps_per_epoch': 15000, 'meta_over_limit': 'recover'},
    'rollout_500_recover_h5': {'steps_per_epoch': 15000, 'meta_over_limit': 'recover',
                               'cost_limit': 5.0},
    'recover': {'meta_over_limit': 'recover'},
    # the paper's meta-learning baseline with its defaults (its own YAML, not MetaCPOPaper's)
    'MetaTRPO': {},
}
#: The algorithm a variant trains (``MetaCPOPaper`` unless named here).
VARIANT_ALGO: dict[str, str] = {'MetaTRPO': 'MetaTRPO'}
#: The baseline the targets compare with: OmniSafe's CPO with the corrected dual
#: (``CPOCorrected``), its own defaults but the paper's policy and cost limit, trained on the same
#: task distribution for the same number of env steps and meta-tested (fine-tuned with its own
#: CPO step) exactly like the Meta-CPO variants. Its epochs of 20,000 steps are OmniSafe's CPO
#: default; use a ``--total-steps`` that both 20,000 and Meta-CPO's 30,000 divide (e.g. 180,000).
BASELINES: dict[str, dict[str, object]] = {
    'CPOCorrected': {'algo_cfgs': {'cost_limit': 10.0, 'steps_per_epoch': 20000},
                     'model_cfgs': {'actor': {'hidden_sizes': [32, 16]}}},
    # the paper's unconstrained non-meta baseline, same policy and epochs, fine-tuned with TRPO
    # steps at test (the paper expects it to violate h)
    'TRPO': {'algo_cfgs': {'steps_per_epoch': 20000},
             'model_cfgs': {'actor': {'hidden_sizes': [32, 16]}}},
}
#: The plug-in's CLI cannot pass lists (OmniSafe's ``custom_cfgs_to_dict`` splits them into
#: strings), so baselines are trained through ``omnisafe.Agent`` with their configs as JSON.
_AGENT = ('import json, sys, omnisafe; '
          'omnisafe.Agent(sys.argv[1], sys.argv[2], custom_cfgs=json.loads(sys.argv[3])).learn()')
#: Diagnostics read from progress.csv (mean of the last three meta-iterations).
DIAGNOSTICS = ('Metrics/EpCost', 'Metrics/EpRet', 'MetaTrain/PreAdapt/EpCost',
               'MetaTrain/Inner/KL', 'MetaTrain/Inner/KLMax',
               'MetaTrain/Inner/PredictedCostChange', 'MetaTrain/Inner/MeasuredCostChange',
               'MetaTrain/Inner/CostChangeError')


def _run_dir(root: str, env_id: str, variant: str, seed: int) -> str:
    return os.path.join(root, env_id, variant, f'seed-{seed}')


def _progress_csv(log_dir: str) -> str | None:
    for dirpath, _, files in os.walk(log_dir):
        if 'progress.csv' in files:
            return os.path.join(dirpath, 'progress.csv')
    return None


def _resumable(log_dir: str) -> str | None:
    """The run directory under ``log_dir`` holding a resume checkpoint, if any."""
    progress = _progress_csv(log_dir) if os.path.isdir(log_dir) else None
    if progress is None:
        return None
    run = os.path.dirname(progress)
    return run if os.path.isfile(os.path.join(run, 'checkpoints', 'last.pt')) else None


def run_one(root: str, env_id: str, variant: str, seed: int, args: argparse.Namespace) -> dict:
    """Train (unless done), meta-test, and return the row of one (variant, seed)."""
    log_dir = _run_dir(root, env_id, variant, seed)
    result_path = os.path.join(log_dir, 'meta_test.json')
    if not os.path.isfile(result_path):
        # An interrupted Meta-CPO / Meta-TRPO run goes on from its last checkpoint (the plug-in's
        # train_cfgs.resume: no progress row lost or repeated); a baseline (stock OmniSafe, no
        # resume) or a run without a checkpoint starts again.
        resume = _resumable(log_dir) if variant not in BASELINES else None
        if resume is None:
            shutil.rmtree(log_dir, ignore_errors=True)
            os.makedirs(log_dir)
        if variant in BASELINES:
            custom = json.loads(json.dumps(BASELINES[variant]))
            custom.update(seed=seed, train_cfgs={'total_steps': args.total_steps,
                                                 'torch_threads': 1},
                          logger_cfgs={'log_dir': log_dir, 'use_tensorboard': False})
            command = [sys.executable, '-c', _AGENT, variant, env_id, json.dumps(custom)]
        else:
            command = [os.path.join(BIN, 'omnisafe'), 'train', '--algo',
                       VARIANT_ALGO.get(variant, 'MetaCPOPaper'),
                       '--env-id', env_id, '--total-steps', str(args.total_steps),
                       '--log-dir', log_dir, '--custom-cfgs', 'seed', '--custom-cfgs',
                       str(seed), '--custom-cfgs', 'meta_test_cfgs:freq', '--custom-cfgs', '0',
                       # one process per run: --workers runs already share the cores
                       '--custom-cfgs', 'algo_cfgs:env_workers', '--custom-cfgs', '0',
                       '--custom-cfgs', 'logger_cfgs:use_tensorboard', '--custom-cfgs', 'False']
            for key, value in VARIANTS[variant].items():
                command += ['--custom-cfgs', f'algo_cfgs:{key}', '--custom-cfgs', str(value)]
            if resume is not None:
                command += ['--custom-cfgs', 'train_cfgs:resume', '--custom-cfgs', resume]
                print(f'resuming {resume}', flush=True)
        start = time.time()  # of this process only, when resumed
        with open(os.path.join(log_dir, 'train.log'), 'a' if resume else 'w',
                  encoding='utf-8') as log:
            subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
        from omnisafe_metacpo.meta_test import meta_test_saved_run

        run_path = os.path.dirname(_progress_csv(log_dir))
        results = meta_test_saved_run(run_path, overrides={
            'num_tasks': args.test_tasks, 'adapt_steps': args.adapt_steps,
            'rollout_steps': args.test_rollout_steps})
        results['train_seconds'] = time.time() - start
        with open(result_path, 'w', encoding='utf-8') as file:
            json.dump(results, file, indent=2)
    with open(result_path, encoding='utf-8') as file:
        results = json.load(file)
    with open(_progress_csv(log_dir), encoding='utf-8') as file:
        rows = list(csv.DictReader(file))[-3:]
    for key in DIAGNOSTICS:  # the MetaTrain/ ones exist for Meta-CPO only
        results[key] = float(np.mean([float(row[key]) for row in rows])) if key in rows[0] \
            else float('nan')
    print(f'done {env_id} {variant} seed {seed}', flush=True)
    return {'variant': variant, 'seed': seed, **results}


def _mean_se(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=float)
    se = float(array.std(ddof=1) / np.sqrt(len(array))) if len(array) > 1 else float('nan')
    return float(array.mean()), se


def main() -> None:
    """Run every (variant, seed), then write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--env-id', default='MetaPointCircle-v0')
    parser.add_argument('--total-steps', type=int, default=300000)
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS),
                        choices=[*VARIANTS, *BASELINES])
    parser.add_argument('--name', default='ablation',
                        help='results file stem: benchmarks/results/<name>_<env>.csv/.md')
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--root', default=os.path.join(REPO, 'runs', 'ablation'))
    parser.add_argument('--test-tasks', type=int, default=5)
    parser.add_argument('--adapt-steps', type=int, default=5)
    parser.add_argument('--test-rollout-steps', type=int, default=1000)
    args = parser.parse_args()
    if '.' in os.path.abspath(args.root):
        parser.error(f'--root {args.root}: OmniSafe needs a run directory without dots')
    # One torch thread for the meta-tests here, as the training runs have (torch_threads): with
    # torch's default of one per core, the fresh critics' small fits slow down several-fold while
    # other runs share the cores (a Car meta-test: 34 s with one thread, over 150 s with two, beside
    # two training runs).
    torch.set_num_threads(1)
    jobs = [(variant, seed) for variant in args.variants for seed in args.seeds]
    with ThreadPoolExecutor(args.workers) as pool:
        rows = list(pool.map(lambda job: run_one(args.root, args.env_id, *job, args), jobs))

    adapt = args.adapt_steps
    columns = {
        'test_return_step0': 'MetaTest/EpRet/step_0',
        'test_cost_step0': 'MetaTest/EpCost/step_0',
        f'test_return_step{adapt}': f'MetaTest/EpRet/step_{adapt}',
        f'test_cost_step{adapt}': f'MetaTest/EpCost/step_{adapt}',
        'train_cost_adapted': 'Metrics/EpCost',
        'inner_kl': 'MetaTrain/Inner/KL',
        'inner_kl_max': 'MetaTrain/Inner/KLMax',
        'predicted_cost_change': 'MetaTrain/Inner/PredictedCostChange',
        'measured_cost_change': 'MetaTrain/Inner/MeasuredCostChange',
        'cost_change_error': 'MetaTrain/Inner/CostChangeError',
    }
    table = []
    for variant in args.variants:
        mine = [row for row in rows if row['variant'] == variant]
        entry: dict[str, object] = {'env_id': args.env_id, 'variant': variant,
                                    'change': json.dumps(VARIANTS[variant] if variant in VARIANTS
                                                         else BASELINES[variant]),
                                    'seeds': len(mine), 'total_steps': args.total_steps}
        for name, key in columns.items():
            mean, se = _mean_se([row[key] for row in mine])
            entry[f'{name}_mean'], entry[f'{name}_se'] = mean, se
        table.append(entry)
    for entry in table:  # the worst adaptation step: the target is cost <= h at every one
        mine = [row for row in rows if row['variant'] == entry['variant']]
        # Every adaptation step's test rollouts use the same task and seed for every variant, so
        # one step's numbers share its draws; the mean over steps 1..K is the steadier summary.
        for name, metric in (('mean_adapted_return', 'EpRet'), ('mean_adapted_cost', 'EpCost')):
            entry[f'{name}_mean'], entry[f'{name}_se'] = _mean_se(
                [np.mean([row[f'MetaTest/{metric}/step_{k}'] for k in range(1, adapt + 1)])
                 for row in mine])
        worst = max(range(1, adapt + 1), key=lambda k: np.mean(
            [row[f'MetaTest/EpCost/step_{k}'] for row in mine]))
        entry['worst_adapted_cost_mean'], entry['worst_adapted_cost_se'] = _mean_se(
            [row[f'MetaTest/EpCost/step_{worst}'] for row in mine])
        entry['worst_adapted_step'] = worst
    stem = os.path.join(HERE, 'results', f'{args.name}_{args.env_id}')
    with open(stem + '.csv', 'w', encoding='utf-8', newline='') as file:
        writer = csv.DictWriter(file, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    shown = ('test_return_step0', 'test_cost_step0', f'test_return_step{adapt}',
             f'test_cost_step{adapt}', 'mean_adapted_return', 'mean_adapted_cost',
             'worst_adapted_cost', 'train_cost_adapted', 'inner_kl', 'cost_change_error')
    lines = [f'{args.name.capitalize()} on {args.env_id}, {args.total_steps:,} env steps per run, '
             f'seeds '
             f'{args.seeds}; meta-test: {args.test_tasks} unseen tasks, {adapt} adaptation '
             f'steps of {args.test_rollout_steps} env steps (mean ± standard error over seeds).',
             '`' + ' '.join(['python benchmarks/ablation.py', *sys.argv[1:]]) + '`', '',
             '| variant | ' + ' | '.join(shown) + ' |', '|---' * (len(shown) + 1) + '|']
    for entry in table:
        cells = [f'{entry[f"{name}_mean"]:.3g} ± {entry[f"{name}_se"]:.2g}' for name in shown]
        lines.append(f'| {entry["variant"]} | ' + ' | '.join(cells) + ' |')
    text = '\n'.join(lines)
    with open(stem + '.md', 'w', encoding='utf-8') as file:
        file.write(text + '\n')
    print(text)
    plot(rows, args, stem + '.png')


def plot(rows: list[dict], args: argparse.Namespace, path: str) -> None:
    """Return and cost per episode on the unseen tasks against the adaptation step, per variant
    (mean and standard error over seeds), with the test-time cost limit."""
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    from omnisafe_metacpo.adaptation_rule import load_run_cfgs  # pylint: disable=C0415

    steps = np.arange(args.adapt_steps + 1)
    figure, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    for variant in args.variants:
        mine = [row for row in rows if row['variant'] == variant]
        for axis, metric in zip(axes, ('EpRet', 'EpCost'), strict=True):
            values = np.array([[row[f'MetaTest/{metric}/step_{k}'] for k in steps]
                               for row in mine])
            mean = values.mean(axis=0)
            se = values.std(axis=0, ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0 * mean
            axis.plot(steps, mean, marker='o', label=variant)
            axis.fill_between(steps, mean - se, mean + se, alpha=0.2)
    run = os.path.dirname(_progress_csv(_run_dir(args.root, args.env_id, args.variants[0],
                                                 args.seeds[0])))
    limit = load_run_cfgs(run, None).meta_test_cfgs.cost_limit
    axes[1].axhline(limit, color='black', linestyle='--', label=f'h = {limit:g}')
    # linear up to 2h, logarithmic above: h stays readable next to TRPO's costs of hundreds
    axes[1].set_yscale('symlog', linthresh=2 * limit)
    axes[1].set_ylim(bottom=0)  # costs are >= 0 (mean - se can dip below)
    for axis, title in zip(axes, ('return per episode', 'cost per episode'), strict=True):
        axis.set_xlabel('adaptation steps on the unseen task')
        axis.set_title(title)
    axes[1].legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.02, 1.0))
    figure.suptitle(f'{args.env_id}: {len(args.seeds)} seeds, {args.total_steps:,} training '
                    f'steps, {args.test_tasks} unseen tasks', fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == '__main__':
    main()
