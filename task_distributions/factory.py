"""One factory for every env id that has a task distribution."""

from __future__ import annotations

from typing import Any

import safety_gymnasium
from gymnasium.envs.registration import EnvSpec
from safety_gymnasium.builder import Builder

from task_distributions.builder import TaskBuilder, load_task_class
from task_distributions.config import EnvEntry, load_config
from task_distributions.distribution import TaskDistribution
from task_distributions.fast_reset import install_fast_world
from task_distributions.wrapper import TaskWrapper, check_episodes_per_task, check_task_seed


def _checked(
    env_id: str,
    split: str,
    episodes_per_task: int,
    task_seed: int | None,
) -> tuple[EnvEntry, TaskDistribution]:
    """The env entry and distribution of ``env_id``, with every argument validated first."""
    config = load_config()
    entry = config.env(env_id)
    distribution = config.distribution(entry.distribution)
    distribution.split(split)
    check_episodes_per_task(episodes_per_task)
    check_task_seed(task_seed)
    return entry, distribution


def make_env(
    env_id: str,
    *,
    split: str = 'train',
    episodes_per_task: int = 1,
    task_seed: int | None = None,
    render_mode: str | None = None,
    fast_reset: bool = True,
    **kwargs: Any,
) -> TaskWrapper:
    """Make a safety-gymnasium env whose episodes run in tasks of ``env_id``'s distribution.

    Works for the ids this package registers (``MetaPointCircle-v0``, ``MetaCarCircleHazard-v0``,
    ``MetaPointButton-v0``) and the stock ids mapped in the YAML (``SafetyPointCircle1-v0``, ...).
    The wrappers are those of ``safety_gymnasium.make`` (env checker, order enforcing, time limit
    with the registered episode length) without autoreset, and :class:`TaskWrapper` outermost, so
    ``env.spec.max_episode_steps``, ``env.set_task``, ``env.task`` and ``env.sample_task`` are
    reachable on the returned object.

    Args:
        env_id: An id listed by :func:`task_distributions.supported_env_ids`.
        split: ``'train'`` or ``'test'``.
        episodes_per_task: Episodes per drawn task (>= 1).
        task_seed: Seed of the task stream (``None``: seeded by ``reset(seed=...)``).
        render_mode: ``None``, ``'rgb_array'``, ``'depth_array'`` or ``'human'``.
        fast_reset: Rebuild worlds with :class:`~task_distributions.fast_reset.FastWorld` (no
            skybox unless rendering, assets parsed once); vector observations are unchanged.
        **kwargs: Passed to ``safety_gymnasium.make`` (``max_episode_steps``, ``width``, ...).

    Raises:
        TaskDistributionError: For an unknown id (listing the supported ones), split or
            distribution, or a distribution the env cannot host -- before the env is built where
            possible.
    """
    entry, distribution = _checked(env_id, split, episodes_per_task, task_seed)
    spec: str | EnvSpec = _core_spec(entry) if entry.is_custom else env_id
    env = safety_gymnasium.make(spec, autoreset=False, render_mode=render_mode, **kwargs)
    if fast_reset:
        install_fast_world(env)
    return TaskWrapper(env, distribution, split, episodes_per_task, task_seed)


def make_registered_env(
    env_id: str,
    split: str = 'train',
    episodes_per_task: int = 1,
    task_seed: int | None = None,
    fast_reset: bool = True,
    **kwargs: Any,
) -> TaskWrapper:
    """Entry point of the ids registered with safety-gymnasium (``safety_gymnasium.make`` adds the
    checker, order, time-limit and autoreset wrappers around the returned env).

    Args:
        env_id: The registered id.
        split: ``'train'`` or ``'test'``.
        episodes_per_task: Episodes per drawn task.
        task_seed: Seed of the task stream.
        fast_reset: See :func:`make_env`.
        **kwargs: ``render_mode``, ``width``, ``height``, ``camera_id``, ``camera_name``.
    """
    entry, distribution = _checked(env_id, split, episodes_per_task, task_seed)
    env = TaskBuilder(
        task_id=env_id,
        task_class=entry.task,
        config={'agent_name': entry.agent},
        **kwargs,
    )
    if fast_reset:
        install_fast_world(env)
    return TaskWrapper(env, distribution, split, episodes_per_task, task_seed)


# safety_gymnasium.make reads the creator's metadata to validate render modes.
make_registered_env.metadata = Builder.metadata  # type: ignore[attr-defined]


def _core_spec(entry: EnvEntry) -> EnvSpec:
    """An unregistered spec that builds the bare env of a custom id (no task wrapper)."""
    load_task_class(entry.task)  # fail here, with the YAML's path, if it does not import
    # Strings, not objects, so that the spec stays serialisable (``EnvSpec.to_json``, pickling).
    return EnvSpec(
        id=entry.env_id,
        entry_point='task_distributions.builder:TaskBuilder',
        max_episode_steps=entry.max_episode_steps,
        kwargs={
            'task_id': entry.env_id,
            'task_class': entry.task,
            'config': {'agent_name': entry.agent},
        },
    )
