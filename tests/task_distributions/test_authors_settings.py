"""The authors' task settings (configs/task_distributions_authors.yaml) and their parameters.

Everything runs the real safety-gymnasium worlds: the hazard size, keepout and placement square are
checked in the compiled MuJoCo model and in the costs, not only in the task objects.
"""

from __future__ import annotations

import re
import textwrap
import tomllib
from pathlib import Path

import gymnasium
import mujoco
import numpy as np
import pytest

from task_distributions import (
    Task,
    TaskDistribution,
    TaskDistributionError,
    TaskWrapper,
    distribution_for_env,
    load_config,
    make_env,
)
from task_distributions.config import (
    AUTHORS_CONFIG_NAME,
    CONFIG_NAME,
    default_config_dir,
    default_config_paths,
)

ROOT = Path(__file__).resolve().parents[2]
AUTHORS_IDS = {
    'MetaPointCircleAuthors-v0': 'point_circle_authors',
    'MetaCarCircleHazardAuthors-v0': 'car_circle_hazard_authors',
    'MetaPointButtonAuthors-v0': 'point_button_authors',
}
OBS_SIZE = {
    'MetaPointCircleAuthors-v0': 28,
    'MetaCarCircleHazardAuthors-v0': 56,
    'MetaPointButtonAuthors-v0': 60,
}

# The authors' code (github.com/Mgineer117/Meta-CPO, commit cb15cfa), safety_gymnasium/tasks/
# safe_navigation/: circle/stochastic_circle_level1.py (Point), circle/car_circle/
# stochastic_circle_level1.py (Car), button/stochastic_button_level1.py. (low, high) per parameter.
AUTHORS_TRAIN = {
    'point_circle_authors': {
        'radius': (1.0, 1.5), 'wall_scale': (0.55, 0.75), 'start_range': (0.2, 0.2),
    },
    'car_circle_hazard_authors': {
        'radius': (1.0, 1.5), 'wall_scale': (0.55, 0.75), 'hazards': (4, 6),
        'start_range': (0.2, 0.2), 'hazard_size': (0.12, 0.12), 'hazard_keepout': (0.4, 0.4),
        'hazard_range': (1.4, 1.4),
    },
    'point_button_authors': {
        'buttons': (3, 6), 'hazards': (6, 9), 'spawn_range': (1.75, 2.0),
        'hazard_keepout': (0.2, 0.2),
    },
}
# Their meta-test task: the ``*_level2.py`` files draw it with a fixed ``random.seed``.
AUTHORS_TEST = {
    'point_circle_authors': Task(radius=2.31, wall_scale=0.61, start_range=0.2),
    'car_circle_hazard_authors': Task(
        radius=1.81, wall_scale=0.61, hazards=11, start_range=0.2, hazard_size=0.12,
        hazard_keepout=0.4, hazard_range=1.8,
    ),
    'point_button_authors': Task(buttons=8, hazards=14, spawn_range=2.74, hazard_keepout=0.2),
}


def _bodies(env: gymnasium.Env, prefix: str) -> list[str]:
    model = env.unwrapped.task.model
    names = [model.body(i).name for i in range(model.nbody)]
    return [name for name in names if re.fullmatch(rf'{prefix}\d+', name)]


def _xy(env: gymnasium.Env, body: str) -> np.ndarray:
    return env.unwrapped.task.data.body(body).xpos[:2].copy()


# ---------------------------------------------------------------------------- the file
def test_the_authors_file_is_read_after_table_1_and_only_adds() -> None:
    paths = default_config_paths()
    assert [path.name for path in paths[:2]] == [CONFIG_NAME, AUTHORS_CONFIG_NAME]
    table_1 = load_config(paths[0])
    merged = load_config()
    # Table 1 stays the default: every entry of the first file is unchanged by the second.
    for name, distribution in table_1.distributions.items():
        assert merged.distributions[name] == distribution
    for env_id, entry in table_1.envs.items():
        assert merged.envs[env_id] == entry
    assert distribution_for_env('MetaCarCircleHazard-v0').name == 'car_circle_hazard'
    for env_id, name in AUTHORS_IDS.items():
        assert distribution_for_env(env_id).name == name


