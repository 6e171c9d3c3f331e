"""OmniSafe 0.5.0 defects repaired by the plug-in: each test fails without its fix."""

from __future__ import annotations

import argparse
import os
from typing import Any

import mujoco
import numpy as np
import pytest
import safety_gymnasium
import torch
from gymnasium.envs.mujoco import mujoco_rendering
from omnisafe.adapter import OnPolicyAdapter
from omnisafe.utils.config import get_default_kwargs_yaml
from safety_gymnasium.builder import Builder

from omnisafe_metacpo.plugin import compat


def _cpo_cfgs(env_id: str):
    cfgs = get_default_kwargs_yaml('CPO', env_id, 'on-policy')
    cfgs.recurisve_update({'train_cfgs': {'device': 'cpu'}})
    return cfgs


def _resets_at_episode_end(env_id: str, monkeypatch: pytest.MonkeyPatch) -> int:
    adapter = OnPolicyAdapter(env_id, 1, 0, _cpo_cfgs(env_id))
    adapter.reset(seed=0)
    calls = []
    original = Builder.reset

    def counting_reset(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Builder, 'reset', counting_reset)
    for _ in range(500):  # a Circle episode lasts 500 steps
        *_, terminated, truncated, _ = adapter.step(torch.zeros(1, 2))
    assert bool(truncated[0]) or bool(terminated[0])
    return len(calls)


def test_one_reset_per_episode_end(monkeypatch: pytest.MonkeyPatch) -> None:
    # Stock SafetyGymnasiumEnv resets twice (autoreset=True plus OmniSafe's AutoReset)...
    assert _resets_at_episode_end('SafetyPointCircle1-v0', monkeypatch) == 2
    # ...the task-distribution env once.
    assert _resets_at_episode_end('MetaPointCircle-v0', monkeypatch) == 1


def _evaluated_episode_length(run: str) -> int:
    from omnisafe.evaluator import Evaluator

    evaluator = Evaluator(render_mode='rgb_array')
    evaluator.load_saved(save_dir=run, model_name='epoch-0.pt')
    env = evaluator._env  # the env exactly as the Evaluator wrapped it
    env.reset()
    length, done = 0, False
    while not done:
        *_, terminated, truncated, _ = env.step(torch.zeros(2))
        length += 1
        done = bool(terminated or truncated)
    return length


def test_evaluator_uses_the_env_episode_length(cpo_run: str) -> None:
    # Stock Evaluator: TimeLimit(1000) on a 500-step task -> one "episode" of 1000 steps.
    assert _evaluated_episode_length(cpo_run) == 500


def test_evaluator_loads_weights_only_onto_cpu(cpo_run: str) -> None:
    import omnisafe.evaluator as evaluator

    path = os.path.join(cpo_run, 'torch_save', 'epoch-0.pt')
    params = evaluator.torch.load(path)
    assert set(params) >= {'pi', 'obs_normalizer'}
    # A file holding anything but tensors and containers is refused, not unpickled.
    bad = os.path.join(cpo_run, 'bad.pt')
    torch.save({'pi': params['pi'], 'obj': argparse.Namespace(anything=1)}, bad)
    with pytest.raises(Exception, match=r'[Ww]eights.only'):
        evaluator.torch.load(bad)


def test_patches_are_installed_once() -> None:
    import omnisafe.evaluator as evaluator

    torch_standin = evaluator.torch
    compat.patch_evaluator()
    assert evaluator.torch is torch_standin



def _goal_env() -> Any:
    env = safety_gymnasium.make('SafetyPointGoal1-v0', render_mode='rgb_array')
    env.reset(seed=0)
    env.step(env.action_space.sample())
    return env


def test_marker_rendering_matches_the_installed_mujoco() -> None:
    replaced = compat.patch_marker_rendering()
    # Replaced exactly where MuJoCo dropped MjvGeom.texid (3.2+, the Python 3.12/3.13 wheels).
    assert replaced == (not hasattr(mujoco.MjvGeom(), 'texid'))
    method = mujoco_rendering.BaseRender._add_marker_to_scene
    assert (method is compat._add_marker_to_scene) == replaced


def test_a_task_renders_with_its_markers() -> None:
    env = _goal_env()
    try:
        viewer = env.unwrapped.task._get_viewer('rgb_array')
        viewer.add_marker(pos=np.array([0.0, 0.0, 1.0]), size=np.full(3, 0.05),
                          type=mujoco.mjtGeom.mjGEOM_SPHERE, rgba=np.array([1.0, 0.0, 0.0, 0.5]),
                          label='cost')
        frame = env.render()
    finally:
        env.close()
    assert frame.ndim == 3 and frame.shape[2] == 3
    assert frame.std() > 0


def test_a_marker_with_an_unknown_field_is_refused() -> None:
    if not compat.patch_marker_rendering():
        pytest.skip("MuJoCo keeps MjvGeom.texid: gymnasium's own marker method is used")
    env = _goal_env()
    try:
        env.unwrapped.task._get_viewer('rgb_array').add_marker(pos=np.zeros(3), colour=1.0)
        with pytest.raises(ValueError, match='colour'):
            env.render()
    finally:
        env.close()
