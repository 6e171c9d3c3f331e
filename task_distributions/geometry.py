"""Checks that a task (or every task a split can draw) can be built in a given env.

safety-gymnasium finds out late and obscurely when a layout is impossible: rejection sampling
retries up to 10,000 layouts (seconds to minutes) before ``ResamplingError``, and a start outside
the walls or inside a hazard fails ``Builder.reset`` with "World has starting cost!". These checks
use the same placement geometry -- keepout radii, placement squares, wall positions -- to reject
such input at construction, before any training starts, with an error that names the parameter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from task_distributions.distribution import TaskDistribution
from task_distributions.errors import TaskDistributionError
from task_distributions.task import Task

#: Kind of object each count parameter sets, and the geometry parameters' owners.
COUNT_KINDS: dict[str, str] = {'hazards': 'hazards', 'buttons': 'buttons'}
NEEDS: dict[str, str] = {
    'radius': 'circle',
    'wall_scale': 'sigwalls',
    'hazard_size': 'hazards',
    'hazard_keepout': 'hazards',
    'hazard_range': 'hazards',
}

#: Largest share of the placement square that the objects' keepout disks may cover. Measured with
#: safety-gymnasium's own sampler (``RandomGenerator.sample_layout``, equal disks of keepout 0.3 in
#: +-2): 42% needs about 4 layout attempts, 49% about 190 (2 s per reset) and fails half the time,
#: 57% never succeeds. Stock Button1 covers 44% with mixed sizes and samples in 1-3 attempts.
MAX_PLACEMENT_DENSITY = 0.45


def check_distribution(base_task: Any, distribution: TaskDistribution, split: str) -> None:
    """Check that every task of ``split`` can be built in ``base_task``'s env.

    The extreme values of the split's ranges are checked (most objects in the smallest spawn range,
    the widest start square against the nearest walls).

    Args:
        base_task: The env's safety-gymnasium task (``env.unwrapped.task``).
        distribution: The distribution.
        split: The split the env draws from.

    Raises:
        TaskDistributionError: Naming the parameter, the split and the allowed values.
    """
    bounds = distribution.worst_case(split)
    _check(base_task, bounds, f'distribution {distribution.name!r}, split {split!r}')


def check_task(base_task: Any, task: Task, defaults: Any = None) -> None:
    """Check that ``task`` can be built in ``base_task``'s env (see :func:`check_distribution`).

    Args:
        base_task: The env's safety-gymnasium task.
        task: The task.
        defaults: The env's own values (``wrapper._Defaults``) that the task's unset hazard
            parameters get back when it is applied; ``None`` reads the current ones. After a
            task has been applied the current ones are that task's, not what this task will run
            with.
    """
    bounds = {name: (value, value) for name, value in task.as_dict().items()}
    _check(base_task, bounds, str(task), defaults)


@dataclass(frozen=True)
class _HazardsFallback:
    """The hazards' size, keepout and placements where a task does not set them."""

    size: float
    keepout: float
    placements: Any

    @classmethod
    def of(cls, hazards: Any, defaults: Any) -> _HazardsFallback:
        if defaults is not None and defaults.hazard_size is not None:
            return cls(defaults.hazard_size, defaults.hazard_keepout, defaults.hazard_placements)
        return cls(hazards.size, hazards.keepout, hazards.placements)


def _check(
    base_task: Any,
    bounds: Mapping[str, tuple[float, float]],
    where: str,
    defaults: Any = None,
) -> None:
    task_name = type(base_task).__name__
    kinds = sorted(obstacle.name for obstacle in base_task._obstacles)
    for name in bounds:
        kind = COUNT_KINDS.get(name) or NEEDS.get(name)
        if kind is not None and not hasattr(base_task, kind):
            raise TaskDistributionError(
                f'{where}: parameter {name!r} needs {kind} in the env, but task {task_name} has '
                f'only {kinds}; choose an env with {kind} or drop {name!r}',
            )
    hazards = getattr(base_task, 'hazards', None)
    fallback = _HazardsFallback.of(hazards, defaults) if hazards is not None else None
    _check_counts(base_task, bounds, where)
    _check_walls(base_task, bounds, where)
    _check_placements(base_task, bounds, where, fallback)
    _check_hazard_square(base_task, bounds, where, fallback)
    _check_start_outside_hazards(base_task, bounds, where, fallback)


def _check_counts(base_task: Any, bounds: Mapping[str, tuple[float, float]], where: str) -> None:
    for name, kind in COUNT_KINDS.items():
        if name not in bounds:
            continue
        low = bounds[name][0]
        if kind == 'buttons' and low < 1:
            raise TaskDistributionError(
                f'{where}: buttons min is {low}, allowed >= 1 (one of them is the goal)',
            )
        if low < 1 and not getattr(base_task, 'supports_empty_kinds', False):
            raise TaskDistributionError(
                f'{where}: {name} min is {low}, but task {type(base_task).__name__} cannot observe '
                f'zero {kind} (its lidar fails on an empty list); allowed >= 1, or use a task with '
                'task_distributions.tasks.EmptyKindsMixin',
            )


