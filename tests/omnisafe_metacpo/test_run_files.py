"""How run directories are read (:mod:`omnisafe_metacpo.run_files`)."""

from __future__ import annotations

import json
import os
import time

import pytest

from omnisafe_metacpo import run_files


def _run(path: str, epochs: list[str]) -> str:
    os.makedirs(os.path.join(path, run_files.SAVES))
    with open(os.path.join(path, run_files.CONFIG), 'w', encoding='utf-8') as file:
        json.dump({'seed': 7}, file)
    for name in epochs:
        open(os.path.join(path, run_files.SAVES, name), 'wb').close()
    return path


def test_saved_epochs_are_the_numbered_policies_in_order(run_dir: str) -> None:
    run = _run(os.path.join(run_dir, 'run'), ['epoch-10.pt', 'epoch-2.pt', 'epoch-x.pt',
                                              'epoch-3.pt.tmp', 'other.pt'])
    assert run_files.saved_epochs(run) == [2, 10]
    assert run_files.saved_epochs(run_dir) == []  # no torch_save/ at all
    assert run_files.saved_policy_path(run, 2).endswith(os.path.join('torch_save', 'epoch-2.pt'))
    assert run_files.load_config(run) == {'seed': 7}
    assert not run_files.has_checkpoint(run)


def test_find_run_takes_the_newest_run_under_a_directory(run_dir: str) -> None:
    older = _run(os.path.join(run_dir, 'a', 'seed-000'), ['epoch-0.pt'])
    time.sleep(0.01)
    newer = _run(os.path.join(run_dir, 'b', 'seed-000'), ['epoch-0.pt'])
    os.utime(os.path.join(older, run_files.CONFIG), (1, 1))
    assert run_files.find_run(run_dir) == newer
    assert run_files.find_run(older) == older
    with pytest.raises(FileNotFoundError, match='no run'):
        run_files.find_run(os.path.join(run_dir, 'a', 'seed-000', 'torch_save'))
