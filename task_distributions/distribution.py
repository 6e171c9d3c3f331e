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

Derived parameters: ``equal: {a: b}`` sets ``a = b`` and ``offset: {a: [b, k]}`` sets ``a = b + k``
from the value drawn for ``b`` (``offset: {hazards: [buttons, 3]}``: n_h = n_b + 3). A rule written
at the distribution's level applies to every split; written inside a split it applies to that
split only, so that one split may derive a parameter that another sets itself (the authors'
Point-Button: n_h = n_b + 3 in training, one fixed test task with 8 buttons and 14 hazards).
"""

from __future__ import annotations

import math
import numbers
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
class DerivedParameter:
    """A parameter computed from another one of the same task: ``name = source + offset``.

    Attributes:
        name: The derived parameter.
        source: The parameter it is computed from (drawn or constant in the same split).
        offset: Added to the source's value (0 for ``equal``; an integer for counts).
    """

    name: str
    source: str
    offset: float | int = 0

    def value(self, source_value: float | int) -> float | int:
        """The derived value for the source's value ``source_value``."""
        return source_value + self.offset

    def as_rule(self) -> dict[str, Any]:
        """The YAML rule that defines it: ``{'equal': {a: b}}`` or ``{'offset': {a: [b, k]}}``."""
        if self.offset == 0:
            return {'equal': {self.name: self.source}}
        return {'offset': {self.name: [self.source, self.offset]}}


@dataclass(frozen=True)
class Split:
    """The parameter ranges of one split (``train`` or ``test``) and its derived parameters."""

    name: str
    ranges: Mapping[str, ParameterRange]
    derived: Mapping[str, DerivedParameter] = field(default_factory=dict)

    @property
    def parameters(self) -> frozenset[str]:
        """Every parameter a task of this split sets (drawn, constant or derived)."""
        return frozenset(self.ranges) | frozenset(self.derived)

    def bounds(self, name: str) -> tuple[float, float]:
        """``(low, high)`` of parameter ``name`` (derived ones included)."""
        if name in self.derived:
            rule = self.derived[name]
            low, high = self.bounds(rule.source)
            return rule.value(low), rule.value(high)
        param = self.ranges[name]
        return param.low, param.high


@dataclass(frozen=True)
class TaskDistribution:
    """A named distribution over :class:`Task` parameters with several splits.

    Attributes:
        name: Distribution name (the YAML key).
        splits: Split name -> ranges and derived parameters; ``train`` and ``test`` always exist.
        description: Free text.
    """

    name: str
    splits: Mapping[str, Split]
    description: str = ''

    @property
    def parameters(self) -> tuple[str, ...]:
        """Parameters a task of this distribution sets (drawn, constant or derived)."""
        names = next(iter(self.splits.values())).parameters
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
        chosen = self.split(split)
        values: dict[str, float | int] = {}
        for name in PARAMETER_ORDER:
            if name in chosen.ranges:
                values[name] = chosen.ranges[name].sample(rng)
        for rule in chosen.derived.values():
            values[rule.name] = rule.value(values[rule.source])
        return Task(**values)

    def contains(self, task: Task, split: str) -> bool:
        """Whether every parameter of ``task`` lies inside ``split``'s ranges and rules."""
        chosen = self.split(split)
        values = task.as_dict()
        if set(values) != set(chosen.parameters):
            return False
        inside = all(chosen.ranges[name].contains(values[name]) for name in chosen.ranges)
        return inside and all(
            values[rule.name] == rule.value(values[rule.source])
            for rule in chosen.derived.values()
        )

    def sampler(self, split: str = 'train', seed: int | None = None) -> TaskSampler:
        """A seeded stream of tasks of ``split``."""
        return TaskSampler(self, split, seed)

    def worst_case(self, split: str) -> dict[str, tuple[float, float]]:
        """``(low, high)`` per parameter of ``split``, derived parameters included."""
        chosen = self.split(split)
        return {name: chosen.bounds(name) for name in chosen.parameters}

    def is_fixed(self, split: str) -> bool:
        """Whether ``split`` always gives the same task (every parameter a constant)."""
        return all(param.low == param.high for param in self.split(split).ranges.values())

    @classmethod
    def from_config(cls, name: str, config: Mapping[str, Any]) -> TaskDistribution:
        """Build and validate a distribution from its YAML mapping.

        Raises:
            TaskDistributionError: Naming the field (``<name>.<split>.<parameter>``) and what is
                allowed, for unknown keys, parameters or splits, ``min > max``, negative values,
                non-integer counts, bad ``equal``/``offset`` rules, or splits that set different
                parameters.
        """
        where = f'distribution {name!r}'
        if not isinstance(config, Mapping):
            raise TaskDistributionError(f'{where}: expected a mapping, got {config!r}')
        meta_keys = {'description', *RULE_KEYS}
        split_configs = {key: value for key, value in config.items() if key not in meta_keys}
        missing = [split for split in REQUIRED_SPLITS if split not in split_configs]
        if missing:
            raise TaskDistributionError(
                f'{where}: missing split(s) {missing}; every distribution needs '
                f'{list(REQUIRED_SPLITS)} (plus optional extra splits) and may set '
                f'{sorted(meta_keys)}',
            )
        shared = _parse_rules(where, config)
        splits = {
            split: _parse_split(f'{where}, split {split!r}', split, ranges, shared)
            for split, ranges in split_configs.items()
        }
        reference = splits[REQUIRED_SPLITS[0]].parameters
        for split in splits.values():
            if split.parameters != reference:
                raise TaskDistributionError(
                    f'{where}: split {split.name!r} sets {sorted(split.parameters)} but split '
                    f'{REQUIRED_SPLITS[0]!r} sets {sorted(reference)}; all splits must set the '
                    'same parameters (drawn, constant or derived by equal/offset)',
                )
        return cls(name=name, splits=splits, description=str(config.get('description', '')))


