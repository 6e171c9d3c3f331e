"""Environments stepped in a helper process (``task_distributions.lockstep``)."""

from __future__ import annotations

import numpy as np
import pytest

from task_distributions.lockstep import EnvGroup, EnvWorkerError, WorkerEnvGroup


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


