"""Wall time of MetaCPO meta-iterations, split into rollout / inner updates / meta-gradient /
meta step / critic, with the paper's settings (5 tasks, K = 5, policy (32, 16)) by default.

    python benchmarks/meta_iteration.py [--env-id SafetyPointCircle1-v0] [--iterations 3]
        [--backend closed_form] [--metric euclidean] [--steps-per-epoch 30000]

Writes the table to benchmarks/results/meta_iteration.md (with --output).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import tempfile

import omnisafe

PARTS = ('Rollout', 'Inner', 'MetaGrad', 'MetaStep', 'Critic')


def main() -> None:
    """Train a few meta-iterations and print the time split read back from progress.csv."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--env-id', default='SafetyPointCircle1-v0')
    parser.add_argument('--iterations', type=int, default=3)
    parser.add_argument('--backend', default='closed_form')
    parser.add_argument('--metric', default='euclidean')
    parser.add_argument('--steps-per-epoch', type=int, default=30000)
    parser.add_argument('--output', default=None)
    args = parser.parse_args()
    log_dir = tempfile.mkdtemp(prefix='metacpo_bench_')
    try:
        agent = omnisafe.Agent('MetaCPO', args.env_id, custom_cfgs={
            'train_cfgs': {'total_steps': args.iterations * args.steps_per_epoch,
                           'torch_threads': 1},
            'algo_cfgs': {'steps_per_epoch': args.steps_per_epoch,
                          'dco_backend': args.backend, 'metric': args.metric},
            'meta_test_cfgs': {'freq': 0},
            'logger_cfgs': {'log_dir': log_dir, 'use_tensorboard': False},
        })
        agent.learn()
        with open(os.path.join(agent.agent.logger.log_dir, 'progress.csv'),
                  encoding='utf-8') as file:
            rows = list(csv.DictReader(file))
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    lines = [f'MetaCPO on {args.env_id}, backend {args.backend}, metric {args.metric}, '
             f'{args.steps_per_epoch} env steps per meta-iteration, one CPU thread', '',
             '| iteration | ' + ' | '.join(f'{p} s' for p in PARTS)
             + ' | epoch s | non-rollout % |',
             '|---' * (len(PARTS) + 3) + '|']
    for row in rows:
        parts = [float(row[f'Time/{p}']) for p in PARTS]
        epoch = float(row['Time/Epoch'])
        share = 100 * (epoch - parts[0]) / epoch
        lines.append(f'| {int(float(row["Train/Epoch"]))} | '
                     + ' | '.join(f'{p:.2f}' for p in parts) + f' | {epoch:.2f} | {share:.1f} |')
    text = '\n'.join(lines)
    print(text)
    if args.output:
        with open(args.output, 'w', encoding='utf-8') as file:
            file.write(text + '\n')


if __name__ == '__main__':
    main()