def test_the_authors_file_ships_in_the_wheel() -> None:
    # default_config_dir() reads configs/ in a checkout and omnisafe_metacpo/_configs in a wheel;
    # pyproject.toml copies the whole configs/ directory there, new files included.
    assert default_config_dir() == ROOT / 'configs'
    assert (ROOT / 'configs' / AUTHORS_CONFIG_NAME).is_file()
    with open(ROOT / 'pyproject.toml', 'rb') as file:
        pyproject = tomllib.load(file)
    force_include = pyproject['tool']['hatch']['build']['targets']['wheel']['force-include']
    assert force_include['configs'] == 'omnisafe_metacpo/_configs'


# ---------------------------------------------------------------------------- distributions
@pytest.mark.parametrize('name', list(AUTHORS_TRAIN))
def test_the_authors_ranges(name: str) -> None:
    distribution = load_config().distribution(name)
    assert distribution.worst_case('train') == AUTHORS_TRAIN[name]
    assert not distribution.is_fixed('train')
    # fixed-test-task mode: the test split is one task
    assert distribution.is_fixed('test')
    for seed in range(4):
        sampler = distribution.sampler('test', seed=seed)
        assert [sampler.sample() for _ in range(3)] == [AUTHORS_TEST[name]] * 3


@pytest.mark.parametrize('name', list(AUTHORS_TRAIN))
def test_sampled_training_tasks_stay_in_the_authors_ranges(name: str) -> None:
    distribution = load_config().distribution(name)
    sampler = distribution.sampler('train', seed=0)
    tasks = [sampler.sample() for _ in range(300)]
    for task in tasks:
        values = task.as_dict()
        assert set(values) == set(AUTHORS_TRAIN[name])
        for parameter, (low, high) in AUTHORS_TRAIN[name].items():
            assert low <= values[parameter] <= high, (parameter, task)
        assert distribution.contains(task, 'train')
        if 'hazard_size' in values:
            assert values['hazard_size'] == 0.12
        if name == 'point_button_authors':
            assert task.hazards == task.buttons + 3  # offset: {hazards: [buttons, 3]}
    for parameter in ('radius', 'hazards', 'buttons'):
        if parameter in AUTHORS_TRAIN[name]:
            low, high = AUTHORS_TRAIN[name][parameter]
            drawn = [getattr(task, parameter) for task in tasks]
            assert min(drawn) == pytest.approx(low, abs=0.01)
            assert max(drawn) == pytest.approx(high, abs=0.01)


# ---------------------------------------------------------------------------- the worlds
@pytest.mark.parametrize('env_id', list(AUTHORS_IDS))
@pytest.mark.parametrize('split', ['train', 'test'])
def test_the_authors_envs_build_reset_and_step(env_id: str, split: str) -> None:
    env = make_env(env_id, split=split, task_seed=0)
    assert env.observation_space.shape == (OBS_SIZE[env_id],)
    assert env.spec.max_episode_steps == 500  # Button too: the authors cut episodes at 500
    for _ in range(3):
        obs, _ = env.reset()
        assert obs.shape == (OBS_SIZE[env_id],)
        for _ in range(3):
            obs, reward, cost, terminated, truncated, _ = env.step(env.action_space.sample())
            assert np.isfinite(reward) and cost in (0.0, 1.0)
            assert not (terminated or truncated)
        if split == 'test':
            assert env.task == AUTHORS_TEST[AUTHORS_IDS[env_id]]


def test_button_episodes_end_at_500_steps() -> None:
    env = make_env('MetaPointButtonAuthors-v0', task_seed=0)
    env.reset(seed=0)
    for step in range(1, 501):
        *_, terminated, truncated, _ = env.step(np.zeros(2))
        assert not terminated
        assert truncated == (step == 500)


@pytest.mark.parametrize('split', ['train', 'test'])
def test_car_world_has_the_authors_hazards_walls_and_start(split: str) -> None:
    env = make_env('MetaCarCircleHazardAuthors-v0', split=split, task_seed=1)
    base = env.unwrapped.task
    counts = set()
    for _ in range(8):
        env.reset()
        task = env.task
        hazards = _bodies(env, 'hazard')
        assert len(hazards) == task.hazards
        counts.add(task.hazards)
        model = base.model
        for name in hazards:
            # the compiled geometry: a disc of radius 0.12 (stock 0.2) ...
            geom = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, name)
            assert model.geom_size[geom][0] == pytest.approx(0.12)
            # ... whose centre the sampler keeps keepout (0.4) inside the hazards' square
            assert np.all(np.abs(_xy(env, name)) <= task.hazard_range - 0.4 + 1e-9)
        assert base.placements_conf.placements['hazard0'] == (
            [(-task.hazard_range, -task.hazard_range, task.hazard_range, task.hazard_range)],
            0.4,
        )
        wall = task.wall_scale * task.radius
        walls = sorted(_xy(env, name)[0] for name in _bodies(env, 'sigwall'))
        assert walls == pytest.approx([-wall, wall])
        assert model.geom('circle').size[0] == pytest.approx(task.radius)
        assert np.all(np.abs(base.agent.pos[:2]) <= 0.2 + 1e-9)
    if split == 'train':
        assert counts <= {4, 5, 6} and len(counts) > 1
    else:
        assert counts == {11}
        assert env.task.radius == 1.81
        assert env.task.wall_scale * env.task.radius == pytest.approx(1.104, abs=2e-4)


