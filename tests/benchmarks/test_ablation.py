"""``benchmarks/ablation.py`` end to end: a Meta-CPO variant and the CPOCorrected baseline."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow  # about 2 minutes: one epoch of each, then their meta-tests
def test_ablation_trains_meta_tests_and_tabulates(run_dir: str) -> None:
    root = os.path.join(run_dir, 'runs')
    name = f'test_{os.path.basename(run_dir)}'
    env_id = 'MetaPointCircle-v0'
    command = [sys.executable, os.path.join(REPO, 'benchmarks', 'ablation.py'), '--env-id',
               env_id, '--total-steps', '30000', '--seeds', '0', '--variants', 'kl_bound_0.01',
               'CPOCorrected', '--workers', '2', '--root', root, '--name', name,
               '--test-tasks', '1', '--adapt-steps', '1', '--test-rollout-steps', '200']
    stem = os.path.join(REPO, 'benchmarks', 'results', f'{name}_{env_id}')
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
    finally:
        for suffix in ('.csv', '.md', '.png'):
            if os.path.exists(stem + suffix):
                os.remove(stem + suffix)
