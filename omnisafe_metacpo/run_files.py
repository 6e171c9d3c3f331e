"""Run directories: the one module that knows how an OmniSafe run is laid out on disk.

A run directory (``<log_dir>/<exp_name>/seed-XXX-<time>/``) holds ``config.json`` (the run's whole
config), ``progress.csv``, the policies OmniSafe saved (``torch_save/epoch-N.pt``: the actor and,
with observation normalisation, the normaliser) and, for MetaCPO-like runs, the resume
checkpoint (``checkpoints/last.pt``, outside ``torch_save/``: OmniSafe's ``Evaluator`` loads every
``.pt`` there as a policy).
"""

from __future__ import annotations

import json
import os
from typing import Any

CONFIG = 'config.json'
PROGRESS = 'progress.csv'
SAVES = 'torch_save'
CHECKPOINT = os.path.join('checkpoints', 'last.pt')


def load_config(run_dir: str) -> dict[str, Any]:
    """The run's ``config.json`` as a dict."""
    with open(os.path.join(run_dir, CONFIG), encoding='utf-8') as file:
        return json.load(file)


def progress_path(run_dir: str) -> str:
    """The run's ``progress.csv``."""
    return os.path.join(run_dir, PROGRESS)


def checkpoint_path(run_dir: str) -> str:
    """The run's resume checkpoint (``checkpoints/last.pt``)."""
    return os.path.join(run_dir, CHECKPOINT)


def has_checkpoint(run_dir: str) -> bool:
    """Whether the run can be resumed (it holds ``checkpoints/last.pt``)."""
    return os.path.isfile(checkpoint_path(run_dir))


def saved_policy_path(run_dir: str, epoch: int) -> str:
    """The policy OmniSafe saved after ``epoch`` epochs (``torch_save/epoch-N.pt``)."""
    return os.path.join(run_dir, SAVES, f'epoch-{epoch}.pt')


def saved_epochs(run_dir: str) -> list[int]:
    """The epochs N of the run's ``torch_save/epoch-N.pt``, ascending (none without the folder)."""
    save_dir = os.path.join(run_dir, SAVES)
    if not os.path.isdir(save_dir):
        return []
    return sorted(
        int(name[6:-3])
        for name in os.listdir(save_dir)
        if name.startswith('epoch-') and name.endswith('.pt') and name[6:-3].isdigit()
    )


def find_run(path: str) -> str:
    """The run directory at or under ``path`` (the newest one if there are several).

    Args:
        path: A run directory or a directory above runs.

    Raises:
        FileNotFoundError: If no run (a directory with config.json and torch_save/) is there.
    """
    runs = [
        dirpath for dirpath, dirnames, files in os.walk(path)
        if CONFIG in files and SAVES in dirnames
    ]
    if not runs:
        raise FileNotFoundError(f'no run ({CONFIG} and {SAVES}/) at or under {path}')
    return max(runs, key=lambda run: os.path.getmtime(os.path.join(run, CONFIG)))
