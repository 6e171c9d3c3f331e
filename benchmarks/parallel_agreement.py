"""Do 1 and 2 ranks learn alike? Learning curves of ``omnisafe train --parallel 1`` and ``2``.

With the same seed both draw the same tasks with the same rollout seeds; they differ through the
observation normaliser (within a meta-iteration each rank's has seen only its own rollouts) and
the critics' minibatch composition. For each seed, MetaCPO is trained with N = 1 and N = 2 (default
settings but shorter rollouts, 5 tasks: an uneven split), and the post-adaptation return and cost
per meta-iteration are compared: the mean over seeds per N, and the paired difference (same
seed, N = 2 minus N = 1) against the spread between seeds.

    python benchmarks/parallel_agreement.py [--seeds 0 1 2] [--iterations 12]
        [--rollout-steps 200] [--output benchmarks/results/parallel_agreement.md]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
METRICS = ('Metrics/EpRet', 'Metrics/EpCost')


def train(ranks: int, seed: int, iterations: int, rollout_steps: int, env_id: str) -> dict:
    """One run; its metrics per meta-iteration."""
    steps_per_epoch = 5 * 6 * rollout_steps  # 5 tasks x (K = 5 + 1) rollouts
    log_dir = tempfile.mkdtemp(prefix='metacpo_agree_', dir='/tmp').replace('.', '_')
    os.makedirs(log_dir, exist_ok=True)
    command = [
        os.path.join(BIN, 'omnisafe'), 'train', '--algo', 'MetaCPO', '--env-id', env_id,
        '--parallel', str(ranks), '--total-steps', str(iterations * steps_per_epoch),
        '--log-dir', log_dir, '--custom-cfgs', 'seed', '--custom-cfgs', str(seed),
        '--custom-cfgs', 'algo_cfgs:steps_per_epoch', '--custom-cfgs', str(steps_per_epoch),
        '--custom-cfgs', 'meta_test_cfgs:freq', '--custom-cfgs', '0',
        '--custom-cfgs', 'logger_cfgs:use_tensorboard', '--custom-cfgs', 'False',
    ]
    try:
        result = subprocess.run(command, cwd=log_dir, capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            raise RuntimeError(f'{" ".join(command)} failed:\n{result.stderr[-5000:]}')
        progress = next(os.path.join(root, 'progress.csv') for root, _, files
                        in os.walk(log_dir) if 'progress.csv' in files)
        with open(progress, encoding='utf-8') as file:
            rows = list(csv.DictReader(file))
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    return {metric: [float(row[metric]) for row in rows] for metric in METRICS}


def main() -> None:
    """Train every (seed, N) and write the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--iterations', type=int, default=12)
    parser.add_argument('--rollout-steps', type=int, default=200)
    parser.add_argument('--env-id', default='MetaPointCircle-v0')
    parser.add_argument('--output', default=os.path.join(HERE, 'results',
                                                         'parallel_agreement.md'))
    args = parser.parse_args()
    runs = {ranks: [train(ranks, seed, args.iterations, args.rollout_steps, args.env_id)
                    for seed in args.seeds] for ranks in (1, 2)}
    lines = [
        f'MetaCPO on {args.env_id}, 5 tasks x (5 + 1) rollouts of {args.rollout_steps} steps, '
        f'{args.iterations} meta-iterations, seeds {args.seeds}, `--parallel 1` against `2`. '
        'Post-adaptation metrics over the last half of the meta-iterations: mean over seeds '
        '(± standard error); paired difference N = 2 minus N = 1 (same seed), its mean and the '
        'standard deviation of the per-seed differences, against the standard deviation between '
        'seeds of N = 1.',
        f'`python benchmarks/parallel_agreement.py --seeds {" ".join(map(str, args.seeds))} '
        f'--iterations {args.iterations} --rollout-steps {args.rollout_steps}`',
        '',
        '| metric | N = 1 | N = 2 | paired difference | its std | std between seeds (N = 1) |',
        '|---|---|---|---|---|---|',
    ]
    half = args.iterations // 2
    summary = {}
    for metric in METRICS:
        late = {ranks: np.array([np.mean(run[metric][half:]) for run in runs[ranks]])
                for ranks in (1, 2)}
        diff = late[2] - late[1]
        sem = {ranks: late[ranks].std(ddof=1) / np.sqrt(len(args.seeds)) for ranks in (1, 2)}
        summary[metric] = {'late_mean': {r: late[r].tolist() for r in (1, 2)},
                           'paired_difference': diff.tolist()}
        lines.append(
            f'| {metric} | {late[1].mean():.2f} ± {sem[1]:.2f} | {late[2].mean():.2f} ± '
            f'{sem[2]:.2f} | {diff.mean():+.2f} | {diff.std(ddof=1):.2f} | '
            f'{late[1].std(ddof=1):.2f} |')
    text = '\n'.join(lines)
    print(text)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, 'w', encoding='utf-8') as file:
        file.write(text + '\n')
    with open(os.path.splitext(args.output)[0] + '.json', 'w', encoding='utf-8') as file:
        json.dump({'runs': runs, 'summary': summary}, file, indent=2)


if __name__ == '__main__':
    main()
