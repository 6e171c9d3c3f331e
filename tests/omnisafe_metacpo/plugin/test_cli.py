"""The stock ``omnisafe train`` CLI: its defaults, dotted paths and a quiet start-up."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time

import pytest
import yaml
from omnisafe.utils.config import Config

from omnisafe_metacpo.plugin import _original, compat
from tests.conftest import BIN, REPO

# A MetaCPO run small enough for a test: 2 tasks x (1 + 1) rollouts of 100 steps per iteration.
_TINY = ['algo_cfgs:steps_per_epoch', '400', 'algo_cfgs:num_tasks', '2',
         'algo_cfgs:inner_steps', '1', 'algo_cfgs:update_iters', '1',
         'meta_test_cfgs:freq', '0', 'logger_cfgs:use_tensorboard', 'False']


def _train_args(run_dir: str, algo: str, *options: str, custom: tuple[str, ...] = ()) -> list[str]:
    args = [os.path.join(BIN, 'omnisafe'), 'train', '--algo', algo, '--env-id',
            'SafetyPointCircle1-v0', '--log-dir', run_dir, *options]
    for token in custom:
        args += ['--custom-cfgs', token]
    return args


def _config(run_dir: str) -> dict | None:
    found = glob.glob(os.path.join(run_dir, 'train', '*', 'seed-*', 'config.json'))
    if not found:
        return None
    try:
        with open(found[0], encoding='utf-8') as file:
            return json.load(file)
    except json.JSONDecodeError:  # still being written
        return None


def _config_then_stop(args: list[str], run_dir: str) -> dict:
    """Start ``omnisafe train``, read its config.json as soon as it is written, stop the run."""
    process = subprocess.Popen(args, cwd=run_dir, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            config = _config(run_dir)
            if config is not None:
                return config
            if process.poll() is not None:
                pytest.fail(f'omnisafe train exited early: {process.stderr.read()[-3000:]}')
            time.sleep(0.2)
        pytest.fail('no config.json within 300 s')
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stderr.close()


def _yaml_train_cfgs() -> dict:
    with open(os.path.join(REPO, 'configs', 'MetaCPO.yaml'), encoding='utf-8') as file:
        return yaml.safe_load(file)['defaults']['train_cfgs']


def test_untyped_cli_defaults_yield_to_the_yaml(run_dir: str) -> None:
    # No --total-steps / --torch-threads: stock would record the CLI's 10,000,000 and 16.
    config = _config_then_stop(_train_args(run_dir, 'MetaCPO', custom=tuple(_TINY)), run_dir)
    yaml_cfgs = _yaml_train_cfgs()
    assert config['train_cfgs']['total_steps'] == yaml_cfgs['total_steps'] != 10_000_000
    assert config['train_cfgs']['torch_threads'] == min(yaml_cfgs['torch_threads'],
                                                        compat.usable_cores())


def test_untyped_cli_defaults_yield_to_custom_cfgs(run_dir: str) -> None:
    custom = (*_TINY, 'train_cfgs:total_steps', '1200', 'train_cfgs:torch_threads', '1')
    config = _config_then_stop(_train_args(run_dir, 'MetaCPO', custom=custom), run_dir)
    assert config['train_cfgs']['total_steps'] == 1200
    assert config['train_cfgs']['epochs'] == 3
    assert config['train_cfgs']['torch_threads'] == 1


def test_typed_values_win_and_threads_are_capped_to_cores(run_dir: str) -> None:
    custom = (*_TINY, 'train_cfgs:total_steps', '1200')
    args = _train_args(run_dir, 'MetaCPO', '--total-steps=800', '--torch-threads', '64',
                       custom=custom)
    result = subprocess.run(args, cwd=run_dir, capture_output=True, text=True, timeout=600,
                            check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    config = _config(run_dir)
    cores = compat.usable_cores()
    assert config['train_cfgs']['total_steps'] == 800  # typed beats --custom-cfgs
    assert config['train_cfgs']['torch_threads'] == min(64, cores)
    assert f'INFO: {min(64, cores)} torch threads' in result.stdout


def test_stock_parser_crashes_on_dotted_paths_and_the_fix_keeps_numbers() -> None:
    # What OmniSafe's CLI does with --log-dir /tmp/tmp.abc123 (it appends /train):
    with pytest.raises(ValueError, match='could not convert string to float'):
        _original.custom_cfgs_to_dict('logger_cfgs:log_dir', '/tmp/tmp.abc123/train')
    from omnisafe.utils.tools import custom_cfgs_to_dict

    assert custom_cfgs_to_dict('logger_cfgs:log_dir', '/tmp/tmp.abc123/train') == {
        'logger_cfgs': {'log_dir': '/tmp/tmp.abc123/train'}}
    assert custom_cfgs_to_dict('train-cfgs:resume', 'a.b') == {'train_cfgs': {'resume': 'a.b'}}
    # Everything else is parsed exactly as before.
    for key, value in [('algo_cfgs:cost_limit', '2.5'), ('algo_cfgs:num_tasks', '3'),
                       ('logger_cfgs:use_wandb', 'False'), ('algo_cfgs:metric', 'fisher'),
                       ('model_cfgs:actor:hidden_sizes', '[8,8]')]:
        assert custom_cfgs_to_dict(key, value) == _original.custom_cfgs_to_dict(key, value)


def test_stock_cpo_trains_with_a_dotted_log_dir(run_dir: str) -> None:
    log_dir = os.path.join(run_dir, 'tmp.abc123')
    os.makedirs(log_dir)
    args = _train_args(log_dir, 'CPO', '--total-steps', '1000', '--torch-threads', '1',
                       custom=('algo_cfgs:steps_per_epoch', '500', 'algo_cfgs:update_iters', '1',
                               'logger_cfgs:use_tensorboard', 'False'))
    result = subprocess.run(args, cwd=log_dir, capture_output=True, text=True, timeout=600,
                            check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (progress,) = glob.glob(os.path.join(log_dir, 'train', 'CPO-*', 'seed-*', 'progress.csv'))
    with open(progress, encoding='utf-8') as file:
        assert len(file.readlines()) == 3  # header and two epochs
    config = Config.dict2config(_config(log_dir))
    assert config.logger_cfgs.log_dir == os.path.join(log_dir, 'train')


def _python(code: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_start_up_prints_no_adroit_notice_but_other_warnings() -> None:
    result = _python('import warnings\nimport omnisafe\nwarnings.warn("another warning")')
    assert 'Adroit' not in result.stdout + result.stderr
    assert 'UserWarning: another warning' in result.stderr


def test_only_the_adroit_notice_is_dropped() -> None:
    # Any other notice gymnasium-robotics finds for its version is still printed.
    result = _python(
        'import importlib.metadata, farama_notifications as farama\n'
        'version = importlib.metadata.version("gymnasium-robotics")\n'
        'farama.notifications.setdefault("gymnasium_robotics", {})[version] = "another notice"\n'
        'import gymnasium_robotics\n',
    )
    assert 'another notice' in result.stderr
    assert 'Adroit' not in result.stderr
