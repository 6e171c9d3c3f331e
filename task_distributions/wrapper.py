"""``TaskWrapper``: runs each episode of a safety-gymnasium env in a task from a distribution."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np

from task_distributions.config import get_distribution
from task_distributions.distribution import TaskDistribution, TaskSampler
from task_distributions.errors import TaskDistributionError
from task_distributions.geometry import check_distribution, check_task
from task_distributions.task import Task


@dataclass(frozen=True)
class _Defaults:
    """The env's own values of what a task may change (restored for parameters a task omits)."""

    radius: float | None
    locate_factor: float | None
    hazards: int | None
    buttons: int | None
    extents: tuple[float, ...]
    agent_placements: list[tuple[float, ...]] | None
    hazard_size: float | None = None
    hazard_keepout: float | None = None
    hazard_placements: list[tuple[float, ...]] | None = None

    @classmethod
    def of(cls, base_task: Any) -> _Defaults:
        circle = getattr(base_task, 'circle', None)
        sigwalls = getattr(base_task, 'sigwalls', None)
        hazards = getattr(base_task, 'hazards', None)
        buttons = getattr(base_task, 'buttons', None)
        placements = base_task.agent.placements
        hazard_placements = hazards.placements if hazards is not None else None
        return cls(
            radius=circle.radius if circle is not None else None,
            locate_factor=sigwalls.locate_factor if sigwalls is not None else None,
            hazards=hazards.num if hazards is not None else None,
            buttons=buttons.num if buttons is not None else None,
            extents=tuple(base_task.placements_conf.extents),
            agent_placements=list(placements) if placements is not None else None,
            hazard_size=hazards.size if hazards is not None else None,
            hazard_keepout=hazards.keepout if hazards is not None else None,
            hazard_placements=list(hazard_placements) if hazard_placements is not None else None,
        )


def apply_task(base_task: Any, task: Task, defaults: _Defaults) -> None:
    """Set ``task``'s parameters on a safety-gymnasium task; they take effect at the next reset.

    Each reset runs ``task.reset()`` -> ``_build()``, which samples a layout and rebuilds the MuJoCo
    world from the objects' attributes, so changing those attributes between episodes is enough:

    * radius -> ``circle.radius`` (the Circle reward and the drawn circle use it);
    * wall_scale -> ``sigwalls.locate_factor = s * r_c``; the walls' ``locations`` are derived from
      it only in ``Sigwalls.__post_init__``, so that is re-run (it only recomputes them);
    * hazards / buttons -> ``num`` of the kind;
    * spawn_range -> ``placements_conf.extents = (-r, -r, r, r)``;
    * start_range -> ``agent.placements = [(-a, -a, a, a)]``;
    * hazard_size -> ``hazards.size``: the hazards' geoms in the rebuilt XML
      (``Hazards.get_config``) and the cost (``Hazards.cal_cost``, and the fast step's copy of
      it, read the attribute at every step) both use it: the drawn disc is the costly disc;
    * hazard_keepout -> ``hazards.keepout`` (read when the placements dict is built);
    * hazard_range -> ``hazards.placements = [(-e, -e, e, e)]``: a hazard's own placement square,
      which the layout sampler shrinks by its keepout (centres within +-(e - keepout)).

    ``_build`` computes the placements dict (which objects go where, with which keepout) only while
    ``placements_conf.placements`` is None, so it is reset to None to pick up new counts and ranges.
    Parameters the task leaves unset get the env's defaults back.
    """
    radius = task.radius if task.radius is not None else defaults.radius
    if defaults.radius is not None:
        base_task.circle.radius = radius
    if defaults.locate_factor is not None:
        sigwalls = base_task.sigwalls
        if task.wall_scale is not None:
            sigwalls.locate_factor = task.wall_scale * radius
        else:
            sigwalls.locate_factor = defaults.locate_factor
        sigwalls.__post_init__()
    if defaults.hazards is not None:
        base_task.hazards.num = task.hazards if task.hazards is not None else defaults.hazards
    if defaults.buttons is not None:
        base_task.buttons.num = task.buttons if task.buttons is not None else defaults.buttons
    if defaults.hazards is not None:
        hazards = base_task.hazards
        hazards.size = task.hazard_size if task.hazard_size is not None else defaults.hazard_size
        hazards.keepout = (
            task.hazard_keepout if task.hazard_keepout is not None else defaults.hazard_keepout
        )
        if task.hazard_range is not None:
            e = task.hazard_range
            hazards.placements = [(-e, -e, e, e)]
        else:
            hazards.placements = defaults.hazard_placements
    if task.spawn_range is not None:
        r = task.spawn_range
        base_task.placements_conf.extents = (-r, -r, r, r)
    else:
        base_task.placements_conf.extents = defaults.extents
    if task.start_range is not None:
        a = task.start_range
        base_task.agent.placements = [(-a, -a, a, a)]
    else:
        base_task.agent.placements = defaults.agent_placements
    base_task.placements_conf.placements = None


