"""Distributions over task parameters with ``train`` and ``test`` splits, and seeded samplers.

A distribution is read from YAML (see ``configs/task_distributions.yaml``)::

    point_button:
      description: Point-Button (Table 1)
      equal: {hazards: buttons}          # n_h = n_b: hazards copies the drawn buttons value
      train: {buttons: [3, 6], spawn_range: [1.75, 2.0]}
      test:  {buttons: [6, 10], spawn_range: [2.5, 3.0]}

A ``[low, high]`` pair is drawn uniformly (integers with inclusive bounds for counts); a single
number is a constant. Every split must set the same parameters, so that a test task never falls
back to an environment default that a train task overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from task_distributions.errors import TaskDistributionError
from task_distributions.task import (
    INTEGER_PARAMETERS,
    PARAMETER_DOCS,
    Task,
)

#: Parameters are drawn in this fixed order (not the YAML's), so a sequence of tasks depends only on
#: the seed and the ranges.
PARAMETER_ORDER: tuple[str, ...] = tuple(PARAMETER_DOCS)
#: The splits every distribution must define (more may be added, e.g. ``val``).
REQUIRED_SPLITS: tuple[str, ...] = ('train', 'test')


@dataclass(frozen=True)
class ParameterRange:
    """A uniform range ``[low, high]`` for one parameter (integers, bounds inclusive, for counts).

    Attributes:
        name: Parameter name (a :class:`~task_distributions.task.Task` field).
        low: Lower bound.
        high: Upper bound (``low == high`` is a constant and draws no random number).
    """

    name: str
    low: float
    high: float

    def __post_init__(self) -> None:
        if self.name not in PARAMETER_DOCS:
            raise TaskDistributionError(
                f'unknown parameter {self.name!r}; allowed: {sorted(PARAMETER_DOCS)}',
            )
        # Reuse the Task checks (type, sign, integrality) for both bounds.
        for bound, value in (('min', self.low), ('max', self.high)):
            try:
                Task(**{self.name: value})
            except TaskDistributionError as error:
                raise TaskDistributionError(f'{self.name} {bound}: {error}') from None
        if self.low > self.high:
            raise TaskDistributionError(
                f'{self.name}: min {self.low} > max {self.high}; write [min, max] with min <= max',
            )

    @property
    def integer(self) -> bool:
        """Whether the parameter is a count (drawn as an integer)."""
        return self.name in INTEGER_PARAMETERS

    def sample(self, rng: np.random.Generator) -> float | int:
        """Draw one value uniformly from the range."""
        if self.low == self.high:
            return int(self.low) if self.integer else float(self.low)
        if self.integer:
            return int(rng.integers(int(self.low), int(self.high), endpoint=True))
        return float(rng.uniform(self.low, self.high))

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies inside the range (bounds included)."""
        return self.low <= value <= self.high

    def as_list(self) -> list[float]:
        """``[low, high]`` as written in YAML."""
        return [self.low, self.high]


@dataclass(frozen=True)
class Split:
    """The parameter ranges of one split (``train`` or ``test``)."""

    name: str
    ranges: Mapping[str, ParameterRange]

    def bounds(self, name: str) -> tuple[float, float]:
        """``(low, high)`` of parameter ``name``."""
        param = self.ranges[name]
        return param.low, param.high


