"""One task: the parameters that make an episode's world (Table 1 of Meta-CPO)."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from task_distributions.errors import TaskDistributionError

#: What each parameter means in the simulated world (see ``wrapper.apply_task``).
PARAMETER_DOCS: dict[str, str] = {
    'radius': 'circle radius r_c (the reward uses it)',
    'wall_scale': 'wall scale s: the sigwalls stand at x = +-s * r_c',
    'hazards': 'number of hazards n_h',
    'buttons': 'number of buttons n_b',
    'spawn_range': 'half-width r_s of the square in which objects are placed',
    'start_range': "half-width of the agent's start square (Circle tasks)",
    # Added after the Table 1 parameters: the draw order is this dict's order, so appending keeps
    # every existing distribution's seeded task stream unchanged.
    'hazard_size': (
        'hazard radius: a step with the agent this close to a hazard centre costs (stock 0.2)'
    ),
    'hazard_keepout': (
        "keepout radius of each hazard when a layout is drawn: no other object's keepout disk "
        'may overlap it, and its centre stays this far inside its placement square'
    ),
    'hazard_range': (
        'half-width of the square in which hazards are placed (their own square; without it '
        'they share the spawn square)'
    ),
}
#: Parameters that are counts: drawn as integers, bounds inclusive.
INTEGER_PARAMETERS: frozenset[str] = frozenset({'hazards', 'buttons'})
#: Parameters that must be strictly positive (a zero radius or range is no world).
POSITIVE_PARAMETERS: frozenset[str] = frozenset(
    {'radius', 'wall_scale', 'spawn_range', 'start_range', 'hazard_size', 'hazard_keepout',
     'hazard_range'},
)


@dataclass(frozen=True)
class Task:
    """The parameters of one task; ``None`` means "not varied: keep the environment's default".

    Attributes:
        radius: Circle radius r_c.
        wall_scale: Wall scale s; the walls stand at ``s * r_c``.
        hazards: Number of hazards.
        buttons: Number of buttons.
        spawn_range: Half-width of the square in which objects are placed.
        start_range: Half-width of the agent's start square (Circle tasks, whose agent does not
            start anywhere in the spawn range).
        hazard_size: Hazard radius (safety-gymnasium's ``Hazards.size``): the drawn disc and the
            distance within which a step costs.
        hazard_keepout: Keepout radius of each hazard in layout sampling (``Hazards.keepout``).
        hazard_range: Half-width of the square in which hazards are placed
            (``Hazards.placements``); ``None`` places them in the spawn square.
    """

    radius: float | None = None
    wall_scale: float | None = None
    hazards: int | None = None
    buttons: int | None = None
    spawn_range: float | None = None
    start_range: float | None = None
    hazard_size: float | None = None
    hazard_keepout: float | None = None
    hazard_range: float | None = None

    def __post_init__(self) -> None:
        # Values arrive from YAML, numpy samplers and users: normalise them to plain Python numbers
        # (so that ``as_dict`` is JSON-friendly and equality does not depend on the numeric type)
        # and reject what no world can be built from.
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            object.__setattr__(self, field.name, _checked_value(field.name, value))

    def as_dict(self) -> dict[str, float | int]:
        """The parameters that are set, e.g. ``{'radius': 1.2, 'wall_scale': 0.7}``."""
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if getattr(self, field.name) is not None
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Task:
        """Build a task from a mapping such as :meth:`as_dict` returns.

        Raises:
            TaskDistributionError: On an unknown parameter name or a bad value.
        """
        unknown = sorted(set(values) - set(PARAMETER_DOCS))
        if unknown:
            raise TaskDistributionError(
                f'unknown task parameter(s) {unknown}; allowed: {sorted(PARAMETER_DOCS)}',
            )
        return cls(**dict(values))

    def __str__(self) -> str:
        inner = ', '.join(
            f'{key}={value:.4g}' if isinstance(value, float) else f'{key}={value}'
            for key, value in self.as_dict().items()
        )
        return f'Task({inner})'


def _checked_value(name: str, value: Any) -> float | int:
    """Return ``value`` as a plain ``int``/``float`` after checking type and sign."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TaskDistributionError(f'task parameter {name!r} must be a number, got {value!r}')
    if name in INTEGER_PARAMETERS:
        if int(value) != value:
            raise TaskDistributionError(
                f'task parameter {name!r} is a count and must be an integer >= 0, got {value!r}',
            )
        value = int(value)
        if value < 0:
            raise TaskDistributionError(
                f'task parameter {name!r} is a count and must be an integer >= 0, got {value!r}',
            )
        return value
    value = float(value)
    if not value > 0.0 or value == float('inf'):
        raise TaskDistributionError(
            f'task parameter {name!r} ({PARAMETER_DOCS[name]}) must be a finite number > 0, '
            f'got {value!r}',
        )
    return value
