"""OmniSafe environment class for the non-stationary task distributions.

:class:`TaskDistributionEnv` is OmniSafe's ``SafetyGymnasiumEnv`` with the env built by
:func:`task_distributions.make_env`, which wraps it in a :class:`~task_distributions.TaskWrapper`.
It serves the ``Meta*`` ids to every OmniSafe algorithm (``omnisafe train --algo CPO --env-id
MetaPointCircle-v0``) and, when asked for by class name, the standard ids that have a distribution
(MetaCPO on ``SafetyPointCircle1-v0``). Two defects of OmniSafe 0.5.0 are repaired here:

* every episode end reset the world twice: ``SafetyGymnasiumEnv`` builds the env with
  ``autoreset=True`` *and* OmniSafe wraps it in its own ``AutoReset``. Here the env is built without
  autoreset; OmniSafe's ``AutoReset`` alone resets (once).
* the time limit is the env's own (``spec.max_episode_steps``, applied by gymnasium's ``TimeLimit``
  inside the env, which reports ``truncated``), so ``need_time_limit_wrapper`` is ``False`` and the
  ``Evaluator``'s hard-coded ``TimeLimit(time_limit=1000)`` is never applied to these envs.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from omnisafe.envs.core import CMDP, Wrapper
from omnisafe.envs.safety_gymnasium_env import SafetyGymnasiumEnv
from omnisafe.typing import DEVICE_CPU

import task_distributions
from task_distributions import Task


class TaskDistributionEnv(SafetyGymnasiumEnv):
    """A Safety-Gymnasium env whose task is resampled every ``episodes_per_task`` episodes.

    Args:
        env_id: A ``Meta*`` id or a standard id with a task distribution (see ``configs/``).
        num_envs: Must be 1 (tasks are pinned per environment).
        device: Device of the returned tensors.
        split: ``'train'`` or ``'test'`` task ranges.
        episodes_per_task: Episodes run in one task before a new one is drawn.
        task_seed: Seed of the task sequence; ``None``: seeded by ``set_seed`` (the run's seed).
        **kwargs: Passed to the Safety-Gymnasium env (``render_mode``, ``width``, ...).
    """

    need_auto_reset_wrapper: bool = True
    need_time_limit_wrapper: bool = False
    _support_envs: ClassVar[list[str]] = list(task_distributions.supported_env_ids())

    def __init__(  # pylint: disable=super-init-not-called
        self,
        env_id: str,
        num_envs: int = 1,
        device: torch.device = DEVICE_CPU,
        split: str = 'train',
        episodes_per_task: int = 1,
        task_seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        # SafetyGymnasiumEnv.__init__ is skipped on purpose: it builds the env with autoreset=True.
        CMDP.__init__(self, env_id)
        if num_envs != 1:
            raise ValueError(
                f'train_cfgs.vector_env_nums must be 1 for {env_id} (got {num_envs}): '
                'each environment runs one pinned task at a time',
            )
        self._num_envs = 1
        self._device = torch.device(device)
        # OmniSafe's Evaluator passes camera_id/camera_name=None: drop what was not set.
        kwargs = {key: value for key, value in kwargs.items() if value is not None}
        self._env = task_distributions.make_env(
            env_id,
            split=split,
            episodes_per_task=episodes_per_task,
            task_seed=task_seed,
            **kwargs,
        )
        self._action_space = self._env.action_space
        self._observation_space = self._env.observation_space
        self._metadata = self._env.metadata

    @property
    def max_episode_steps(self) -> int:
        """The env's own episode length (500 for Circle, 1000 for Button)."""
        return int(self._env.spec.max_episode_steps)

    # Task control, reached through OmniSafe's wrappers (``Wrapper.__getattr__`` forwards).
    @property
    def task(self) -> Task | None:
        """The task of the current episode (``None`` before the first reset)."""
        return self._env.task

    def set_task(self, task: Task, hold: bool = False) -> None:
        """Use ``task`` from the next reset on (for every episode until changed if ``hold``)."""
        self._env.set_task(task, hold=hold)

    def seed_tasks(self, seed: int) -> None:
        """Restart the task stream from ``seed``."""
        self._env.seed_tasks(seed)

    def sample_task(self) -> Task:
        """Draw a task from this env's split with its own seeded stream."""
        return self._env.sample_task()


def unwrapped(env: Any) -> Any:
    """The environment under OmniSafe's wrappers (which answer ``None`` for attributes such as
    ``max_episode_steps`` instead of forwarding them)."""
    while isinstance(env, Wrapper):
        env = env._env  # pylint: disable=protected-access
    return env
