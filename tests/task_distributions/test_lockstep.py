"""Environments stepped in a helper process (``task_distributions.lockstep``)."""

from __future__ import annotations

import numpy as np
import pytest

from task_distributions.lockstep import EnvGroup, EnvWorkerError, Lockstep
from tests.conftest import process_alive


def _random_actions(count: int, dtype: type) -> np.ndarray:
    # 600 locksteps: past the 500-step time limit, so every episode ends (and resets) once
    return np.random.default_rng(0).uniform(-1, 1, (600, count, 2)).astype(dtype)


@pytest.mark.parametrize(('workers', 'dtype'), [(1, np.float32), (2, np.float64)])
def test_a_lockstep_with_helpers_steps_as_one_local_group(workers: int, dtype: type) -> None:
    """Helpers' rows through shared memory: the same bits, dtypes and ended episodes."""
    from task_distributions import make_env

    sampler = make_env('MetaPointCircle-v0')
    tasks, seeds = [sampler.sample_task() for _ in range(5)], [1, 2, 3, 4, 5]
    local, envs = EnvGroup('MetaPointCircle-v0', 'train', 5), Lockstep(
        'MetaPointCircle-v0', 'train', 5, workers)
    # this process takes the largest share, last
    assert [len(group) for group in envs.groups] == {1: [2, 3], 2: [2, 1, 2]}[workers]
    assert np.array_equal(local.reset(tasks, seeds), envs.reset(tasks, seeds))
    ends = []
    for action in _random_actions(5, dtype):
        mine, theirs = local.step(action), envs.step(action)
        for name in ('obs', 'rewards', 'costs'):
            assert getattr(theirs, name).dtype == getattr(mine, name).dtype, name
            assert np.array_equal(getattr(mine, name), getattr(theirs, name)), name
        assert [(i, t) for i, t, _ in mine.ended] == [(i, t) for i, t, _ in theirs.ended]
        for (_, _, final), (_, _, other) in zip(mine.ended, theirs.ended, strict=True):
            assert final.dtype == other.dtype and np.array_equal(final, other)
        ends += mine.ended
    assert sorted(index for index, _, _ in ends) == [0, 1, 2, 3, 4]  # helpers' rows included
    with pytest.raises(ValueError, match='shape'):
        envs.step(np.zeros((4, 2)))
    local.close()
    envs.close()


def test_a_dead_environment_worker_is_reported() -> None:
    envs = Lockstep('MetaPointCircle-v0', 'train', 2, 1)
    envs.workers[0]._process.kill()
    envs.workers[0]._process.join()
    with pytest.raises(EnvWorkerError, match=r'env-worker-MetaPointCircle-v0-train .* died'):
        envs.step(np.zeros((2, 2)))
    envs.close()


def test_an_error_in_a_helper_comes_back_with_its_traceback(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A step that raises in the helper (patched before the fork, so the helper runs it)."""
    import os

    from task_distributions import make_env

    trainer = os.getpid()
    step = EnvGroup.step

    def failing_step(self: EnvGroup, actions: np.ndarray, out: object = None) -> object:
        if os.getpid() != trainer:
            raise FloatingPointError('the helper failed here')
        return step(self, actions, out)

    monkeypatch.setattr(EnvGroup, 'step', failing_step)
    envs = Lockstep('MetaPointCircle-v0', 'train', 2, 1)
    task = make_env('MetaPointCircle-v0').sample_task()
    envs.reset([task, task], [1, 2])
    with pytest.raises(EnvWorkerError, match=r'(?s)failed:.*Traceback.*the helper failed here'):
        envs.step(np.zeros((2, 2), dtype=np.float32))
    envs.close()


def test_a_failed_reset_in_a_helper_is_reported() -> None:
    from task_distributions import make_env

    envs = Lockstep('MetaPointCircle-v0', 'train', 2, 1)
    task = make_env('MetaPointCircle-v0').sample_task()
    with pytest.raises(EnvWorkerError, match=r'(?s)failed:.*Traceback'):
        envs.reset(['not a task', task], [1, 2])  # row 0 is the helper's
    envs.close()


def test_helpers_exit_when_their_training_process_is_killed() -> None:
    """SIGKILL of the process that owns the helpers: they see the pipe close and exit.

    (Each helper used to keep its owner's end of the pipe open through the fork, so it waited
    for ever: the sleeping ``omnisafe train`` processes left behind by SIGKILL-resume tests.)
    """
    import os
    import signal
    import subprocess
    import sys
    import time

    owner = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, '-c',
         'import os, sys, time\n'
         'from task_distributions.lockstep import Lockstep\n'
         "envs = Lockstep('MetaPointCircle-v0', 'train', 3, 2)\n"
         "print(' '.join(str(g._process.pid) for g in envs.workers), flush=True)\n"
         'time.sleep(600)\n'],
        stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(
            os.path.dirname(os.path.abspath(__file__)))))
    helpers = [int(pid) for pid in owner.stdout.readline().split()]
    assert len(helpers) == 2
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    deadline = time.time() + 20
    alive = helpers
    while alive and time.time() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in helpers if process_alive(pid)]
    for pid in alive:  # do not leave them behind if the test fails
        os.kill(pid, signal.SIGKILL)
    assert not alive, f'helpers {alive} outlived their training process'

