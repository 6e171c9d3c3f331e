"""A safety-gymnasium ``Builder`` that runs any task class (the stock one finds them by id)."""

from __future__ import annotations

import importlib
from typing import Any

import gymnasium
from safety_gymnasium.bases.base_task import BaseTask
from safety_gymnasium.builder import Builder

from task_distributions.errors import TaskDistributionError


def load_task_class(path: str) -> type[BaseTask]:
    """Import ``module:Class`` and check that it is a safety-gymnasium task.

    Raises:
        TaskDistributionError: If the path does not name a ``BaseTask`` subclass.
    """
    module_name, _, class_name = path.partition(':')
    try:
        task_class = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise TaskDistributionError(f'task class {path!r} cannot be imported: {error}') from None
    if not (isinstance(task_class, type) and issubclass(task_class, BaseTask)):
        raise TaskDistributionError(f'{path!r} is not a safety-gymnasium BaseTask subclass')
    return task_class


class TaskBuilder(Builder):
    """``safety_gymnasium.builder.Builder`` with an explicit task class.

    The stock ``Builder._get_task`` derives a class name from the id (``SafetyPointCircle1-v0`` ->
    ``CircleLevel1``) and looks it up in ``safety_gymnasium.tasks``, so a task defined elsewhere
    cannot be reached by id. This subclass overrides only that lookup; stepping, costs, resets and
    rendering are the stock ``Builder``'s.

    Args:
        task_id: The env id (used for display; the class is ``task_class``).
        task_class: The task class or its ``module:Class`` path.
        config: Task configuration as safety-gymnasium registers it (``{'agent_name': 'Point'}``).
        render_mode: ``None``, ``'human'``, ``'rgb_array'`` or ``'depth_array'``.
        width: Render width.
        height: Render height.
        camera_id: Render camera id.
        camera_name: Render camera name.
    """

    def __init__(
        self,
        task_id: str,
        task_class: type[BaseTask] | str,
        config: dict[str, Any] | None = None,
        render_mode: str | None = None,
        width: int = 256,
        height: int = 256,
        camera_id: int | None = None,
        camera_name: str | None = None,
    ) -> None:
        if isinstance(task_class, str):
            task_class = load_task_class(task_class)
        self._task_class = task_class
        super().__init__(task_id, config, render_mode, width, height, camera_id, camera_name)
        # Builder records only ``config`` for pickling/copying; record what rebuilds this env.
        gymnasium.utils.EzPickle.__init__(
            self,
            task_id=task_id,
            task_class=task_class,
            config=config,
            render_mode=render_mode,
            width=width,
            height=height,
            camera_id=camera_id,
            camera_name=camera_name,
        )

    def _get_task(self) -> BaseTask:
        task = self._task_class(config=self.config)
        task.build_observation_space()
        return task
