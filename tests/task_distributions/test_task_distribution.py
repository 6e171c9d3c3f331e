"""Task, distributions, samplers and the YAML configuration (almost no environment built here)."""

from __future__ import annotations

import dataclasses
import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from task_distributions import (
    Task,
    TaskDistribution,
    TaskDistributionError,
    TaskSampler,
    UnknownEnvIdError,
    distribution_for_env,
    get_distribution,
    load_config,
    make_env,
    supported_env_ids,
)
from task_distributions.config import CONFIG_ENV_VAR, clear_cache

# Table 1 of the paper (the wall scale applies to both circle envs).
TABLE_1 = {
    'point_circle': {
        'train': {'radius': (1.0, 1.5), 'wall_scale': (0.65, 0.75)},
        'test': {'radius': (2.0, 2.5), 'wall_scale': (0.55, 0.65)},
    },
    'car_circle_hazard': {
        'train': {'radius': (0.7, 1.0), 'hazards': (3, 7), 'wall_scale': (0.65, 0.75)},
        'test': {'radius': (1.2, 1.5), 'hazards': (7, 12), 'wall_scale': (0.55, 0.65)},
    },
    'point_button': {
        'train': {'buttons': (3, 6), 'hazards': (3, 6), 'spawn_range': (1.75, 2.0)},
        'test': {'buttons': (6, 10), 'hazards': (6, 10), 'spawn_range': (2.5, 3.0)},
    },
}


# ---------------------------------------------------------------------------------------- Task
def test_task_is_frozen_and_compact() -> None:
    task = Task(radius=1.2, wall_scale=np.float64(0.7))
    assert task.as_dict() == {'radius': 1.2, 'wall_scale': 0.7}
    assert type(task.as_dict()['wall_scale']) is float
    assert Task.from_dict(task.as_dict()) == task
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.radius = 2.0  # type: ignore[misc]
    assert Task(hazards=np.int64(4)).as_dict() == {'hazards': 4}
    assert Task().as_dict() == {}


@pytest.mark.parametrize(
    ('values', 'field'),
    [
        ({'radius': -1.0}, 'radius'),
        ({'radius': 0.0}, 'radius'),
        ({'hazards': -1}, 'hazards'),
        ({'buttons': 2.5}, 'buttons'),
        ({'spawn_range': float('nan')}, 'spawn_range'),
        ({'wall_scale': 'wide'}, 'wall_scale'),
        ({'colour': 1}, 'colour'),
    ],
)
def test_task_rejects_bad_values(values: dict, field: str) -> None:
    with pytest.raises(TaskDistributionError, match=field):
        Task.from_dict(values)


# ---------------------------------------------------------------------------------------- Table 1
@pytest.mark.parametrize(('name', 'split'), itertools.product(TABLE_1, ('train', 'test')))
def test_samples_lie_in_the_split_ranges(name: str, split: str) -> None:
    distribution = get_distribution(name)
    expected = TABLE_1[name][split]
    tasks = [distribution.sample(split, np.random.default_rng(seed)) for seed in range(300)]
    for task in tasks:
        values = task.as_dict()
        for parameter, (low, high) in expected.items():
            assert low <= values[parameter] <= high, (parameter, values)
            if parameter in ('hazards', 'buttons'):
                assert isinstance(values[parameter], int)
        assert distribution.contains(task, split)
        if name == 'point_button':
            assert values['hazards'] == values['buttons']  # n_b = n_h
    for parameter, (low, high) in expected.items():
        drawn = [task.as_dict()[parameter] for task in tasks]
        if parameter in ('hazards', 'buttons'):
            assert set(drawn) == set(range(low, high + 1))  # inclusive integer bounds
        else:
            assert min(drawn) < low + 0.05 * (high - low)  # uniform over the whole range
            assert max(drawn) > high - 0.05 * (high - low)


def test_train_and_test_tasks_are_disjoint() -> None:
    for name in TABLE_1:
        distribution = get_distribution(name)
        rng = np.random.default_rng(0)
        for _ in range(100):
            assert not distribution.contains(distribution.sample('test', rng), 'train')