@pytest.mark.parametrize('split', ['train', 'test'])
def test_button_world_has_n_b_plus_offset_hazards(split: str) -> None:
    env = make_env('MetaPointButtonAuthors-v0', split=split, task_seed=2)
    for _ in range(4):
        env.reset()
        buttons, hazards = _bodies(env, 'button'), _bodies(env, 'hazard')
        assert len(buttons) == env.task.buttons
        assert len(hazards) == env.task.buttons + (3 if split == 'train' else 6)
        assert env.unwrapped.task.hazards.keepout == 0.2
        for name in [*buttons, *hazards, 'agent']:
            assert np.all(np.abs(_xy(env, name)) <= env.task.spawn_range), name
    if split == 'test':
        assert (len(buttons), len(hazards)) == (8, 14)


def test_point_circle_world_has_the_authors_fixed_test_task() -> None:
    env = make_env('MetaPointCircleAuthors-v0', split='test', task_seed=0)
    for _ in range(2):
        env.reset()
        walls = sorted(_xy(env, name)[0] for name in _bodies(env, 'sigwall'))
        assert walls == pytest.approx([-1.409, 1.409], abs=2e-4)
        assert env.unwrapped.task.model.geom('circle').size[0] == pytest.approx(2.31)


def _hazard_cost_at(env: TaskWrapper, distance: float) -> tuple[float, float, float]:
    """Move hazard0 to ``distance`` from the agent; return (fast cost, stock cost, step cost)."""
    base = env.unwrapped.task
    model, data = base.model, base.data
    body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, 'hazard0')
    agent = base.agent.pos
    # a hazard is a static body: its position in the compiled model is where it is
    model.body_pos[body][:2] = agent[:2] + np.array([distance, 0.0])
    mujoco.mj_forward(model, data)
    assert np.linalg.norm(data.xpos[body][:2] - agent[:2]) == pytest.approx(distance)
    fast = base.calculate_cost()['cost_hazards']  # FastStepMixin's copy of Hazards.cal_cost
    stock = base.hazards.cal_cost()['cost_hazards']
    _, _, cost, *_ = env.step(np.zeros(2))
    return fast, stock, cost


@pytest.mark.parametrize('env_id', ['MetaCarCircleHazard-v0', 'MetaCarCircleHazardAuthors-v0'])
def test_hazard_size_changes_the_worlds_geometry_and_cost(env_id: str) -> None:
    env = make_env(env_id, task_seed=0)
    base = env.unwrapped.task
    task = Task(radius=1.2, wall_scale=0.7, hazards=3, start_range=0.2, hazard_keepout=0.4,
                hazard_range=1.4)
    for size, inside in ((0.2, True), (0.12, False), (0.2, True)):
        env.set_task(Task(**task.as_dict(), hazard_size=size))
        env.reset(seed=0)
        model = base.model
        geom = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, 'hazard0')
        assert model.geom_size[geom][0] == pytest.approx(size)
        # 0.15 from a hazard's centre: inside a stock hazard (0.2), outside the authors' (0.12)
        fast, stock, cost = _hazard_cost_at(env, 0.15)
        assert fast == stock
        assert (fast > 0) == inside and cost == (1.0 if inside else 0.0)
    # a task without hazard parameters gets the env's own back
    env.set_task(Task(radius=1.2, wall_scale=0.7, hazards=3, start_range=0.2))
    env.reset(seed=0)
    assert (base.hazards.size, base.hazards.keepout, base.hazards.placements) == (0.2, 0.3, None)


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize('parameter', ['hazard_size', 'hazard_keepout', 'hazard_range'])
@pytest.mark.parametrize('value', [0, -0.1, float('inf'), 'big', True])
def test_bad_hazard_values_name_the_parameter(parameter: str, value: object) -> None:
    with pytest.raises(TaskDistributionError, match=rf"'{parameter}'.*(> 0|number)"):
        Task(**{parameter: value})


