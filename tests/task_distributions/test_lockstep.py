"""Environments stepped in a helper process (``task_distributions.lockstep``)."""

from __future__ import annotations

import numpy as np
import pytest

from task_distributions.lockstep import EnvGroup, EnvWorkerError, WorkerEnvGroup
from tests.conftest import process_alive


def test_worker_group_steps_as_a_local_group() -> None:
    from task_distributions import make_env

    task = make_env('MetaPointCircle-v0').sample_task()
    local, remote = EnvGroup('MetaPointCircle-v0', 'train', 2), WorkerEnvGroup(
        'MetaPointCircle-v0', 'train', 2)
    remote.reset([task, task], [1, 2])
    assert np.array_equal(local.reset([task, task], [1, 2]), remote.result())
    actions = np.random.default_rng(0).uniform(-1, 1, (600, 2, 2))
    ends = []
    for action in actions:  # past the 500-step time limit: an episode ends and resets
        remote.step(action)
        mine, theirs = local.step(action), remote.result()
        assert np.array_equal(mine.obs, theirs.obs) and np.array_equal(mine.costs, theirs.costs)
        assert [(i, t) for i, t, _ in mine.ended] == [(i, t) for i, t, _ in theirs.ended]
        ends += mine.ended
    assert [(index, terminated) for index, terminated, _ in ends] == [(0, False), (1, False)]
    local.close()
    remote.close()


def test_a_dead_environment_worker_is_reported() -> None:
    group = WorkerEnvGroup('MetaPointCircle-v0', 'train', 1)
    group._process.kill()
    group._process.join()
    with pytest.raises(EnvWorkerError, match=r'env-worker-MetaPointCircle-v0-train .* died'):
        group.step(np.zeros((1, 2)))
        group.result()
    group.close()




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
         'from task_distributions.lockstep import WorkerEnvGroup\n'
         "groups = [WorkerEnvGroup('MetaPointCircle-v0', 'train', 1) for _ in range(2)]\n"
         "print(' '.join(str(g._process.pid) for g in groups), flush=True)\n"
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