def test_same_seed_same_sequence() -> None:
    distribution = get_distribution('car_circle_hazard')
    first = [TaskSampler(distribution, 'train', seed=5).sample() for _ in range(1)]
    a = list(itertools.islice(TaskSampler(distribution, 'train', seed=5), 20))
    b = list(itertools.islice(distribution.sampler('train', seed=5), 20))
    c = list(itertools.islice(distribution.sampler('train', seed=6), 20))
    assert a == b
    assert a[0] == first[0]
    assert a != c
    assert len(set(a)) > 10


# ---------------------------------------------------------------------------------------- ids
def test_env_ids_map_to_distributions() -> None:
    assert distribution_for_env('MetaPointCircle-v0').name == 'point_circle'
    assert distribution_for_env('SafetyPointCircle1-v0').name == 'point_circle'
    assert distribution_for_env('MetaCarCircleHazard-v0').name == 'car_circle_hazard'
    assert distribution_for_env('SafetyCarCircle1-v0').name == 'car_circle'
    assert distribution_for_env('MetaPointButton-v0').name == 'point_button'
    assert distribution_for_env('SafetyPointButton1-v0').name == 'point_button'


def test_package_constants() -> None:
    import task_distributions

    assert task_distributions.META_ENV_IDS == (
        'MetaCarCircleHazard-v0',
        'MetaCarCircleHazardAuthors-v0',  # configs/task_distributions_authors.yaml
        'MetaPointButton-v0',
        'MetaPointButtonAuthors-v0',
        'MetaPointCircle-v0',
        'MetaPointCircleAuthors-v0',
    )
    assert supported_env_ids() == task_distributions.SUPPORTED_ENV_IDS
    assert {'SafetyPointCircle1-v0', *task_distributions.META_ENV_IDS} <= set(supported_env_ids())


def test_unknown_env_id_lists_the_supported_ids() -> None:
    with pytest.raises(UnknownEnvIdError) as info:
        distribution_for_env('SafetyPointGoal9-v0')
    assert isinstance(info.value, ValueError)
    for env_id in supported_env_ids():
        assert env_id in str(info.value)


def test_unknown_distribution_and_split() -> None:
    with pytest.raises(TaskDistributionError, match=r"'nope'.*allowed.*point_circle"):
        get_distribution('nope')
    with pytest.raises(TaskDistributionError, match=r"split 'val'.*'train', 'test'"):
        get_distribution('point_circle').split('val')
    with pytest.raises(TaskDistributionError, match="split 'val'"):
        TaskSampler(get_distribution('point_circle'), 'val')


# ---------------------------------------------------------------------------------------- YAML
def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / 'distributions.yaml'
    path.write_text(textwrap.dedent(text), encoding='utf-8')
    return path


