"""Meta-test every saved checkpoint of a run, with the results cached next to the run.

Each ``torch_save/epoch-N.pt`` is meta-tested by
:func:`omnisafe_metacpo.evaluation.saved_run.meta_test_saved_run` (the same unseen tasks,
rollouts and adaptation rule for every algorithm) and the results are written to
``<run>/meta_test/epoch-N.json`` together with the settings they were computed with. A cache file
is reused only when its settings equal the requested ones, so a rerun does not redo a meta-test,
and a change of settings (or of the adaptation rule's version) does.

A record also names the CPU model it was computed on: rollouts are bit-for-bit the same on one CPU
model, not across models (MuJoCo's and the BLAS kernels' floating-point results differ in the last
bits, and contacts amplify that over an episode), so a cache from another CPU is reused but cannot
be reproduced exactly here.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from omnisafe_metacpo.run_files import saved_epochs

#: Bump when the adaptation rule or what a meta-test reports changes (2: both cost scales and the
#: deterministic evaluation), which invalidates cached meta-tests.
RULE_VERSION = 'fresh-critics-2'

CACHE_DIR = 'meta_test'


def cache_path(run_dir: str, epoch: int) -> str:
    """Where the meta-test of ``epoch`` is cached."""
    return os.path.join(run_dir, CACHE_DIR, f'epoch-{epoch}.json')


def cache_key(settings: dict[str, Any]) -> dict[str, Any]:
    """What a cached result must have been computed with to be reused."""
    return {'rule': RULE_VERSION, **settings}


def cached(run_dir: str, epoch: int, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The cached record of ``epoch`` if it was computed with ``settings``, else ``None``."""
    path = cache_path(run_dir, epoch)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding='utf-8') as file:
            record = json.load(file)
    except (OSError, json.JSONDecodeError):  # a file cut short by a stop: compute again
        return None
    return record if record.get('settings') == cache_key(settings) else None


def cpu_model() -> str:
    """This machine's CPU model (``/proc/cpuinfo``), else ``'unknown CPU'``."""
    try:
        for line in Path('/proc/cpuinfo').read_text(encoding='utf-8').splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return 'unknown CPU'


def pending_epochs(run_dir: str, settings: dict[str, Any]) -> list[int]:
    """Saved epochs of the run without a valid cached meta-test."""
    return [epoch for epoch in saved_epochs(run_dir) if cached(run_dir, epoch, settings) is None]


def meta_test_checkpoint(run_dir: str, epoch: int, settings: dict[str, Any]) -> dict[str, Any]:
    """Meta-test one checkpoint and cache it (runs in a worker process of the pool).

    Args:
        run_dir: The finished run.
        epoch: N of ``torch_save/epoch-N.pt``.
        settings: ``meta_test_cfgs`` overrides (num_tasks, adapt_steps, rollout_steps,
            cost_limit).

    Returns:
        The cached record: settings, epoch, environment steps and the results.
    """
    # OmniSafe's grid worker (exp_grid_tools.train) leaves sys.stdout on a closed log file.
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    import torch

    from omnisafe_metacpo.evaluation.saved_run import meta_test_saved_run

    torch.set_num_threads(1)
    start = time.time()
    results = meta_test_saved_run(run_dir, epoch, overrides=dict(settings))
    with open(os.path.join(run_dir, 'config.json'), encoding='utf-8') as file:
        config = json.load(file)
    record = {
        'settings': cache_key(settings),
        'algo': config['algo'],
        'env_id': config['env_id'],
        'seed': int(config['seed']),
        'epoch': epoch,
        'env_steps': epoch * int(config['algo_cfgs']['steps_per_epoch']),
        'seconds': time.time() - start,
        'cpu': cpu_model(),
        'results': results,
    }
    path = cache_path(run_dir, epoch)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # Written to a temporary file and renamed: a stop mid-write never leaves a valid-looking cache.
    with open(path + '.tmp', 'w', encoding='utf-8') as file:
        json.dump(record, file, indent=2)
    os.replace(path + '.tmp', path)
    return record
