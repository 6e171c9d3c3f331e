"""Shared fixtures: small OmniSafe configs and a dot-free scratch directory for runs.

OmniSafe's CLI turns any value containing a '.' into a float, so run directories must be dot-free
(pytest's tmp_path may contain dots in the user name part; a fixed /tmp sub-directory does not).
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator

import omnisafe
import pytest

# Headless rendering (Agent.render, omnisafe eval): MuJoCo through EGL, read per viewer.
os.environ.setdefault('MUJOCO_GL', 'egl')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


@pytest.fixture
def run_dir() -> Iterator[str]:
    """A fresh dot-free directory for OmniSafe runs, removed afterwards."""
    path = os.path.join('/tmp', f'metacpo_test_{uuid.uuid4().hex}')
    os.makedirs(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def tiny_meta_cfgs(**algo: object) -> dict:
    """MetaCPO custom_cfgs small enough for a test: 2 tasks x (1 + 1) rollouts of 100 steps."""
    algo_cfgs = {'steps_per_epoch': 400, 'num_tasks': 2, 'inner_steps': 1, 'update_iters': 1,
                 'batch_size': 200}
    algo_cfgs.update(algo)
    return {
        'seed': 3,
        'train_cfgs': {'total_steps': 800, 'torch_threads': 1},
        'algo_cfgs': algo_cfgs,
        'meta_test_cfgs': {'freq': 1, 'num_tasks': 1, 'adapt_steps': 1, 'rollout_steps': 100},
        'logger_cfgs': {'use_tensorboard': False, 'save_model_freq': 1},
        'model_cfgs': {'actor': {'hidden_sizes': [8, 8]}, 'critic': {'hidden_sizes': [8, 8]}},
    }


@pytest.fixture(scope='session')
def cpo_run() -> Iterator[str]:
    """A tiny stock CPO run on SafetyPointCircle1-v0 with its saved policy."""
    log_dir = f'/tmp/metacpo_test_compat_{uuid.uuid4().hex}'
    agent = omnisafe.Agent('CPO', 'SafetyPointCircle1-v0', custom_cfgs={
        'train_cfgs': {'total_steps': 500, 'torch_threads': 1},
        'algo_cfgs': {'steps_per_epoch': 500, 'update_iters': 1},
        'logger_cfgs': {'log_dir': log_dir, 'use_tensorboard': False},
    })
    agent.learn()
    yield agent.agent.logger.log_dir
    shutil.rmtree(log_dir, ignore_errors=True)


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, or no process at all, is not)."""
    try:
        with open(f'/proc/{pid}/stat', encoding='utf-8') as file:
            return file.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False