class TaskWrapper(gymnasium.Wrapper):
    """Draws a task every ``episodes_per_task`` episodes and runs the episodes in it.

    The env must be a safety-gymnasium navigation env (``env.unwrapped.task`` is its task object).
    Episodes are counted at ``reset``: resets 1..k run in task 1, resets k+1..2k in task 2, and so
    on (k = ``episodes_per_task``). An algorithm can also choose tasks itself: :meth:`sample_task`
    draws from the wrapper's stream and :meth:`set_task` makes the next reset use a given task.

    Seeding: with ``task_seed`` the task stream is fixed at construction. Without it the stream is
    seeded by each ``reset(seed=...)`` (so one seed makes both layouts and tasks reproducible), and
    by fresh entropy until then. :meth:`seed_tasks` restarts the stream explicitly.

    Note: ``env.unwrapped.task`` is safety-gymnasium's task object; this wrapper's :attr:`task` is
    the :class:`Task` (parameters) of the current episode.

    Args:
        env: A safety-gymnasium env (wrapped or not), not yet reset.
        distribution: A :class:`TaskDistribution` or the name of one in the YAML configuration.
        split: ``'train'`` or ``'test'`` (or another split of the distribution).
        episodes_per_task: Episodes run in each task before the next one is drawn (>= 1).
        task_seed: Seed of the task stream (see above).

    Raises:
        TaskDistributionError: For an unknown distribution or split, ``episodes_per_task < 1``, or
            a split whose tasks cannot be built in this env (see ``geometry``).
    """

    def __init__(
        self,
        env: gymnasium.Env,
        distribution: TaskDistribution | str,
        split: str = 'train',
        episodes_per_task: int = 1,
        task_seed: int | None = None,
    ) -> None:
        super().__init__(env)
        if isinstance(distribution, str):
            distribution = get_distribution(distribution)
        check_episodes_per_task(episodes_per_task)
        check_task_seed(task_seed)
        self._distribution = distribution
        self._split = split
        self._sampler = TaskSampler(distribution, split, task_seed)
        self._task_seed = task_seed
        self._episodes_per_task = int(episodes_per_task)
        self._base_task = env.unwrapped.task
        check_distribution(self._base_task, distribution, split)
        self._defaults = _Defaults.of(self._base_task)
        self._current: Task | None = None
        self._applied: Task | None = None
        self._pending: Task | None = None
        self._hold = False
        self._redraw = False
        self._episodes_in_task = 0

    # ----------------------------------------------------------------------------- read-outs
    @property
    def task(self) -> Task | None:
        """The task of the current episode (``None`` before the first reset)."""
        return self._current

    @property
    def distribution(self) -> TaskDistribution:
        """The task distribution."""
        return self._distribution

    @property
    def split(self) -> str:
        """The split tasks are drawn from."""
        return self._split

    @property
    def episodes_per_task(self) -> int:
        """Episodes run in each task before the next one is drawn."""
        return self._episodes_per_task

    @property
    def task_seed(self) -> int | None:
        """The seed given at construction (``None``: seeded by ``reset(seed=...)``)."""
        return self._task_seed

    @property
    def pending_task(self) -> Task | None:
        """The task :meth:`set_task` chose for the next reset, if any."""
        return self._pending

    @property
    def episodes_in_task(self) -> int:
        """Episodes started in the current task so far (1 after the reset that chose it)."""
        return self._episodes_in_task

    # ----------------------------------------------------------------------------- control
    def sample_task(self) -> Task:
        """Draw the next task from this wrapper's stream (the one resets draw from)."""
        return self._sampler.sample()

    def seed_tasks(self, seed: int | None) -> None:
        """Restart the task stream from ``seed``; the next reset draws its first task.

        A task chosen with :meth:`set_task` for the next reset still goes first; a held task is
        released.
        """
        check_task_seed(seed)
        self._sampler.seed(seed)
        self._redraw = True

    def set_task(self, task: Task | Mapping[str, Any] | None, *, hold: bool = False) -> None:
        """Make the next reset use ``task``; the count of episodes per task restarts there.

        Args:
            task: A :class:`Task` (or a mapping such as :meth:`Task.as_dict` gives); ``None`` drops
                a pending or held task, so that the next reset draws a new one.
            hold: Keep the task for every following episode, until the next ``set_task``, instead of
                for ``episodes_per_task`` episodes.

        Raises:
            TaskDistributionError: If the task cannot be built in this env (a parameter the env
                lacks, objects that do not fit, a start beyond the walls).
        """
        if task is None:
            self._pending = None
            self._hold = False
            self._redraw = True
            return
        if not isinstance(task, Task):
            if not isinstance(task, Mapping):
                raise TaskDistributionError(f'set_task expects a Task or a mapping, got {task!r}')
            task = Task.from_dict(task)
        check_task(self._base_task, task, self._defaults)
        self._pending = task
        self._hold = hold

    # ----------------------------------------------------------------------------- gymnasium
    def reset(
        self,
        *,
        seed: int | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Choose the episode's task (pending, current or newly drawn), apply it, and reset."""
        reseeded = seed is not None and self._task_seed is None
        if reseeded:
            self._sampler.seed(seed)
        if self._pending is not None:
            self._current, self._pending = self._pending, None
            self._redraw = False  # a restarted stream still starts at its first task, later
            self._episodes_in_task = 0
        elif (
            self._current is None
            or reseeded
            or self._redraw
            or (not self._hold and self._episodes_in_task >= self._episodes_per_task)
        ):
            self._current = self._sampler.sample()
            self._hold = False
            self._redraw = False
            self._episodes_in_task = 0
        if self._current != self._applied:
            apply_task(self._base_task, self._current, self._defaults)
            self._applied = self._current
        self._episodes_in_task += 1
        return self.env.reset(seed=seed, options=options)


def check_episodes_per_task(episodes_per_task: Any) -> None:
    """Raise :class:`TaskDistributionError` unless ``episodes_per_task`` is an integer >= 1."""
    if (
        isinstance(episodes_per_task, bool)
        or not isinstance(episodes_per_task, (int, np.integer))
        or episodes_per_task < 1
    ):
        raise TaskDistributionError(
            f'episodes_per_task must be an integer >= 1, got {episodes_per_task!r}',
        )


def check_task_seed(task_seed: Any) -> None:
    """Raise :class:`TaskDistributionError` unless ``task_seed`` is ``None`` or an integer >= 0."""
    if task_seed is None:
        return
    if (
        isinstance(task_seed, bool)
        or not isinstance(task_seed, (int, np.integer))
        or task_seed < 0
    ):
        raise TaskDistributionError(f'task_seed must be None or an integer >= 0, got {task_seed!r}')