#: Keys of a distribution or of a split that hold rules for derived parameters, not parameters.
RULE_KEYS: tuple[str, ...] = ('equal', 'offset')


def _parse_rules(where: str, config: Mapping[str, Any]) -> dict[str, DerivedParameter]:
    """Parse the ``equal`` and ``offset`` rules of a distribution or split mapping.

    Checks the form and the names here; that the source is set and the values are valid depends
    on the split's ranges (:func:`_check_rules`).
    """
    rules: dict[str, DerivedParameter] = {}
    for key in RULE_KEYS:
        block = config.get(key)
        if block is None:
            continue
        form = '{<parameter>: <parameter>}' if key == 'equal' else (
            '{<parameter>: [<parameter>, <number>]}')
        if not isinstance(block, Mapping) or not block:
            raise TaskDistributionError(
                f'{where}, {key}: expected a non-empty mapping {form}, got {block!r}',
            )
        for derived, spec in block.items():
            field_name = f'{where}, {key}.{derived}'
            if key == 'equal':
                source, offset = spec, 0
            else:
                if (
                    not isinstance(spec, (list, tuple))
                    or len(spec) != 2
                    or isinstance(spec[1], bool)
                    or not isinstance(spec[1], numbers.Real)
                ):
                    raise TaskDistributionError(
                        f'{field_name}: expected [<parameter>, <number>] (e.g. offset: '
                        f'{{hazards: [buttons, 3]}} for n_h = n_b + 3), got {spec!r}',
                    )
                source, offset = spec
            for role, value in (('derived parameter', derived), ('source', source)):
                if not isinstance(value, str) or value not in PARAMETER_DOCS:
                    raise TaskDistributionError(
                        f'{field_name}: {role} {value!r} is not a parameter; allowed: '
                        f'{sorted(PARAMETER_DOCS)}',
                    )
            if derived == source:
                raise TaskDistributionError(f'{field_name}: a parameter cannot derive from itself')
            if derived in rules:
                raise TaskDistributionError(
                    f'{field_name}: {derived!r} is already derived by '
                    f'{rules[derived].as_rule()}; give one rule per parameter',
                )
            if (derived in INTEGER_PARAMETERS) != (source in INTEGER_PARAMETERS):
                raise TaskDistributionError(
                    f'{field_name}: {derived!r} and {source!r} must both be counts '
                    f'({sorted(INTEGER_PARAMETERS)}) or both be lengths',
                )
            if derived in INTEGER_PARAMETERS:
                if int(offset) != offset:
                    raise TaskDistributionError(
                        f'{field_name}: {derived!r} is a count; the offset must be an integer, '
                        f'got {offset!r}',
                    )
                offset = int(offset)
            else:
                offset = float(offset)
                if not math.isfinite(offset):
                    raise TaskDistributionError(
                        f'{field_name}: the offset must be a finite number, got {offset!r}',
                    )
            rules[derived] = DerivedParameter(derived, source, offset)
    return rules


def _parse_split(
    where: str,
    split: str,
    config: Any,
    shared: Mapping[str, DerivedParameter],
) -> Split:
    """Parse ``{parameter: [low, high] | value, equal: ..., offset: ...}`` of one split.

    Args:
        where: Prefix of error messages.
        split: Split name.
        config: The split's YAML mapping.
        shared: Rules written at the distribution's level (they apply to every split).
    """
    if not isinstance(config, Mapping) or not config:
        raise TaskDistributionError(
            f'{where}: expected a non-empty mapping parameter -> [min, max] or value, got '
            f'{config!r}; parameters: {sorted(PARAMETER_DOCS)}',
        )
    own = _parse_rules(where, config)
    twice = sorted(set(own) & set(shared))
    if twice:
        raise TaskDistributionError(
            f'{where}: {twice} derived both by the distribution\'s rules and by the split\'s; '
            'give one rule per parameter',
        )
    derived = {**shared, **own}
    ranges: dict[str, ParameterRange] = {}
    for name, value in config.items():
        if name in RULE_KEYS:
            continue
        if name not in PARAMETER_DOCS:
            raise TaskDistributionError(
                f'{where}: unknown parameter {name!r}; allowed: {sorted(PARAMETER_DOCS)} '
                f'(and the rules {list(RULE_KEYS)})',
            )
        if name in derived:
            raise TaskDistributionError(
                f'{where}: {name!r} is set by `{derived[name].as_rule()}` and must not have its '
                'own range',
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
    result = Split(split, ranges, derived)
    _check_rules(where, result)
    return result


def _check_rules(where: str, split: Split) -> None:
    """Every rule's source is drawn or constant in ``split`` and its values are valid there."""
    for rule in split.derived.values():
        field_name = f'{where}, {next(iter(rule.as_rule()))}.{rule.name}'
        if rule.source not in split.ranges:
            hint = (
                f'{rule.source!r} is itself derived; derive both from a drawn parameter'
                if rule.source in split.derived
                else f'set {rule.source!r} in the split'
            )
            raise TaskDistributionError(
                f'{field_name}: {rule.name!r} derives from {rule.source!r}, which this split '
                f'does not draw: {hint}',
            )
        for bound, value in zip(('min', 'max'), split.bounds(rule.name), strict=True):
            try:
                Task(**{rule.name: value})
            except TaskDistributionError as error:
                raise TaskDistributionError(
                    f'{field_name}: at {rule.source} {bound} the derived {rule.name} is '
                    f'{value!r}: {error}',
                ) from None


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