def _agent_start_half_width(
    base_task: Any,
    bounds: Mapping[str, tuple[float, float]],
) -> float:
    """Largest |x| or |y| the agent can start at."""
    if 'start_range' in bounds:
        return bounds['start_range'][1]
    agent = base_task.agent
    if agent.locations:
        return max(max(abs(x), abs(y)) for x, y in agent.locations)
    if agent.placements is not None:
        return max(abs(value) for placement in agent.placements for value in placement)
    return _spawn_half_widths(base_task, bounds)[1]


def _spawn_half_widths(
    base_task: Any,
    bounds: Mapping[str, tuple[float, float]],
) -> tuple[float, float]:
    """(smallest, largest) half-width of the placement square (``placements_conf.extents``)."""
    if 'spawn_range' in bounds:
        return bounds['spawn_range']
    xmin, ymin, xmax, ymax = base_task.placements_conf.extents
    return min(xmax - xmin, ymax - ymin) / 2, max(abs(xmin), abs(ymin), abs(xmax), abs(ymax))


def _check_walls(base_task: Any, bounds: Mapping[str, tuple[float, float]], where: str) -> None:
    sigwalls = getattr(base_task, 'sigwalls', None)
    if sigwalls is None or not sigwalls.is_constrained:
        return
    if 'wall_scale' in bounds:
        radius = bounds['radius'][0] if 'radius' in bounds else base_task.circle.radius
        wall = bounds['wall_scale'][0] * radius
        wall_text = f'{wall:.4g} (= wall_scale {bounds["wall_scale"][0]} x radius {radius})'
    else:
        wall = sigwalls.locate_factor
        wall_text = f'{wall:.4g} (the env default)'
    start = _agent_start_half_width(base_task, bounds)
    if start >= wall:
        raise TaskDistributionError(
            f'{where}: the agent starts anywhere in +-{start:.4g}, which reaches the walls at '
            f'+-{wall_text}: the start would cost (safety-gymnasium: "World has starting cost!"); '
            f'allowed start_range < {wall:.4g} (set start_range, or raise wall_scale/radius)',
        )


def _check_placements(
    base_task: Any,
    bounds: Mapping[str, tuple[float, float]],
    where: str,
    fallback: _HazardsFallback | None,
) -> None:
    half_width, largest = _spawn_half_widths(base_task, bounds)
    floor = float(base_task.floor_conf.size[0])
    if largest > floor:
        raise TaskDistributionError(
            f'{where}: spawn_range {largest:.4g} reaches beyond the floor (half-size {floor}); '
            f'allowed spawn_range <= {floor}',
        )
    margin = float(base_task.placements_conf.margin or 0.0)
    # Everything drawn from the spawn square: the agent if it has no placements of its own, and
    # every object beyond its fixed ``locations``.
    placed: list[tuple[str, int, float]] = []
    agent = base_task.agent
    if agent.placements is None and not agent.locations and 'start_range' not in bounds:
        placed.append(('agent', 1, float(agent.keepout)))
    for obstacle in base_task._obstacles:
        if _has_own_square(obstacle, bounds, fallback):
            continue  # placed in a square of its own (hazards: see _check_hazard_square)
        count = int(bounds[obstacle.name][1]) if obstacle.name in bounds else _count(obstacle)
        count -= len(getattr(obstacle, 'locations', None) or [])
        if count > 0:
            placed.append((obstacle.name, count, _keepout(obstacle, bounds, fallback)))
    if not placed:
        return
    for name, _, keepout in placed:
        if keepout + margin / 2 > half_width:
            raise TaskDistributionError(
                f'{where}: spawn_range {half_width:.4g} is smaller than the keepout {keepout} of '
                f'{name}; allowed spawn_range > {keepout + margin / 2:.4g}',
            )
    covered = sum(count * math.pi * (keepout + margin / 2) ** 2 for _, count, keepout in placed)
    density = covered / (2 * half_width) ** 2
    if density > MAX_PLACEMENT_DENSITY:
        needed = math.sqrt(covered / MAX_PLACEMENT_DENSITY) / 2
        listing = ', '.join(f'{n} {name} (keepout {keepout})' for name, n, keepout in placed)
        raise TaskDistributionError(
            f'{where}: {listing} do not fit in spawn_range {half_width:.4g}: their keepout disks '
            f'cover {density:.0%} of the square, allowed <= {MAX_PLACEMENT_DENSITY:.0%} (above it '
            f"safety-gymnasium's rejection sampling stalls or fails); use spawn_range >= "
            f'{needed:.3g} or fewer objects',
        )


