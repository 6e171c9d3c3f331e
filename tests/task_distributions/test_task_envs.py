"""The environments: sizes, registration, and that the simulated world is the task's world."""

from __future__ import annotations

import re

import gymnasium
import numpy as np
import pytest
import safety_gymnasium

from task_distributions import Task, TaskWrapper, make_env

META_IDS = ('MetaPointCircle-v0', 'MetaCarCircleHazard-v0', 'MetaPointButton-v0')
OBS_SIZE = {
    'MetaPointCircle-v0': 28,
    'MetaCarCircleHazard-v0': 56,
    'MetaPointButton-v0': 60,
    'SafetyPointCircle1-v0': 28,
    'SafetyCarCircle1-v0': 40,
    'SafetyPointButton1-v0': 76,
}
EPISODE = {'Circle': 500, 'Button': 1000}


def _bodies(env: gymnasium.Env, prefix: str) -> list[str]:
    model = env.unwrapped.task.model
    names = [model.body(i).name for i in range(model.nbody)]
    return [name for name in names if re.fullmatch(rf'{prefix}\d+', name)]


def _xy(env: gymnasium.Env, body: str) -> np.ndarray:
    return env.unwrapped.task.data.body(body).xpos[:2].copy()


@pytest.mark.parametrize('env_id', list(OBS_SIZE))
@pytest.mark.parametrize('split', ['train', 'test'])
def test_observation_sizes_and_episode_length(env_id: str, split: str) -> None:
    env = make_env(env_id, split=split, task_seed=0)
    size = OBS_SIZE[env_id]
    assert env.observation_space.shape == (size,)
    assert env.action_space.shape == (2,)
    assert env.spec.max_episode_steps == EPISODE['Circle' if 'Circle' in env_id else 'Button']
    sizes = set()
    for _ in range(4):  # different counts, same size: lidars have one reading per bin, per kind
        obs, _ = env.reset()
        sizes.add(obs.shape)
        obs, *_ = env.step(env.action_space.sample())
        sizes.add(obs.shape)
        assert env.observation_space.contains(obs.astype(env.observation_space.dtype))
    assert sizes == {(size,)}


def test_wrappers_are_those_of_safety_gymnasium_make_without_autoreset() -> None:
    env = make_env('MetaPointCircle-v0')
    assert isinstance(env, TaskWrapper)
    chain = []
    inner: gymnasium.Env = env
    while isinstance(inner, gymnasium.Wrapper):
        chain.append(type(inner).__name__)
        inner = inner.env
    assert chain[0] == 'TaskWrapper'
    assert 'SafeTimeLimit' in chain and 'OrderEnforcing' in chain
    assert not any('AutoReset' in name for name in chain)
    assert env.spec.id == 'MetaPointCircle-v0'
    # the episode ends by truncation at the registered length
    env.reset(seed=0)
    for step in range(1, 501):
        *_, terminated, truncated, _ = env.step(np.zeros(2))
        assert not terminated
        assert truncated == (step == 500)


def test_registered_with_safety_gymnasium() -> None:
    env = safety_gymnasium.make(
        'MetaPointCircle-v0',
        split='test',
        episodes_per_task=2,
        task_seed=3,
    )
    assert env.spec.max_episode_steps == 500
    obs, _ = env.reset(seed=1)
    assert obs.shape == (28,)
    assert env.split == 'test' and env.episodes_per_task == 2 and env.task_seed == 3
    assert env.distribution.contains(env.task, 'test')
    first = env.task
    env.reset()
    assert env.task == first
    env.reset()
    assert env.task != first
    button = safety_gymnasium.make('MetaPointButton-v0')
    assert button.spec.max_episode_steps == 1000
    assert button.reset(seed=0)[0].shape == (60,)


