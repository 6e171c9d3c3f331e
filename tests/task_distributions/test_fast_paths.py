"""Fast resets and steps change nothing an agent sees; rendering works and looks as stock."""

from __future__ import annotations

import os
from typing import Any

import gymnasium
import numpy as np
import pytest
import safety_gymnasium
from gymnasium.envs.registration import EnvSpec
from safety_gymnasium.tasks import CircleLevel1

from task_distributions import TaskWrapper, env_entry, install_fast_world, make_env
from task_distributions.builder import TaskBuilder
from task_distributions.fast_reset import FastWorld
from task_distributions.tasks import ButtonNoGremlinsLevel1Reference, CircleHazardLevel1Reference

# Each Meta* env's task with safety-gymnasium's own step code (no FastStepMixin).
REFERENCE_TASKS = {
    'MetaPointCircle-v0': CircleLevel1,
    'MetaCarCircleHazard-v0': CircleHazardLevel1Reference,
    'MetaPointButton-v0': ButtonNoGremlinsLevel1Reference,
}
STEPS = 1000
EPISODE = 500  # 2 episodes: the comparison covers resets (each stock reset costs ~1.3 s)


def _reference_env(env_id: str, **kwargs: Any) -> gymnasium.Env:
    """The Meta* env built the stock way: stock World, stock step code, same wrappers."""
    entry = env_entry(env_id)
    spec = EnvSpec(
        id=env_id,
        entry_point=TaskBuilder,
        max_episode_steps=entry.max_episode_steps,
        kwargs={
            'task_id': env_id,
            'task_class': REFERENCE_TASKS[env_id],
            'config': {'agent_name': entry.agent},
        },
    )
    return safety_gymnasium.make(spec, autoreset=False, **kwargs)


def _trajectory(env: gymnasium.Env, steps: int, seed: int = 1) -> dict[str, Any]:
    """Observations, rewards, costs (with the info's cost terms) and ends of ``steps`` seeded
    steps, resets included."""
    rng = np.random.default_rng(seed)
    # Mostly forward, random turns: the agent reaches walls, hazards and buttons (nonzero costs).
    actions = np.stack([rng.uniform(0.3, 1.0, steps), rng.uniform(-1.0, 1.0, steps)], axis=1)
    # (seed 1: the Point meets hazards and buttons in each env, so costs are compared too)
    observations, rewards, costs, terms, ends = [env.reset(seed=seed)[0]], [], [], [], []
    for action in actions:
        obs, reward, cost, terminated, truncated, info = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        costs.append(cost)
        terms.append({key: value for key, value in info.items() if key.startswith('cost')})
        ends.append((terminated, truncated))
        if terminated or truncated:
            observations.append(env.reset()[0])
    return {
        'obs': np.array(observations),
        'reward': np.array(rewards),
        'cost': np.array(costs, dtype=float),
        'ends': np.array(ends),
        'cost_terms': terms,
    }


def _assert_identical(fast: dict[str, Any], stock: dict[str, Any]) -> None:
    for key in ('obs', 'reward', 'cost', 'ends'):
        assert fast[key].shape == stock[key].shape, key
        assert np.array_equal(fast[key], stock[key]), key  # bit for bit, not approximately
    assert fast['cost_terms'] == stock['cost_terms']
    assert stock['ends'][:, 1].sum() == STEPS // EPISODE


def test_fast_world_keeps_stock_observations() -> None:
    # A stock id with gremlins (mocaps, welds): only the world class differs.
    stock = safety_gymnasium.make('SafetyPointButton1-v0', max_episode_steps=EPISODE)
    fast = safety_gymnasium.make('SafetyPointButton1-v0', max_episode_steps=EPISODE)
    world = install_fast_world(fast)
    _assert_identical(_trajectory(fast, STEPS), _trajectory(stock, STEPS))
    assert world.skybox_removed
    assert fast.unwrapped.task.model.ntex == stock.unwrapped.task.model.ntex - 1


@pytest.mark.parametrize('env_id', list(REFERENCE_TASKS))
def test_meta_envs_match_their_stock_built_reference(env_id: str) -> None:
    fast = make_env(env_id, split='test', task_seed=3, max_episode_steps=EPISODE)
    assert isinstance(fast.unwrapped.task.world, FastWorld)
    reference = TaskWrapper(
        _reference_env(env_id, max_episode_steps=EPISODE),
        fast.distribution,
        split='test',
        task_seed=3,
    )
    fast_run, reference_run = _trajectory(fast, STEPS), _trajectory(reference, STEPS)
    _assert_identical(fast_run, reference_run)
    assert type(reference.unwrapped.task.world) is not FastWorld
    assert reference_run['cost'].sum() > 0  # the comparison covers costs that happen


def test_rgb_rendering_works_and_looks_as_stock(monkeypatch: pytest.MonkeyPatch) -> None:
    if 'MUJOCO_GL' not in os.environ:
        monkeypatch.setenv('MUJOCO_GL', 'egl')  # headless; gymnasium reads it per viewer
    kwargs = {'render_mode': 'rgb_array', 'width': 96, 'height': 64}
    fast = make_env('MetaPointCircle-v0', task_seed=1, **kwargs)
    stock = TaskWrapper(_reference_env('MetaPointCircle-v0', **kwargs), 'point_circle', task_seed=1)
    frames = []
    for env in (fast, stock):
        env.reset(seed=2)
        for _ in range(3):
            env.step(np.array([1.0, 0.5]))
        try:
            frames.append(env.render())
        except Exception as error:  # no OpenGL at all on this machine
            pytest.skip(f'no OpenGL rendering available: {error!r}')
    assert not fast.unwrapped.task.world.skybox_removed  # kept when images are wanted
    assert frames[0].shape == (64, 96, 3) and frames[0].dtype == np.uint8
    assert frames[0].std() > 0  # not a blank frame
    assert np.abs(frames[0].astype(int) - frames[1].astype(int)).max() <= 1


def _move_agent(base: Any, xy: np.ndarray) -> None:
    """Put the Point at ``xy`` (its slide joints move along the start-rotated body frame)."""
    quat = base.model.body('agent').quat
    theta = 2 * np.arctan2(quat[3], quat[0])
    dx, dy = xy - base.agent.pos[:2]
    base.data.qpos[0] += np.cos(theta) * dx + np.sin(theta) * dy
    base.data.qpos[1] += -np.sin(theta) * dx + np.cos(theta) * dy
    base.data.qvel[:] = 0


def test_fast_goal_check_agrees_with_stock() -> None:
    from safety_gymnasium.tasks import ButtonLevel0

    stock_goal_achieved = ButtonLevel0.goal_achieved.fget
    env = make_env('MetaPointButton-v0', task_seed=0)
    base = env.unwrapped.task
    reached = 0
    for episode in range(3):
        env.reset(seed=episode)
        for step in range(40):
            if step % 10 == 0:  # onto the goal button, or onto another one
                target = base.buttons.goal_button if step % 20 == 0 else 0
                _move_agent(base, base.buttons.pos[target][:2])
            *_, info = env.step(np.array([0.0, 0.5]))
            assert base.goal_achieved == stock_goal_achieved(base)
            reached += bool(info.get('goal_met'))
    assert reached > 0  # the True branch was compared too
