"""Fast resets and steps change nothing an agent sees; rendering works and looks as stock."""

from __future__ import annotations

import os
import types
from collections import OrderedDict
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


@pytest.mark.parametrize('split', ['train', 'test'])
@pytest.mark.parametrize('env_id', list(REFERENCE_TASKS))
def test_meta_envs_match_their_stock_built_reference(env_id: str, split: str) -> None:
    fast = make_env(env_id, split=split, task_seed=3, max_episode_steps=EPISODE)
    assert isinstance(fast.unwrapped.task.world, FastWorld)
    reference = TaskWrapper(
        _reference_env(env_id, max_episode_steps=EPISODE),
        fast.distribution,
        split=split,
        task_seed=3,
    )
    seed = 1 if split == 'test' else 3  # seeds whose runs meet every cost kind of the env
    fast_run, reference_run = _trajectory(fast, STEPS, seed), _trajectory(reference, STEPS, seed)
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


# ----------------------------------------------------------------------------------------------
# The step shortcuts of FastStepMixin, one by one, against the stock functions on the same state.

def _stock_obs(base: Any) -> np.ndarray:
    """The stock ``obs()`` of the task's class (``ButtonLevel0.obs`` or ``BaseTask.obs``), with the
    stock lidar (``EmptyKindsMixin`` -> ``BaseTask._obs_lidar_pseudo``) and gymnasium's check."""
    from safety_gymnasium.bases.base_task import BaseTask
    from safety_gymnasium.tasks import ButtonLevel0

    from task_distributions.fast_step import _stock_method
    from task_distributions.tasks import EmptyKindsMixin

    stock = _stock_method(type(base), 'obs')
    assert stock in (BaseTask.obs, ButtonLevel0.obs)
    lidar = types.MethodType(EmptyKindsMixin._obs_lidar_pseudo, base)
    base._obs_lidar_pseudo = lambda positions: (  # the stock lidar, reached through super()
        np.zeros(base.lidar_conf.num_bins) if len(positions) == 0
        else BaseTask._obs_lidar_pseudo(base, positions))
    spaces = base.obs_info.obs_space_dict
    base.obs_info.obs_space_dict = gymnasium.spaces.Dict(OrderedDict(
        (key, gymnasium.spaces.Box(box.low, box.high, box.shape, box.dtype))
        for key, box in spaces.spaces.items()))
    try:
        return stock(base)
    finally:
        del base._obs_lidar_pseudo
        base.obs_info.obs_space_dict = spaces
        del lidar


def _shadow_checks(base: Any, counts: dict[str, int]) -> None:
    """Compare every shortcut with its stock function on the current state (bit for bit)."""
    from safety_gymnasium.assets.geoms import Buttons, Goal, Hazards, Sigwalls
    from safety_gymnasium.bases.base_task import BaseTask
    from safety_gymnasium.tasks.safe_navigation.circle.circle_level0 import CircleLevel0

    index = base._index()
    for obstacle in base._obstacles:
        fast_pos = base._positions(obstacle, index)
        assert np.array_equal(np.array(fast_pos), np.array(obstacle.pos)), obstacle.name
        if obstacle.is_lidar_observed:
            fast = base._obs_lidar_pseudo(fast_pos)
            stock = (np.zeros(base.lidar_conf.num_bins) if len(obstacle.pos) == 0
                     else BaseTask._obs_lidar_pseudo(base, obstacle.pos))
            assert fast.dtype == stock.dtype and np.array_equal(fast, stock), obstacle.name
            counts['lidar'] += bool(stock.any())
        kind = type(obstacle)
        if kind in (Hazards, Buttons, Sigwalls):
            # Buttons cost only while their timer is 0, and a step that touches the goal resets
            # the timer after the cost is taken: also compare with the timer at 0 (so contacts
            # with the goal button, which cost nothing, are compared too).
            timer = getattr(obstacle, 'timer', None)
            for timer_now in (timer, 0) if kind is Buttons else (timer,):
                if kind is Buttons:
                    obstacle.timer = timer_now
                fast = getattr(base, f'_cost_{obstacle.name}')(obstacle, index)
                stock = kind.cal_cost(obstacle)  # the class's own function, not the bound one
                assert fast == stock and [type(v) for v in fast.values()] == [
                    type(v) for v in stock.values()], obstacle.name
                counts[obstacle.name] += any(bool(v) for v in stock.values())
            if kind is Buttons:
                obstacle.timer = timer
        if kind is Goal:
            assert base.dist_goal() == BaseTask.dist_goal(base)
    if isinstance(base, CircleLevel0):
        assert base.calculate_reward() == CircleLevel0.calculate_reward(base)
    # obs() runs mj_forward, which changes two of its own inputs in the last bits on the Car (it
    # renormalises the ball joint's quaternion in qpos and updates the solver's warm start): both
    # observations start from the same inputs.
    data = base.data
    inputs = data.qpos.copy(), data.qacc_warmstart.copy()
    fast_obs = base.obs()
    data.qpos[:], data.qacc_warmstart[:] = inputs
    stock_obs = _stock_obs(base)
    data.qpos[:], data.qacc_warmstart[:] = inputs
    assert fast_obs.dtype == stock_obs.dtype and np.array_equal(fast_obs, stock_obs)
    counts['steps'] += 1