@pytest.mark.parametrize(
    ('body', 'message'),
    [
        ('train: {radius: [1.5, 1.0]}\n    test: {radius: [2, 3]}', r'radius: min 1.5 > max 1.0'),
        ('train: {radius: [-1, 1]}\n    test: {radius: [2, 3]}', r'radius min.*> 0'),
        ('train: {hazards: [-2, 3]}\n    test: {hazards: [2, 3]}', r'hazards min.*>= 0'),
        ('train: {hazards: [1.5, 3]}\n    test: {hazards: [2, 3]}', r'hazards.*integer'),
        ('train: {colour: [1, 2]}\n    test: {colour: [1, 2]}', r"unknown parameter 'colour'"),
        ('train: {radius: [1, 2]}', r"missing split\(s\) \['test'\]"),
        ('train: {radius: [1, 2]}\n    test: {hazards: [1, 2]}', r'same parameters'),
        ('train: {radius: [1, 2, 3]}\n    test: {radius: [1, 2]}', r'\[min, max\]'),
        (
            'equal: {hazards: buttons}\n    train: {radius: [1, 2]}\n    test: {radius: [1, 2]}',
            r"'hazards' derives from 'buttons', which this split does not draw",
        ),
    ],
)
def test_bad_yaml_names_the_field(tmp_path: Path, body: str, message: str) -> None:
    path = _write(tmp_path, f'distributions:\n  bad:\n    {body}\n')
    with pytest.raises(TaskDistributionError, match=message) as info:
        load_config(path)
    assert 'bad' in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize(
    ('env', 'message'),
    [
        ('X-v0: {distribution: missing}', r"envs.X-v0.distribution: 'missing'"),
        ('X-v0: {distribution: d, colour: red}', r'unknown key'),
        ('X-v0: {distribution: d, task: "a:B"}', r"also needs \['agent', 'max_episode_steps'\]"),
        (
            'X-v0: {distribution: d, task: "a:B", agent: Robot, max_episode_steps: 5}',
            r"'Robot' is not an agent",
        ),
        ('X-v0: {distribution: d, max_episode_steps: 5}', r'only apply to an env with its own'),
    ],
)
def test_bad_env_entries(tmp_path: Path, env: str, message: str) -> None:
    text = f"""
    distributions:
      d: {{train: {{radius: [1, 2]}}, test: {{radius: [2, 3]}}}}
    envs:
      {env}
    """
    with pytest.raises(TaskDistributionError, match=message):
        load_config(_write(tmp_path, text))


def test_user_file_adds_a_distribution_without_code(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = _write(
        tmp_path,
        """
        distributions:
          goal_hazards:
            train: {hazards: [2, 4], spawn_range: [1.5, 2.0]}
            test: {hazards: [6, 8], spawn_range: [2.0, 2.5]}
        envs:
          SafetyPointGoal1-v0: {distribution: goal_hazards}
        """,
    )
    monkeypatch.setenv(CONFIG_ENV_VAR, str(path))
    clear_cache()
    try:
        config = load_config()
        assert 'point_circle' in config.distributions  # the defaults are still there
        distribution = distribution_for_env('SafetyPointGoal1-v0')
        assert distribution.parameters == ('hazards', 'spawn_range')
        assert 'SafetyPointGoal1-v0' in supported_env_ids()
        env = make_env('SafetyPointGoal1-v0', split='test', task_seed=0)
        env.reset(seed=0)
        assert env.unwrapped.task.hazards.num == env.task.hazards >= 6
        assert env.unwrapped.task.placements_conf.extents[2] == env.task.spawn_range
    finally:
        monkeypatch.delenv(CONFIG_ENV_VAR)
        clear_cache()


def test_from_config_direct() -> None:
    distribution = TaskDistribution.from_config(
        'd',
        {'train': {'radius': [1, 1]}, 'test': {'radius': 2}, 'val': {'radius': [3, 4]}},
    )
    assert distribution.split_names == ('train', 'test', 'val')
    rng = np.random.default_rng(0)
    assert distribution.sample('train', rng) == Task(radius=1.0)
    assert distribution.sample('test', rng) == Task(radius=2.0)


def test_registration_is_cheap_and_idempotent() -> None:
    # A fresh interpreter: registration runs while safety_gymnasium is imported (start-up hook),
    # so it must not pull in torch or OmniSafe, and calling it again must change nothing.
    code = textwrap.dedent(
        """
        import sys
        import _omnisafe_metacpo_hook  # what omnisafe_metacpo.pth runs at start-up
        import safety_gymnasium  # the hook registers the ids right after this import
        from safety_gymnasium.utils.registration import safe_registry
        from task_distributions.registration import register_safety_gymnasium_envs
        again = register_safety_gymnasium_envs()
        heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'omnisafe'))
        ids = ('MetaPointCircle-v0', 'MetaCarCircleHazard-v0', 'MetaPointButton-v0')
        print(all(i in safe_registry for i in ids), again, heavy)
        """,
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, '-c', code],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        env={**os.environ, 'PYTHONPATH': str(root)},
    )
    assert result.stdout.strip().splitlines()[-1] == 'True [] []', result.stdout