def _distribution(**train: object) -> TaskDistribution:
    return TaskDistribution.from_config('bad', {'train': dict(train), 'test': dict(train)})


CAR_TASK = {'radius': 1.2, 'wall_scale': 0.7, 'hazards': 4, 'start_range': 0.2,
            'hazard_keepout': 0.4}


@pytest.mark.parametrize(
    ('env_id', 'values', 'message'),
    [
        ('MetaPointCircle-v0', {'radius': 1.2, 'hazard_size': 0.1},
         r"'hazard_size' needs hazards.*has only \['circle', 'sigwalls'\]"),
        ('MetaCarCircleHazardAuthors-v0', {**CAR_TASK, 'hazard_range': 0.3},
         r'hazard_range 0.3 <= hazard keepout 0.4.*allowed hazard_range > 0.4'),
        ('MetaCarCircleHazardAuthors-v0', {**CAR_TASK, 'hazard_range': 4.0},
         r'hazard_range 4 reaches beyond the floor \(half-size 3.5\)'),
        ('MetaCarCircleHazardAuthors-v0', {**CAR_TASK, 'hazards': 12, 'hazard_range': 1.4},
         r'12 hazards \(keepout 0.4\) do not fit in hazard_range 1.4.*hazard_range >= '),
        ('MetaCarCircleHazardAuthors-v0', {**CAR_TASK, 'hazard_size': 0.5},
         r'hazard keepout 0.4 \+ agent keepout 0 <= hazard size 0.5.*starting cost'),
        ('MetaPointButtonAuthors-v0', {'buttons': 4, 'hazards': 40, 'spawn_range': 1.5},
         r'do not fit in spawn_range 1.5'),
    ],
)
def test_worlds_that_cannot_be_built_are_refused(
    env_id: str,
    values: dict[str, float],
    message: str,
) -> None:
    env = make_env(env_id)
    with pytest.raises(TaskDistributionError, match=message):
        env.set_task(values)
    # the same values as a distribution: refused when the wrapper is built, before any reset
    with pytest.raises(TaskDistributionError, match=message):
        TaskWrapper(env.env, _distribution(**values))


def test_the_keepout_a_task_sets_is_the_one_checked() -> None:
    # keepout 0.4 keeps a 0.3 hazard off the start, 0.25 does not (agent keepout 0 on the Circle)
    env = make_env('MetaCarCircleHazard-v0')
    env.set_task({**CAR_TASK, 'hazard_size': 0.3, 'hazard_keepout': 0.4})
    with pytest.raises(TaskDistributionError, match=r'allowed hazard_keepout > 0.3'):
        env.set_task({**CAR_TASK, 'hazard_size': 0.3, 'hazard_keepout': 0.25})


def test_set_task_checks_against_what_the_task_will_run_with() -> None:
    # A task leaves hazard parameters unset: it runs with the env's own (size 0.2, keepout 0.3,
    # the spawn square), not with those of the task applied before, and is checked with them.
    env = make_env('MetaCarCircleHazardAuthors-v0', task_seed=0)
    env.set_task({**CAR_TASK, 'hazard_size': 0.12, 'hazard_range': 1.4})
    env.reset(seed=0)
    plain = {key: CAR_TASK[key] for key in ('radius', 'wall_scale', 'start_range')}
    with pytest.raises(TaskDistributionError, match=r'30 hazards \(keepout 0.3\).*spawn_range 2'):
        env.set_task({**plain, 'hazards': 30})  # they would share the spawn square
    with pytest.raises(TaskDistributionError, match=r'hazard size 0.2:.*starting cost'):
        env.set_task({**plain, 'hazards': 4, 'hazard_keepout': 0.15})