@pytest.mark.parametrize('split', ['train', 'test'])
@pytest.mark.parametrize('env_id', ['MetaCarCircleHazard-v0', 'MetaPointButton-v0'])
def test_each_step_shortcut_matches_its_stock_function(env_id: str, split: str) -> None:
    env = make_env(env_id, split=split, task_seed=5, max_episode_steps=EPISODE // 2)
    base = env.unwrapped.task
    counts: dict[str, int] = {key: 0 for key in ('steps', 'lidar', 'hazards', 'buttons',
                                                  'sigwalls')}
    rng = np.random.default_rng(3)
    env.reset(seed=3)
    _shadow_checks(base, counts)
    for step in range(STEPS):
        if env_id == 'MetaPointButton-v0' and step % 25 == 0:
            # onto a button that is not the goal (costs), now and then onto the goal (resampled)
            goal = base.buttons.goal_button
            target = goal if step % 100 == 0 else (goal + 1) % base.buttons.num
            _move_agent(base, base.buttons.pos[target][:2])
        # a fifth of the actions out of the control range: the clipping into ``ctrl`` is compared
        action = np.array([rng.uniform(0.3, 1.0), rng.uniform(-1.0, 1.0)]) * (
            1.5 if step % 5 == 0 else 1.0)
        *_, terminated, truncated, _ = env.step(action)
        ctrl_range = base.model.actuator_ctrlrange
        assert np.array_equal(base.data.ctrl, np.clip(action, ctrl_range[:, 0], ctrl_range[:, 1]))
        _shadow_checks(base, counts)
        if terminated or truncated:
            env.reset()
            _shadow_checks(base, counts)
    assert counts['steps'] > STEPS + 1  # resets included
    assert counts['lidar'] > 0 and counts['hazards'] > 0  # nonzero values were compared
    if env_id == 'MetaPointButton-v0':
        assert counts['buttons'] > 0
    else:
        assert counts['sigwalls'] > 0


def test_comparisons_catch_a_one_ulp_difference(monkeypatch: pytest.MonkeyPatch) -> None:
    # The bit-for-bit checks above fail on the smallest possible change of one lidar value.
    from task_distributions import fast_step

    env = make_env('MetaPointButton-v0', split='test', task_seed=0)
    base = env.unwrapped.task
    env.reset(seed=0)
    _shadow_checks(base, {key: 0 for key in ('steps', 'lidar', 'hazards', 'buttons', 'sigwalls')})
    original = fast_step.FastStepMixin._obs_lidar_pseudo

    def nudged(self: Any, positions: Any) -> np.ndarray:
        obs = original(self, positions)
        obs[obs.argmax()] = np.nextafter(obs.max(), 2.0)
        return obs

    monkeypatch.setattr(fast_step.FastStepMixin, '_obs_lidar_pseudo', nudged)
    with pytest.raises(AssertionError):
        _shadow_checks(base, {key: 0 for key in ('steps', 'lidar', 'hazards', 'buttons',
                                                 'sigwalls')})
