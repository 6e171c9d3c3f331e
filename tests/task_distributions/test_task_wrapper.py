"""TaskWrapper: resampling schedule, seeding, pinning tasks, and errors raised at construction."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest
import safety_gymnasium

from task_distributions import (
    Task,
    TaskDistribution,
    TaskDistributionError,
    TaskSampler,
    TaskWrapper,
    UnknownEnvIdError,
    get_distribution,
    make_env,
    supported_env_ids,
)


def _tasks_over_resets(env: TaskWrapper, resets: int) -> list[Task]:
    tasks = []
    for _ in range(resets):
        env.reset()
        tasks.append(env.task)
    return tasks


@pytest.mark.parametrize('episodes_per_task', [1, 2, 3])
def test_resamples_exactly_every_episodes_per_task(episodes_per_task: int) -> None:
    env = make_env('MetaPointCircle-v0', episodes_per_task=episodes_per_task, task_seed=11)
    assert env.task is None  # nothing drawn before the first reset
    tasks = _tasks_over_resets(env, 4 * episodes_per_task)
    expected_stream = list(itertools.islice(TaskSampler(env.distribution, 'train', 11), 4))
    expected = [task for task in expected_stream for _ in range(episodes_per_task)]
    assert tasks == expected
    assert len(set(tasks)) == 4


def test_episode_counting_includes_truncated_episodes() -> None:
    env = make_env('MetaPointCircle-v0', episodes_per_task=2, task_seed=0, max_episode_steps=5)
    env.reset(seed=0)
    first = env.task
    assert env.episodes_in_task == 1
    seen = [first]
    for _ in range(20):  # 4 episodes of 5 steps
        *_, terminated, truncated, _ = env.step(np.zeros(2))
        if terminated or truncated:
            env.reset()
            seen.append(env.task)
    assert seen[:4] == [first, first, seen[2], seen[2]]
    assert seen[2] != first


def test_same_seed_same_tasks_and_observations(
    rollout: Callable[..., list[np.ndarray]],
) -> None:
    def run(task_seed: int | None, reset_seed: int) -> tuple[list[Task], np.ndarray]:
        env = make_env('MetaPointButton-v0', task_seed=task_seed, max_episode_steps=60)
        tasks: list[Task] = []
        observations = rollout(env, 300, seed=reset_seed, on_reset=lambda: tasks.append(env.task))
        return tasks, np.array(observations)

    tasks_a, obs_a = run(7, 1)
    tasks_b, obs_b = run(7, 1)
    assert tasks_a == tasks_b and len(set(tasks_a)) > 1
    assert np.array_equal(obs_a, obs_b)
    tasks_c, _ = run(8, 1)
    assert tasks_c != tasks_a
    # without task_seed, reset(seed=...) seeds the task stream as task_seed would
    tasks_d, obs_d = run(None, 7)
    tasks_e, obs_e = run(7, 7)
    assert tasks_d == tasks_e and np.array_equal(obs_d, obs_e)


def test_set_task_pins_the_next_reset_and_restarts_the_count() -> None:
    env = make_env('MetaCarCircleHazard-v0', episodes_per_task=2, task_seed=3)
    env.reset()
    drawn = env.task
    pinned = Task(radius=0.75, wall_scale=0.7, hazards=4, start_range=0.4)
    env.set_task(pinned)
    assert env.task == drawn  # takes effect at the next reset
    env.reset()
    assert env.task == pinned and env.episodes_in_task == 1
    assert env.unwrapped.task.hazards.num == 4
    env.reset()
    assert env.task == pinned and env.episodes_in_task == 2
    env.reset()
    assert env.task != pinned  # episodes_per_task reached: back to the stream
    # hold=True keeps it until the next set_task
    env.set_task(pinned.as_dict(), hold=True)
    assert _tasks_over_resets(env, 5) == [pinned] * 5
    env.set_task(None)
    env.reset()
    assert env.task != pinned


def test_seed_tasks_restarts_the_stream() -> None:
    env = make_env('MetaPointButton-v0', episodes_per_task=3, task_seed=1)
    stream = list(itertools.islice(TaskSampler(env.distribution, 'train', 9), 2))
    env.reset()
    env.seed_tasks(9)
    env.reset()
    assert env.task == stream[0] and env.episodes_in_task == 1  # drawn at once, count restarted
    pinned = Task(buttons=3, hazards=3, spawn_range=1.8)
    env.seed_tasks(9)
    env.set_task(pinned)
    assert env.pending_task == pinned
    assert _tasks_over_resets(env, 4) == [pinned, pinned, pinned, stream[0]]
    with pytest.raises(TaskDistributionError, match='task_seed'):
        env.seed_tasks(-3)


def test_sample_task_uses_the_wrappers_stream() -> None:
    env = make_env('MetaPointCircle-v0', split='test', task_seed=5)
    stream = TaskSampler(get_distribution('point_circle'), 'test', 5)
    assert [env.sample_task() for _ in range(3)] == [stream.sample() for _ in range(3)]
    assert env.split == 'test' and env.distribution.name == 'point_circle'
    env.reset()
    assert env.task == stream.sample()  # resets continue the same stream


# ------------------------------------------------------------------------------ bad input
def test_unknown_env_id_split_and_distribution() -> None:
    with pytest.raises(UnknownEnvIdError) as info:
        make_env('SafetyPointCircle9-v0')
    assert all(env_id in str(info.value) for env_id in supported_env_ids())
    with pytest.raises(TaskDistributionError, match=r"no split 'valid'.*'train', 'test'"):
        make_env('MetaPointCircle-v0', split='valid')
    env = safety_gymnasium.make('SafetyPointCircle1-v0')
    with pytest.raises(TaskDistributionError, match=r"unknown task distribution 'circles'"):
        TaskWrapper(env, 'circles')
    with pytest.raises(TaskDistributionError, match='episodes_per_task'):
        make_env('MetaPointCircle-v0', episodes_per_task=0)
    with pytest.raises(TaskDistributionError, match='task_seed'):
        make_env('MetaPointCircle-v0', task_seed=-1)


def _distribution(train: dict, test: dict | None = None, **extra: object) -> TaskDistribution:
    return TaskDistribution.from_config('custom', {'train': train, 'test': test or train, **extra})


@pytest.mark.parametrize(
    ('env_id', 'train', 'message'),
    [
        # start square reaching the walls at s * r_c = 0.65
        (
            'SafetyPointCircle1-v0',
            {'radius': 1.0, 'wall_scale': 0.65, 'start_range': 0.7},
            r'start_range < 0.65',
        ),
        # no start_range: the stock +-0.8 start lies beyond walls at 0.65
        ('SafetyPointCircle1-v0', {'radius': 1.0, 'wall_scale': 0.65}, r'\+-0.8.*walls'),
        # a parameter the env cannot apply
        ('SafetyPointCircle1-v0', {'hazards': [1, 3]}, r"'hazards' needs hazards"),
        ('MetaPointButton-v0', {'radius': [1, 2]}, r"'radius' needs circle"),
        # too many objects for the spawn square
        (
            'MetaPointButton-v0',
            {'buttons': [10, 20], 'hazards': 10, 'spawn_range': [1.5, 3.0]},
            r'do not fit in spawn_range 1.5.*use spawn_range >=',
        ),
        # a spawn square smaller than one object's keepout
        ('MetaPointButton-v0', {'buttons': 1, 'spawn_range': 0.3}, r'smaller than the keepout'),
        ('MetaPointButton-v0', {'buttons': 2, 'spawn_range': 4.0}, r'beyond the floor'),
        ('MetaPointButton-v0', {'buttons': [0, 2]}, r'buttons min is 0, allowed >= 1'),
        # stock Button1 cannot observe zero hazards (the Meta envs can)
        ('SafetyPointButton1-v0', {'hazards': [0, 2]}, r'cannot observe zero hazards'),
    ],
)
def test_geometry_errors_at_construction(env_id: str, train: dict, message: str) -> None:
    env = make_env(env_id)  # a valid env, then the bad distribution on top of it
    with pytest.raises(TaskDistributionError, match=message):
        TaskWrapper(env.env, _distribution(train))


def test_set_task_rejects_what_the_env_cannot_build() -> None:
    env = make_env('MetaPointCircle-v0')
    with pytest.raises(TaskDistributionError, match=r"'buttons' needs buttons"):
        env.set_task(Task(buttons=3))
    with pytest.raises(TaskDistributionError, match='start_range'):
        env.set_task(Task(radius=1.0, wall_scale=0.3))
    with pytest.raises(TaskDistributionError, match='unknown task parameter'):
        env.set_task({'radius': 1.0, 'walls': 2})
    with pytest.raises(TaskDistributionError, match=r'radius.*> 0'):
        env.set_task({'radius': -1.0})


def test_all_configured_splits_fit_their_envs() -> None:
    # Every (env id, split) of the YAML builds and resets: no layout too crowded, no start cost.
    for env_id in supported_env_ids():
        for split in ('train', 'test'):
            env = make_env(env_id, split=split, task_seed=0)
            for _ in range(3):
                env.reset()