# ---------------------------------------------------------------------------- derived rules
def test_offset_and_equal_rules() -> None:
    distribution = TaskDistribution.from_config('d', {
        'offset': {'hazards': ['buttons', 3], 'start_range': ['spawn_range', -1.5]},
        'train': {'buttons': [3, 6], 'spawn_range': [2.0, 2.5]},
        'test': {'buttons': 8, 'spawn_range': 2.75},
    })
    assert distribution.parameters == ('hazards', 'buttons', 'spawn_range', 'start_range')
    assert distribution.worst_case('train')['hazards'] == (6, 9)
    assert distribution.worst_case('train')['start_range'] == pytest.approx((0.5, 1.0))
    rng = np.random.default_rng(0)
    for _ in range(20):
        task = distribution.sample('train', rng)
        assert task.hazards == task.buttons + 3
        assert task.start_range == pytest.approx(task.spawn_range - 1.5)
        assert distribution.contains(task, 'train')
    assert distribution.sample('test', rng) == Task(
        buttons=8, hazards=11, spawn_range=2.75, start_range=1.25)
    assert not distribution.contains(Task(buttons=4, hazards=4, spawn_range=2.0,
                                          start_range=0.5), 'train')
    # a rule inside one split: the other split may set the parameter itself
    per_split = TaskDistribution.from_config('d', {
        'train': {'buttons': [3, 6], 'equal': {'hazards': 'buttons'}},
        'test': {'buttons': 8, 'hazards': 14},
    })
    task = per_split.sample('train', rng)
    assert task.hazards == task.buttons
    assert per_split.sample('test', rng) == Task(buttons=8, hazards=14)


@pytest.mark.parametrize(
    ('body', 'message'),
    [
        ('offset: {hazards: buttons}',
         r"offset.hazards: expected \[<parameter>, <number>\].*got 'buttons'"),
        ('offset: {hazards: [buttons, 1.5]}',
         r"offset.hazards: 'hazards' is a count; the offset must be an integer, got 1.5"),
        ('offset: {hazards: [buttons, x]}', r'offset.hazards: expected \[<parameter>, <number>\]'),
        ('offset: {hazards: [bottons, 3]}', r"offset.hazards: source 'bottons' is not a parameter"),
        ('offset: {hazzards: [buttons, 3]}',
         r"offset.hazzards: derived parameter 'hazzards' is not a parameter; allowed:"),
        ('offset: {hazards: [radius, 3]}', r"'hazards' and 'radius' must both be counts"),
        ('equal: {hazards: [buttons]}', r"equal.hazards: source \['buttons'\] is not a parameter"),
        ('offset: {hazards: [hazards, 3]}', r'cannot derive from itself'),
        ('offset: {hazards: [buttons, -4]}',
         r"offset.hazards: at buttons min the derived hazards is -1.*integer >= 0"),
        ('offset: [hazards, buttons, 3]', r'offset: expected a non-empty mapping'),
        ('equal: {hazards: buttons}\n    offset: {hazards: [buttons, 3]}',
         r"offset.hazards: 'hazards' is already derived by \{'equal'"),
        ('offset: {hazards: [spawn_range, 3]}', r"must both be counts"),
        ('offset: {start_range: [spawn_range, -3]}',
         r'at spawn_range min the derived start_range is -1.*> 0'),
        ('offset: {hazards: [buttons, 3]}\n    train: {buttons: [3, 6], hazards: 4}\n'
         '    test: {buttons: 8}', r"'hazards' is set by .*must not have its own range"),
        ('train: {buttons: [3, 6], offset: {hazards: [buttons, 3]}}\n    test: {buttons: 8}',
         r"split 'test' sets \['buttons'\] but split 'train' sets \['buttons', 'hazards'\]"),
        ('offset: {hazards: [buttons, 3]}\n    train: {buttons: [3, 6], equal: {hazards: '
         'buttons}}\n    test: {buttons: 8}', r'derived both by the distribution'),
        ('train: {spawn_range: 2, offset: {hazards: [buttons, 3]}}\n    test: {spawn_range: 2}',
         r"offset.hazards: 'hazards' derives from 'buttons', which this split does not draw"),
    ],
)
def test_bad_rules_name_the_field(tmp_path: Path, body: str, message: str) -> None:
    if 'train:' not in body:
        body += '\n    train: {buttons: [3, 6], spawn_range: [1.5, 2]}'
        body += '\n    test: {buttons: 8, spawn_range: 2}'
    path = tmp_path / 'rules.yaml'
    path.write_text(textwrap.dedent(f'distributions:\n  bad:\n    {body}\n'), encoding='utf-8')
    with pytest.raises(TaskDistributionError, match=message) as info:
        load_config(path)
    assert "distribution 'bad'" in str(info.value) and str(path) in str(info.value)
