"""Stock OmniSafe entry points on the plug-in's envs and algorithms."""

from __future__ import annotations

import csv
import glob
import os
import subprocess

import omnisafe
import pytest
from omnisafe.common.experiment_grid import ExperimentGrid

from tests.conftest import BIN

META_IDS = ['MetaPointCircle-v0', 'MetaCarCircleHazard-v0', 'MetaPointButton-v0']


def _omnisafe_train(run_dir: str, algo: str, env_id: str, *custom: str, steps: int = 1000) -> str:
    args = [os.path.join(BIN, 'omnisafe'), 'train', '--algo', algo, '--env-id', env_id,
            '--total-steps', str(steps), '--log-dir', run_dir]
    for token in ('algo_cfgs:steps_per_epoch', str(steps // 2), 'algo_cfgs:update_iters', '1',
                  'train_cfgs:torch_threads', '1', 'logger_cfgs:use_tensorboard', 'False',
                  *custom):
        args += ['--custom-cfgs', token]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=run_dir,
                            check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    # The CLI writes to <log-dir>/train/<algo>-{<env id>}/seed-XXX-<time>/.
    progress = glob.glob(os.path.join(run_dir, 'train', f'{algo}-{{{env_id}}}', 'seed-*',
                                      'progress.csv'))
    assert len(progress) == 1, os.listdir(run_dir)
    return os.path.dirname(progress[0])


def _rows(run: str) -> list[dict[str, str]]:
    with open(os.path.join(run, 'progress.csv'), encoding='utf-8') as file:
        return list(csv.DictReader(file))


@pytest.mark.parametrize('env_id', META_IDS)
def test_stock_cpo_cli_on_meta_env(run_dir: str, env_id: str) -> None:
    steps = 2000 if 'Button' in env_id else 1000
    run = _omnisafe_train(run_dir, 'CPO', env_id, steps=steps)
    rows = _rows(run)
    assert len(rows) == 2
    assert float(rows[-1]['TotalEnvSteps']) == steps
    assert os.path.isfile(os.path.join(run, 'config.json'))
    assert os.path.isfile(os.path.join(run, 'torch_save', 'epoch-0.pt'))


def test_stock_trpo_accepts_env_cfgs_for_meta_env(run_dir: str) -> None:
    run = _omnisafe_train(run_dir, 'TRPO', 'MetaPointCircle-v0',
                          'env_cfgs:split', 'test', 'env_cfgs:episodes_per_task', '2',
                          'env_cfgs:task_seed', '7')
    with open(os.path.join(run, 'config.json'), encoding='utf-8') as file:
        text = file.read()
    assert '"split": "test"' in text and '"task_seed": 7' in text


def test_unknown_custom_key_rejected() -> None:
    with pytest.raises(KeyError, match='Invalid key'):
        omnisafe.Agent('MetaCPO', 'MetaPointCircle-v0',
                       custom_cfgs={'algo_cfgs': {'num_taskz': 3}})


def test_env_without_distribution_lists_supported() -> None:
    with pytest.raises(ValueError, match='MetaPointCircle-v0'):
        omnisafe.Agent('MetaCPO', 'SafetyPointGoal1-v0', custom_cfgs={
            'train_cfgs': {'total_steps': 30000}})


@pytest.mark.parametrize(('field', 'value', 'allowed'), [
    ('dco_backend', 'qp', 'closed_form or cvxpylayers'),
    ('metric', 'kl', 'euclidean or fisher'),
    ('cost_advantage', 'returns', 'gae or measure'),
    ('inner_delta', 0.0, 'a finite number > 0'),
    ('inner_delta', float('inf'), 'a finite number > 0'),
    ('meta_delta', float('inf'), 'a finite number > 0'),
    ('meta_delta', float('nan'), 'a finite number > 0'),
    ('cost_limit', float('inf'), 'a finite number >= 0'),
    ('steps_per_epoch', 1001, 'multiple of'),
])
def test_bad_algo_values_name_field_and_allowed(field: str, value: object, allowed: str) -> None:
    from omnisafe_metacpo.config import MetaConfigError

    with pytest.raises(MetaConfigError, match=f'algo_cfgs.{field}.*{allowed}'):
        omnisafe.Agent('MetaCPO', 'MetaPointCircle-v0', custom_cfgs={
            'train_cfgs': {'total_steps': 60000}, 'algo_cfgs': {field: value}})


def test_experiment_grid_validates_plugin_variants(run_dir: str) -> None:
    grid = ExperimentGrid(exp_name='grid_check')
    grid.add('algo', ['MetaCPO', 'MetaTRPO', 'CPO'])
    grid.add('env_id', ['MetaPointCircle-v0'])
    grid.add('algo_cfgs:steps_per_epoch', [1000])
    for variant in grid.variants():
        grid.check_variant_vaild(variant)
    with pytest.raises(KeyError, match='Invalid key'):
        grid.check_variant_vaild({'algo': 'MetaCPO', 'env_id': 'MetaPointCircle-v0',
                                  'algo_cfgs': {'no_such_key': 1}})


def test_omnisafe_benchmark_runs_plugin_and_stock_algorithms(run_dir: str) -> None:
    grid = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
                        'benchmarks', 'grids', 'smoke.yaml')
    result = subprocess.run([os.path.join(BIN, 'omnisafe'), 'benchmark', 'smoke', '2', grid,
                             '--log-dir', run_dir], capture_output=True, text=True, timeout=900,
                            cwd=run_dir, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    progress = glob.glob(os.path.join(run_dir, 'benchmark', '**', 'progress.csv'), recursive=True)
    algos = sorted(os.path.basename(p.split(os.sep + 'seed-')[0]).split('-')[0] for p in progress)
    assert algos == ['CPO', 'MetaCPO'], progress
