"""Non-stationary task distributions for Safety-Gymnasium (Table 1 of Meta-CPO).

* :class:`Task` -- one task's parameters; :class:`TaskDistribution` / :class:`TaskSampler` --
  seeded distributions with ``train``/``test`` splits (``configs/task_distributions.yaml``).
* :class:`TaskWrapper` -- applies a task to a safety-gymnasium env and redraws it every
  ``episodes_per_task`` episodes; :func:`make_env` -- builds one for any supported env id.
* ``MetaPointCircle-v0``, ``MetaCarCircleHazard-v0``, ``MetaPointButton-v0`` -- the paper's
  environments (observation sizes 28 / 56 / 60), registered with safety-gymnasium; the same with
  ``Authors`` before ``-v0`` run the task settings of the authors' code
  (``configs/task_distributions_authors.yaml``, ``docs/task_settings.md``).

Names are exported lazily: importing this package imports nothing heavy (the start-up hook imports
``task_distributions.registration`` while safety-gymnasium is being imported).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    'Task': 'task_distributions.task',
    'TaskDistributionError': 'task_distributions.errors',
    'UnknownEnvIdError': 'task_distributions.errors',
    'ParameterRange': 'task_distributions.distribution',
    'TaskDistribution': 'task_distributions.distribution',
    'TaskSampler': 'task_distributions.distribution',
    'EnvEntry': 'task_distributions.config',
    'load_config': 'task_distributions.config',
    'get_distribution': 'task_distributions.config',
    'distribution_for_env': 'task_distributions.config',
    'env_entry': 'task_distributions.config',
    'supported_env_ids': 'task_distributions.config',
    'meta_env_ids': 'task_distributions.config',
    'TaskWrapper': 'task_distributions.wrapper',
    'apply_task': 'task_distributions.wrapper',
    'make_env': 'task_distributions.factory',
    'register_safety_gymnasium_envs': 'task_distributions.registration',
    'FastWorld': 'task_distributions.fast_reset',
    'install_fast_world': 'task_distributions.fast_reset',
}

__all__ = [
    'META_ENV_IDS',
    'SUPPORTED_ENV_IDS',
    'EnvEntry',
    'FastWorld',
    'ParameterRange',
    'Task',
    'TaskDistribution',
    'TaskDistributionError',
    'TaskSampler',
    'TaskWrapper',
    'UnknownEnvIdError',
    'apply_task',
    'distribution_for_env',
    'env_entry',
    'get_distribution',
    'install_fast_world',
    'load_config',
    'make_env',
    'meta_env_ids',
    'register_safety_gymnasium_envs',
    'supported_env_ids',
]

if TYPE_CHECKING:
    from task_distributions.config import (
        EnvEntry,
        distribution_for_env,
        env_entry,
        get_distribution,
        load_config,
        meta_env_ids,
        supported_env_ids,
    )
    from task_distributions.distribution import ParameterRange, TaskDistribution, TaskSampler
    from task_distributions.errors import TaskDistributionError, UnknownEnvIdError
    from task_distributions.factory import make_env
    from task_distributions.fast_reset import FastWorld, install_fast_world
    from task_distributions.registration import register_safety_gymnasium_envs
    from task_distributions.task import Task
    from task_distributions.wrapper import TaskWrapper, apply_task

    SUPPORTED_ENV_IDS: tuple[str, ...]
    META_ENV_IDS: tuple[str, ...]


#: Constants read from the YAML on first access: ``SUPPORTED_ENV_IDS`` (every id with a task
#: distribution) and ``META_ENV_IDS`` (the ids this package registers).
_CONSTANTS: dict[str, str] = {
    'SUPPORTED_ENV_IDS': 'supported_env_ids',
    'META_ENV_IDS': 'meta_env_ids',
}


def __getattr__(name: str) -> Any:
    if name in _CONSTANTS:
        value = __getattr__(_CONSTANTS[name])()
        globals()[name] = value
        return value
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_CONSTANTS))