def _count(obstacle: Any) -> int:
    return int(getattr(obstacle, 'num', 1))


def _has_own_square(
    obstacle: Any,
    bounds: Mapping[str, tuple[float, float]],
    fallback: _HazardsFallback | None,
) -> bool:
    """Whether ``obstacle`` is placed in placements of its own rather than the spawn square."""
    if obstacle.name == 'hazards' and fallback is not None:
        return 'hazard_range' in bounds or fallback.placements is not None
    return getattr(obstacle, 'placements', None) is not None


def _keepout(
    obstacle: Any,
    bounds: Mapping[str, tuple[float, float]],
    fallback: _HazardsFallback | None,
) -> float:
    """Largest keepout ``obstacle`` can have (the crowding worst case)."""
    if obstacle.name == 'hazards' and fallback is not None:
        if 'hazard_keepout' in bounds:
            return float(bounds['hazard_keepout'][1])
        return float(fallback.keepout)
    return float(obstacle.keepout)


def _check_hazard_square(
    base_task: Any,
    bounds: Mapping[str, tuple[float, float]],
    where: str,
    fallback: _HazardsFallback | None,
) -> None:
    """Hazards in a square of their own (``hazard_range``) fit in it.

    safety-gymnasium shrinks a placement square by the object's keepout and fails with "Failed to
    find any placements with satisfy keepout" when nothing is left; a crowded square stalls its
    rejection sampling as the spawn square does (``MAX_PLACEMENT_DENSITY``).
    """
    hazards = getattr(base_task, 'hazards', None)
    if hazards is None or 'hazard_range' not in bounds:
        return
    smallest, largest = bounds['hazard_range']
    floor = float(base_task.floor_conf.size[0])
    if largest > floor:
        raise TaskDistributionError(
            f'{where}: hazard_range {largest:.4g} reaches beyond the floor (half-size {floor}); '
            f'allowed hazard_range <= {floor}',
        )
    keepout = _keepout(hazards, bounds, fallback)
    margin = float(base_task.placements_conf.margin or 0.0)
    if smallest <= keepout:
        raise TaskDistributionError(
            f'{where}: hazard_range {smallest:.4g} <= hazard keepout {keepout:.4g}: no hazard '
            'centre fits in the square (safety-gymnasium places centres within +-(range - '
            f'keepout)); allowed hazard_range > {keepout:.4g}',
        )
    count = int(bounds['hazards'][1]) if 'hazards' in bounds else _count(hazards)
    count -= len(hazards.locations or [])
    covered = count * math.pi * (keepout + margin / 2) ** 2
    density = covered / (2 * smallest) ** 2
    if density > MAX_PLACEMENT_DENSITY:
        needed = math.sqrt(covered / MAX_PLACEMENT_DENSITY) / 2
        raise TaskDistributionError(
            f'{where}: {count} hazards (keepout {keepout:.4g}) do not fit in hazard_range '
            f'{smallest:.4g}: their keepout disks cover {density:.0%} of the square, allowed <= '
            f"{MAX_PLACEMENT_DENSITY:.0%} (above it safety-gymnasium's rejection sampling stalls "
            f'or fails); use hazard_range >= {needed:.3g}, fewer hazards or a smaller keepout',
        )


def _check_start_outside_hazards(
    base_task: Any,
    bounds: Mapping[str, tuple[float, float]],
    where: str,
    fallback: _HazardsFallback | None,
) -> None:
    """The start is outside every hazard iff keepouts keep the agent beyond the hazard's radius.

    The layout sampler keeps a hazard's centre at least ``hazard keepout + agent keepout +
    margin`` from the agent; a hazard costs within ``hazard_size``. The worst case is the
    smallest keepout with the largest size.
    """
    hazards = getattr(base_task, 'hazards', None)
    if hazards is None or not hazards.is_constrained:
        return
    keepout = bounds['hazard_keepout'][0] if 'hazard_keepout' in bounds else fallback.keepout
    size = bounds['hazard_size'][1] if 'hazard_size' in bounds else fallback.size
    distance = keepout + base_task.agent.keepout + float(base_task.placements_conf.margin)
    if distance <= size:
        raise TaskDistributionError(
            f'{where}: hazard keepout {keepout:.4g} + agent keepout {base_task.agent.keepout} '
            f'<= hazard size {size:.4g}: the agent could start inside a hazard ("World has '
            f'starting cost!"); allowed hazard_keepout > {size - distance + keepout:.4g} or '
            f'hazard_size < {distance:.4g}',
        )
