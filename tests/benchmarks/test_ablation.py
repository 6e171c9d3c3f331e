"""``benchmarks/ablation.py`` end to end: a Meta-CPO variant and the CPOCorrected baseline."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO


def _command(root: str, name: str, env_id: str, variants: list[str], workers: int) -> list[str]:
    """``ablation.py`` at a test's size: 30,000 steps, seed 0, a one-step meta-test."""
    return [sys.executable, os.path.join(REPO, 'benchmarks', 'ablation.py'), '--env-id', env_id,
            '--total-steps', '30000', '--seeds', '0', '--variants', *variants, '--workers',
            str(workers), '--root', root, '--name', name, '--test-tasks', '1', '--adapt-steps', '1',
            '--test-rollout-steps', '200']


@pytest.mark.slow  # about 2 minutes: one epoch of each, then their meta-tests
def test_ablation_trains_meta_tests_and_tabulates(run_dir: str) -> None:
    root = os.path.join(run_dir, 'runs')
    name = f'test_{os.path.basename(run_dir)}'
    env_id = 'MetaPointCircle-v0'
    command = _command(root, name, env_id, ['kl_bound_0.01', 'CPOCorrected'], workers=2)
    stem = os.path.join(REPO, 'benchmarks', 'results', f'{name}_{env_id}')
    stem_steps = os.path.join(REPO, 'benchmarks', 'results', f'{name}_steps_{env_id}')
    try:
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900,
                                check=False)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        with open(stem + '.csv', encoding='utf-8') as file:
            rows = {row['variant']: row for row in csv.DictReader(file)}
        assert set(rows) == {'kl_bound_0.01', 'CPOCorrected'}
        assert json.loads(rows['kl_bound_0.01']['change']) == {'kl_bound': 0.01}
        for row in rows.values():
            assert float(row['test_cost_step1_mean']) >= 0.0
        # Inner-step diagnostics exist for Meta-CPO only.
        assert rows['CPOCorrected']['inner_kl_mean'] == 'nan'
        assert float(rows['kl_bound_0.01']['inner_kl_mean']) > 0.0
        assert os.path.getsize(stem + '.png') > 10_000
        config = os.path.join(root, env_id, 'CPOCorrected', 'seed-0')
        found = [os.path.join(d, 'config.json') for d, _, files in os.walk(config)
                 if 'config.json' in files]
        with open(found[0], encoding='utf-8') as file:
            cfgs = json.load(file)
        assert cfgs['model_cfgs']['actor']['hidden_sizes'] == [32, 16]
        assert cfgs['algo_cfgs']['cost_limit'] == 10.0
        # A second call reuses the finished runs.
        again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120,
                               check=False)
        assert again.returncode == 0 and again.stdout.count('done ') == 2
        # inner_steps.py repeats these meta-tests (it fails if they differ from meta_test.json)
        # and keeps one row per adaptation step.
        traced = subprocess.run(
            [sys.executable, os.path.join(REPO, 'benchmarks', 'inner_steps.py'), '--env-id',
             env_id, '--root', root, '--variants', 'kl_bound_0.01', 'CPOCorrected', '--seeds', '0',
             '--name', f'{name}_steps', '--test-tasks', '1', '--adapt-steps', '1',
             '--test-rollout-steps', '200'],
            cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
        assert traced.returncode == 0, traced.stdout[-2000:] + traced.stderr[-3000:]
        with open(f'{stem_steps}.csv', encoding='utf-8') as file:
            steps = list(csv.DictReader(file))
        assert [(row['variant'], row['step']) for row in steps] == \
            [('kl_bound_0.01', '0'), ('CPOCorrected', '0')]
        with open(f'{stem_steps}.md', encoding='utf-8') as file:
            assert '| kl_bound_0.01 |' in file.read()
    finally:
        for suffix in ('.csv', '.md', '.png'):
            for path in (stem + suffix, stem_steps + suffix):
                if os.path.exists(path):
                    os.remove(path)


@pytest.mark.slow  # about 2 minutes: two meta-iterations, interrupted after the first
def test_an_interrupted_meta_cpo_run_goes_on_from_its_checkpoint(run_dir: str) -> None:
    root = os.path.join(run_dir, 'runs')
    name = f'test_{os.path.basename(run_dir)}'
    env_id = 'MetaPointCircle-v0'
    command = _command(root, name, env_id, ['rollout_500'], workers=1)
    stem = os.path.join(REPO, 'benchmarks', 'results', f'{name}_{env_id}')
    log_dir = os.path.join(root, env_id, 'rollout_500', 'seed-0')
    try:
        first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 600
        while time.time() < deadline and first.poll() is None:
            found = [d for d, _, files in os.walk(log_dir) if 'last.pt' in files]
            if found:
                break
            time.sleep(1)
        assert found, 'no checkpoint after the first meta-iteration'
        os.killpg(first.pid, signal.SIGKILL)  # the benchmark and its training run
        first.wait()
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900,
                                check=False)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        assert 'resuming' in result.stdout
        progress = [os.path.join(d, 'progress.csv') for d, _, files in os.walk(log_dir)
                    if 'progress.csv' in files]
        assert len(progress) == 1  # the same run directory, not a new one
        with open(progress[0], encoding='utf-8') as file:
            epochs = [float(row['Train/Epoch']) for row in csv.DictReader(file)]
        assert epochs == [0.0, 1.0] or epochs == [1.0, 2.0], epochs  # none lost or repeated
        assert os.path.isfile(os.path.join(log_dir, 'meta_test.json'))
    finally:
        for suffix in ('.csv', '.md', '.png'):
            if os.path.exists(stem + suffix):
                os.remove(stem + suffix)
