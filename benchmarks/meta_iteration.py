"""Meta-iteration throughput: the sequential and the batched sampler, measured in one run.

For each environment, with the paper's settings (5 tasks, K = 5, 30,000 env steps per
meta-iteration, 60,000 for Button; policy (32, 16)), MetaCPO is trained for a few meta-iterations
through the stock CLI exactly as ``make train`` runs it (``omnisafe train``, no thread option
typed, so the plug-in's own thread choice applies), once with ``algo_cfgs.sampler: sequential``
(the per-task reference path) and once with ``batched`` (the default). Printed and written:

* env steps/s end to end (steps of a meta-iteration / its wall time) and the batched/sequential
  ratio;
* the time split of a meta-iteration (rollouts, inner steps, meta-gradient, meta step, critic);
* rollout time per env step against the env-alone step time (the same env, random actions,
  resets included, measured in this run: ``benchmarks/env_speed.py``'s ``measure``);
* peak memory (max RSS) of each training process.

    python benchmarks/meta_iteration.py [--iterations 2] [--envs SafetyPointCircle1-v0 ...]
        [--output benchmarks/results/meta_iteration.md]

With ``--parallel 1 2`` it measures ranks instead of samplers (``omnisafe train --parallel N``,
torchrun, the batched sampler): for each ``--num-tasks`` M (default 6, an even split over 2
ranks, and the paper's 5), the wall time of a meta-iteration with each N, its ratio to N = 1,
and the peak memory (VmHWM) of every rank. Iterations after the first are timed when there are
several (the first also builds each rank's environments).

    python benchmarks/meta_iteration.py --parallel 1 2 [--num-tasks 6 5] [--iterations 3]
        [--envs SafetyPointCircle1-v0] [--output benchmarks/results/meta_iteration_ranks.md]

Meta-test rollouts are off (``meta_test_cfgs.freq 0``) so that only training is timed.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BIN = os.path.dirname(sys.executable)
PARTS = ('Rollout', 'Inner', 'MetaGrad', 'MetaStep', 'Critic')
ENVS = ('SafetyPointCircle1-v0', 'MetaCarCircleHazard-v0', 'MetaPointButton-v0')
SAMPLERS = ('sequential', 'batched')


def env_alone_ms(env_id: str, steps: int) -> float:
    """Milliseconds per step of the task-distribution env alone (random actions, resets)."""
    sys.path.insert(0, HERE)
    from env_speed import measure  # the env benchmark's own timing loop

    import task_distributions

    env = task_distributions.make_env(env_id, split='train')
    result = measure(env, env_id, steps, seed=0)
    return 1e3 * result.seconds / result.steps


def train(env_id: str, sampler: str, iterations: int, steps_per_epoch: int) -> dict:
    """One ``omnisafe train`` process; its progress rows and peak memory."""
    log_dir = tempfile.mkdtemp(prefix='metacpo_bench_', dir='/tmp').replace('.', '_')
    os.makedirs(log_dir, exist_ok=True)
    command = [
        os.path.join(BIN, 'omnisafe'), 'train', '--algo', 'MetaCPO', '--env-id', env_id,
        '--total-steps', str(iterations * steps_per_epoch), '--log-dir', log_dir,
        '--custom-cfgs', 'algo_cfgs:sampler', '--custom-cfgs', sampler,
        '--custom-cfgs', 'algo_cfgs:steps_per_epoch', '--custom-cfgs', str(steps_per_epoch),
        '--custom-cfgs', 'meta_test_cfgs:freq', '--custom-cfgs', '0',
        '--custom-cfgs', 'logger_cfgs:use_tensorboard', '--custom-cfgs', 'False',
    ]
    try:
        start = time.time()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   cwd=log_dir)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.time() - start
        if status != 0:
            raise RuntimeError(f'{" ".join(command)} failed:\n{process.stderr.read().decode()}')
        progress = next(os.path.join(root, 'progress.csv') for root, _, files
                        in os.walk(log_dir) if 'progress.csv' in files)
        with open(progress, encoding='utf-8') as file:
            rows = list(csv.DictReader(file))
        with open(os.path.join(os.path.dirname(progress), 'config.json'),
                  encoding='utf-8') as file:
            threads = json.load(file)['train_cfgs']['torch_threads']
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    epoch = float(np.mean([float(row['Time/Epoch']) for row in rows]))
    return {
        'epoch_s': epoch,
        'steps_per_s': steps_per_epoch / epoch,
        'parts_s': {part: float(np.mean([float(row[f'Time/{part}']) for row in rows]))
                    for part in PARTS},
        'peak_rss_mib': usage.ru_maxrss / 1024,
        'process_wall_s': wall,
        'torch_threads': threads,
    }


def _peak_rss_mib(pid: int) -> float | None:
    """VmHWM (peak resident memory) of a live process, in MiB; ``None`` once it is gone."""
    try:
        with open(f'/proc/{pid}/status', encoding='utf-8') as file:
            for line in file:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def train_ranks(env_id: str, ranks: int, num_tasks: int, iterations: int,
                rollout_steps: int) -> dict:
    """One ``omnisafe train --parallel ranks`` run: meta-iteration wall time, peak RSS per rank.

    The ranks' pids come from the run's log (``rank pids [...]``; with one rank, the training
    process is the launcher itself); their VmHWM is read until they exit.
    """
    steps_per_epoch = num_tasks * 6 * rollout_steps  # M tasks x (K = 5 inner steps + 1)
    log_dir = tempfile.mkdtemp(prefix='metacpo_bench_', dir='/tmp').replace('.', '_')
    os.makedirs(log_dir, exist_ok=True)
    command = [
        os.path.join(BIN, 'omnisafe'), 'train', '--algo', 'MetaCPO', '--env-id', env_id,
        '--parallel', str(ranks), '--total-steps', str(iterations * steps_per_epoch),
        '--log-dir', log_dir,
        '--custom-cfgs', 'algo_cfgs:num_tasks', '--custom-cfgs', str(num_tasks),
        # Ranks alone: no environment helper processes (one rank would otherwise use the second
        # core for them, and two ranks leave no core free here).
        '--custom-cfgs', 'algo_cfgs:env_workers', '--custom-cfgs', '0',
        '--custom-cfgs', 'algo_cfgs:steps_per_epoch', '--custom-cfgs', str(steps_per_epoch),
        '--custom-cfgs', 'meta_test_cfgs:freq', '--custom-cfgs', '0',
        '--custom-cfgs', 'logger_cfgs:use_tensorboard', '--custom-cfgs', 'False',
    ]
    out = os.path.join(log_dir, 'stdout.txt')
    peaks: dict[int, float] = {}
    try:
        with open(out, 'w', encoding='utf-8') as stdout:
            process = subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE,
                                       cwd=log_dir)

        def watch() -> None:
            pids = [process.pid] if ranks == 1 else []
            while process.poll() is None:
                if not pids:
                    with open(out, encoding='utf-8') as file:
                        match = re.search(r'rank pids \[([\d, ]+)\]', ' '.join(file.read().split()))
                    if match:
                        pids = [int(pid) for pid in match.group(1).split(',')]
                for pid in pids:
                    peak = _peak_rss_mib(pid)
                    if peak is not None:
                        peaks[pid] = max(peaks.get(pid, 0.0), peak)
                time.sleep(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        _, stderr = process.communicate()
        watcher.join()
        if process.returncode != 0:
            raise RuntimeError(f'{" ".join(command)} failed:\n{stderr.decode()[-5000:]}')
        progress = next(os.path.join(root, 'progress.csv') for root, _, files
                        in os.walk(log_dir) if 'progress.csv' in files)
        with open(progress, encoding='utf-8') as file:
            rows = list(csv.DictReader(file))
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    timed = rows[1:] if len(rows) > 1 else rows
    epoch = float(np.mean([float(row['Time/Epoch']) for row in timed]))
    return {
        'num_tasks': num_tasks,
        'steps_per_epoch': steps_per_epoch,
        'epoch_s': epoch,
        'parts_s': {part: float(np.mean([float(row[f'Time/{part}']) for row in timed]))
                    for part in PARTS},
        'peak_rss_mib_per_rank': [round(peak) for _, peak in sorted(peaks.items())],
    }


def main_ranks(args: argparse.Namespace) -> None:
    """Meta-iteration wall time with 1, 2, ... ranks, as a ratio to one rank, in one run."""
    load = os.getloadavg()
    results: dict[str, dict] = {}
    for env_id in args.envs:
        for num_tasks in args.num_tasks:
            runs = {ranks: train_ranks(env_id, ranks, num_tasks, args.iterations,
                                       args.rollout_steps) for ranks in args.parallel}
            results[f'{env_id} M={num_tasks}'] = {'env_id': env_id, 'runs': runs}
            print(env_id, num_tasks, json.dumps(runs), flush=True)
    base_ranks = args.parallel[0]
    lines = [
        f'MetaCPO meta-iterations over ranks (`omnisafe train --parallel N`, torchrun, gloo; '
        f'K = 5, rollouts of {args.rollout_steps} steps, policy (32, 16), batched sampler), '
        f'{args.iterations} meta-iterations per run (the first untimed when there are several), '
        f'meta-testing off; {platform.node()}, {os.cpu_count()} cores, load average '
        f'{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the start, '
        f'{datetime.datetime.now().strftime("%Y-%m-%d %H:%M")}.',
        f'`python benchmarks/meta_iteration.py --parallel {" ".join(map(str, args.parallel))} '
        f'--num-tasks {" ".join(map(str, args.num_tasks))} --iterations {args.iterations} '
        f'--rollout-steps {args.rollout_steps}`',
        '',
        '| env | tasks M | ranks N | env steps / iteration | iteration s | '
        f'ratio to N = {base_ranks} | '
        + ' | '.join(f'{p} s' for p in PARTS) + ' | peak RSS per rank MiB |',
        '|---' * (7 + len(PARTS)) + '|',
    ]
    for result in results.values():
        base = result['runs'][base_ranks]['epoch_s']
        for ranks, run in result['runs'].items():
            lines.append(
                f'| {result["env_id"]} | {run["num_tasks"]} | {ranks} | '
                f'{run["steps_per_epoch"]:,} | {run["epoch_s"]:.2f} | {run["epoch_s"] / base:.2f}x'
                ' | ' + ' | '.join(f'{run["parts_s"][p]:.2f}' for p in PARTS)
                + f' | {", ".join(map(str, run["peak_rss_mib_per_rank"]))} |',
            )
    text = '\n'.join(lines)
    print(text)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, 'w', encoding='utf-8') as file:
        file.write(text + '\n')
    with open(os.path.splitext(args.output)[0] + '.json', 'w', encoding='utf-8') as file:
        json.dump(results, file, indent=2)


def main() -> None:
    """Measure every env with both samplers (or with 1, 2, ... ranks) and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--envs', nargs='+', default=None)
    parser.add_argument('--iterations', type=int, default=2)
    parser.add_argument('--env-steps', type=int, default=5000,
                        help='steps of the env-alone measurement')
    parser.add_argument('--parallel', type=int, nargs='+', default=None,
                        help='measure these numbers of ranks (e.g. 1 2) instead of samplers')
    parser.add_argument('--num-tasks', type=int, nargs='+', default=[6, 5],
                        help='with --parallel: tasks per meta-iteration to measure')
    parser.add_argument('--rollout-steps', type=int, default=1000,
                        help="with --parallel: steps per rollout (the paper's 1,000)")
    parser.add_argument('--output', default=None)
    args = parser.parse_args()
    if args.parallel:
        args.envs = args.envs or ['SafetyPointCircle1-v0']
        args.output = args.output or os.path.join(HERE, 'results', 'meta_iteration_ranks.md')
        main_ranks(args)
        return
    args.envs = args.envs or list(ENVS)
    args.output = args.output or os.path.join(HERE, 'results', 'meta_iteration.md')
    results = {}
    for env_id in args.envs:
        steps_per_epoch = 60000 if 'Button' in env_id else 30000
        alone = env_alone_ms(env_id, args.env_steps)
        runs = {sampler: train(env_id, sampler, args.iterations, steps_per_epoch)
                for sampler in SAMPLERS}
        results[env_id] = {'steps_per_epoch': steps_per_epoch, 'env_alone_ms': alone, **runs}
        print(env_id, json.dumps(results[env_id]), flush=True)

    lines = [
        f'MetaCPO meta-iterations through `omnisafe train` (paper settings: 5 tasks, K = 5, '
        f'policy (32, 16)), {args.iterations} meta-iterations per run, meta-testing off; '
        f'{platform.node()}, {os.cpu_count()} cores, '
        f'{datetime.datetime.now().strftime("%Y-%m-%d %H:%M")}.',
        f'`python benchmarks/meta_iteration.py --iterations {args.iterations}`',
        '',
        '| env | sampler | env steps / iteration | env steps/s | speed-up | '
        + ' | '.join(f'{p} s' for p in PARTS)
        + ' | rollout ms / env step | env alone ms / step | ratio | peak RSS MiB | threads |',
        '|---' * (10 + len(PARTS)) + '|',
    ]
    for env_id, result in results.items():
        base = result['sequential']['steps_per_s']
        for sampler in SAMPLERS:
            run = result[sampler]
            rollout_ms = 1e3 * run['parts_s']['Rollout'] / result['steps_per_epoch']
            lines.append(
                f'| {env_id} | {sampler} | {result["steps_per_epoch"]:,} | '
                f'{run["steps_per_s"]:,.0f} | {run["steps_per_s"] / base:.2f}x | '
                + ' | '.join(f'{run["parts_s"][p]:.2f}' for p in PARTS)
                + f' | {rollout_ms:.3f} | {result["env_alone_ms"]:.3f} | '
                f'{rollout_ms / result["env_alone_ms"]:.2f} | {run["peak_rss_mib"]:,.0f} | '
                f'{run["torch_threads"]} |',
            )
    text = '\n'.join(lines)
    print(text)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, 'w', encoding='utf-8') as file:
        file.write(text + '\n')
    with open(os.path.splitext(args.output)[0] + '.json', 'w', encoding='utf-8') as file:
        json.dump(results, file, indent=2)


if __name__ == '__main__':
    main()