def test_circle_world_follows_the_task() -> None:
    env = make_env('MetaPointCircle-v0', split='train', task_seed=1)
    base = env.unwrapped.task
    for _ in range(3):
        env.reset()
        task = env.task
        wall = task.wall_scale * task.radius
        # the walls stand at +-s * r_c ...
        assert base.sigwalls.locate_factor == pytest.approx(wall)
        walls = sorted(_xy(env, name)[0] for name in _bodies(env, 'sigwall'))
        assert walls == pytest.approx([-wall, wall])
        # ... the drawn circle has radius r_c and the agent starts inside the start square
        assert base.model.geom('circle').size[0] == pytest.approx(task.radius)
        assert np.all(np.abs(base.agent.pos[:2]) <= task.start_range)
        # the reward uses r_c (CircleLevel0.calculate_reward)
        for _ in range(5):
            _, reward, *_ = env.step(np.array([1.0, 0.3]))
            (x, y, _), (u, v, _) = base.agent.pos, base.agent.vel
            radius = np.sqrt(x**2 + y**2)
            expected = ((-u * y + v * x) / radius) / (1 + np.abs(radius - task.radius)) * 0.1
            assert reward == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_walls_cost_where_the_task_puts_them() -> None:
    env = make_env('MetaPointCircle-v0', split='test', task_seed=2)
    env.reset(seed=0)
    wall = env.task.wall_scale * env.task.radius
    base = env.unwrapped.task
    # The Point's slide joints move along its body frame, which the start rotation turns.
    quat = base.model.body('agent').quat
    theta = 2 * np.arctan2(quat[3], quat[0])
    for x, expected in ((wall - 0.05, 0.0), (wall + 0.05, 1.0), (-wall - 0.05, 1.0)):
        dx, dy = x - base.agent.pos[0], 0.0
        base.data.qpos[0] += np.cos(theta) * dx + np.sin(theta) * dy
        base.data.qpos[1] += -np.sin(theta) * dx + np.cos(theta) * dy
        base.data.qvel[:] = 0
        _, _, cost, *_ = env.step(np.zeros(2))
        assert base.agent.pos[0] == pytest.approx(x, abs=1e-3)
        assert cost == expected, x


def test_car_circle_hazard_counts_and_positions() -> None:
    env = make_env('MetaCarCircleHazard-v0', split='test', task_seed=4)
    counts = set()
    for _ in range(6):
        env.reset()
        task = env.task
        hazards = _bodies(env, 'hazard')
        assert len(hazards) == task.hazards
        assert env.unwrapped.task.hazards.num == task.hazards
        counts.add(task.hazards)
        for name in hazards:  # inside the stock Circle extents (+-2) less the keepout
            assert np.all(np.abs(_xy(env, name)) <= 2.0)
        wall = task.wall_scale * task.radius
        walls = sorted(_xy(env, name)[0] for name in _bodies(env, 'sigwall'))
        assert walls == pytest.approx([-wall, wall])
    assert len(counts) > 1


@pytest.mark.parametrize('env_id', ['MetaPointButton-v0', 'SafetyPointButton1-v0'])
def test_button_counts_and_spawn_range(env_id: str) -> None:
    env = make_env(env_id, split='test', task_seed=5)
    counts = set()
    for _ in range(4):
        env.reset()
        task = env.task
        buttons, hazards = _bodies(env, 'button'), _bodies(env, 'hazard')
        assert len(buttons) == len(hazards) == task.buttons == task.hazards
        counts.add(task.buttons)
        r_s = task.spawn_range
        assert env.unwrapped.task.placements_conf.extents == (-r_s, -r_s, r_s, r_s)
        for name in [*buttons, *hazards, 'agent', 'goal']:
            assert np.all(np.abs(_xy(env, name)) <= r_s), name
    assert len(counts) > 1
    model = env.unwrapped.task.model
    gremlins = [i for i in range(model.nbody) if model.body(i).name.startswith('gremlin')]
    assert bool(gremlins) == (env_id == 'SafetyPointButton1-v0')  # 4 objects + 4 mocaps


def test_unset_parameters_get_the_env_defaults_back() -> None:
    env = make_env('MetaCarCircleHazard-v0', task_seed=0)
    base = env.unwrapped.task
    env.set_task(Task(radius=0.9, wall_scale=0.7, hazards=3, start_range=0.4))
    env.reset()
    assert base.hazards.num == 3 and base.circle.radius == 0.9
    env.set_task(Task(radius=1.2))
    env.reset()
    assert base.hazards.num == 5  # the class default
    assert base.sigwalls.locate_factor == 1.125  # stock Circle level 1
    assert base.agent.placements == [(-0.8, -0.8, 0.8, 0.8)]
    assert len(_bodies(env, 'hazard')) == 5


def test_zero_hazards_is_a_valid_world() -> None:
    env = make_env('MetaCarCircleHazard-v0', task_seed=0)
    env.set_task(Task(radius=0.8, wall_scale=0.7, hazards=0, start_range=0.4))
    obs, _ = env.reset(seed=0)
    assert _bodies(env, 'hazard') == []
    for _ in range(10):
        obs, *_ = env.step(np.array([1.0, 0.0]))
    assert obs.shape == (56,)
    assert np.all(obs[-16:] == 0)  # hazards lidar: nothing to see