@dataclass(frozen=True)
class TaskDistribution:
    """A named distribution over :class:`Task` parameters with several splits.

    Attributes:
        name: Distribution name (the YAML key).
        splits: Split name -> ranges; ``train`` and ``test`` always exist.
        equal: Derived parameter -> parameter whose drawn value it copies (e.g. ``hazards`` ->
            ``buttons`` for n_h = n_b).
        description: Free text.
    """

    name: str
    splits: Mapping[str, Split]
    equal: Mapping[str, str] = field(default_factory=dict)
    description: str = ''

    @property
    def parameters(self) -> tuple[str, ...]:
        """Parameters a task of this distribution sets (drawn, constant or copied)."""
        names = set(next(iter(self.splits.values())).ranges) | set(self.equal)
        return tuple(name for name in PARAMETER_ORDER if name in names)

    @property
    def split_names(self) -> tuple[str, ...]:
        """The split names."""
        return tuple(self.splits)

    def split(self, name: str) -> Split:
        """The split called ``name``.

        Raises:
            TaskDistributionError: If the distribution has no such split.
        """
        if name not in self.splits:
            raise TaskDistributionError(
                f'distribution {self.name!r} has no split {name!r}; allowed: {list(self.splits)}',
            )
        return self.splits[name]

    def sample(self, split: str, rng: np.random.Generator) -> Task:
        """Draw one task of ``split`` with ``rng``."""
        ranges = self.split(split).ranges
        values: dict[str, float | int] = {}
        for name in PARAMETER_ORDER:
            if name in ranges:
                values[name] = ranges[name].sample(rng)
        for derived, source in self.equal.items():
            values[derived] = values[source]
        return Task(**values)

    def contains(self, task: Task, split: str) -> bool:
        """Whether every parameter of ``task`` lies inside ``split``'s ranges."""
        ranges = self.split(split).ranges
        values = task.as_dict()
        if set(values) != set(self.parameters):
            return False
        inside = all(ranges[name].contains(values[name]) for name in ranges)
        return inside and all(values[d] == values[s] for d, s in self.equal.items())

    def sampler(self, split: str = 'train', seed: int | None = None) -> TaskSampler:
        """A seeded stream of tasks of ``split``."""
        return TaskSampler(self, split, seed)

    def worst_case(self, split: str) -> dict[str, tuple[float, float]]:
        """``(low, high)`` per parameter of ``split``, derived parameters included."""
        ranges = self.split(split).ranges
        bounds = {name: (param.low, param.high) for name, param in ranges.items()}
        for derived, source in self.equal.items():
            bounds[derived] = bounds[source]
        return bounds

    @classmethod
    def from_config(cls, name: str, config: Mapping[str, Any]) -> TaskDistribution:
        """Build and validate a distribution from its YAML mapping.

        Raises:
            TaskDistributionError: Naming the field (``<name>.<split>.<parameter>``) and what is
                allowed, for unknown keys, parameters or splits, ``min > max``, negative values,
                non-integer counts, or splits that set different parameters.
        """
        where = f'distribution {name!r}'
        if not isinstance(config, Mapping):
            raise TaskDistributionError(f'{where}: expected a mapping, got {config!r}')
        meta_keys = {'description', 'equal'}
        split_configs = {key: value for key, value in config.items() if key not in meta_keys}
        missing = [split for split in REQUIRED_SPLITS if split not in split_configs]
        if missing:
            raise TaskDistributionError(
                f'{where}: missing split(s) {missing}; every distribution needs '
                f'{list(REQUIRED_SPLITS)} (plus optional extra splits) and may set '
                f'{sorted(meta_keys)}',
            )
        equal = dict(config.get('equal') or {})
        splits = {
            split: _parse_split(f'{where}, split {split!r}', split, ranges, equal)
            for split, ranges in split_configs.items()
        }
        reference = set(splits[REQUIRED_SPLITS[0]].ranges)
        for split in splits.values():
            if set(split.ranges) != reference:
                raise TaskDistributionError(
                    f'{where}: split {split.name!r} sets {sorted(split.ranges)} but split '
                    f'{REQUIRED_SPLITS[0]!r} sets {sorted(reference)}; all splits must set the '
                    'same parameters',
                )
        for derived, source in equal.items():
            if derived not in PARAMETER_DOCS or source not in PARAMETER_DOCS:
                raise TaskDistributionError(
                    f'{where}, equal: {derived!r} -> {source!r}: unknown parameter; allowed: '
                    f'{sorted(PARAMETER_DOCS)}',
                )
            if source not in reference:
                raise TaskDistributionError(
                    f'{where}, equal: {derived!r} copies {source!r}, which no split sets; set '
                    f'{source!r} in every split',
                )
            if (derived in INTEGER_PARAMETERS) != (source in INTEGER_PARAMETERS):
                raise TaskDistributionError(
                    f'{where}, equal: {derived!r} and {source!r} must both be counts or both be '
                    'lengths',
                )
        return cls(
            name=name,
            splits=splits,
            equal=equal,
            description=str(config.get('description', '')),
        )


def _parse_split(where: str, split: str, config: Any, equal: Mapping[str, str]) -> Split:
    """Parse ``{parameter: [low, high] | value}`` of one split."""
    if not isinstance(config, Mapping) or not config:
        raise TaskDistributionError(
            f'{where}: expected a non-empty mapping parameter -> [min, max] or value, got '
            f'{config!r}; parameters: {sorted(PARAMETER_DOCS)}',
        )
    ranges: dict[str, ParameterRange] = {}
    for name, value in config.items():
        if name not in PARAMETER_DOCS:
            raise TaskDistributionError(
                f'{where}: unknown parameter {name!r}; allowed: {sorted(PARAMETER_DOCS)}',
            )
        if name in equal:
            raise TaskDistributionError(
                f'{where}: {name!r} is set by `equal: {{{name}: {equal[name]}}}` and must not '
                'have its own range',
            )
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                raise TaskDistributionError(
                    f'{where}, {name}: expected [min, max] or a single value, got {value!r}',
                )
            low, high = value
        else:
            low = high = value
        try:
            ranges[name] = ParameterRange(name, low, high)
        except TaskDistributionError as error:
            raise TaskDistributionError(f'{where}: {error}') from None
    return Split(split, ranges)


class TaskSampler:
    """A reproducible stream of tasks: the same seed gives the same sequence.

    Args:
        distribution: The distribution to draw from.
        split: Split name (``train``/``test``/...).
        seed: Seed of the stream (``numpy.random.Generator``); ``None`` draws fresh entropy.
    """

    def __init__(
        self,
        distribution: TaskDistribution,
        split: str = 'train',
        seed: int | None = None,
    ) -> None:
        distribution.split(split)  # fail now on an unknown split
        self.distribution = distribution
        self.split = split
        self.rng = np.random.default_rng(seed)

    def seed(self, seed: int | None) -> None:
        """Restart the stream from ``seed``."""
        self.rng = np.random.default_rng(seed)

    def sample(self) -> Task:
        """Draw the next task."""
        return self.distribution.sample(self.split, self.rng)

    def __iter__(self) -> TaskSampler:
        return self

    def __next__(self) -> Task:
        return self.sample()
