"""Reading ``configs/task_distributions.yaml``: distributions and the env id -> distribution map.

The defaults are two files of one directory, looked up, in order, at ``configs/`` next to this
package (a source checkout or an editable install) and inside the installed wheel
(``omnisafe_metacpo/_configs/``, where ``pyproject.toml`` puts ``configs/``):

* ``task_distributions.yaml`` -- Table 1 of the paper and the ids that use it (the default);
* ``task_distributions_authors.yaml`` -- the task settings of the authors' public code, under ids
  of their own (``MetaCarCircleHazardAuthors-v0``, ...), so that choosing them is choosing an env
  id. It is read second and only adds entries.

A user file named by the environment variable ``TASK_DISTRIBUTIONS_CONFIG`` is read after them: its
distributions and env entries are added to (or replace) the defaults, so a new distribution needs
no code.

This module imports neither safety-gymnasium nor torch: registration runs it while
``safety_gymnasium`` is being imported.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from task_distributions.distribution import TaskDistribution
from task_distributions.errors import TaskDistributionError, UnknownEnvIdError

#: Environment variable naming an extra YAML file read after the defaults.
CONFIG_ENV_VAR = 'TASK_DISTRIBUTIONS_CONFIG'
CONFIG_NAME = 'task_distributions.yaml'
#: The authors' task settings (read after ``CONFIG_NAME``, from the same directory).
AUTHORS_CONFIG_NAME = 'task_distributions_authors.yaml'
#: The default files, in the order they are read.
DEFAULT_CONFIG_NAMES: tuple[str, ...] = (CONFIG_NAME, AUTHORS_CONFIG_NAME)
_ENV_KEYS = frozenset({'distribution', 'task', 'agent', 'max_episode_steps', 'base_env'})
_NEW_ENV_KEYS = ('task', 'agent', 'max_episode_steps')
AGENTS = ('Point', 'Car', 'Doggo', 'Racecar', 'Ant')


@dataclass(frozen=True)
class EnvEntry:
    """What the YAML says about one env id.

    Attributes:
        env_id: The id (``MetaPointCircle-v0``, ``SafetyPointCircle1-v0``, ...).
        distribution: Name of its task distribution.
        task: ``module:Class`` of the safety-gymnasium task for ids this package registers; ``None``
            for stock safety-gymnasium ids.
        agent: Agent name for registered ids.
        max_episode_steps: Episode length for registered ids.
        base_env: The stock id a registered env derives from (speed baseline), if any.
    """

    env_id: str
    distribution: str
    task: str | None = None
    agent: str | None = None
    max_episode_steps: int | None = None
    base_env: str | None = None

    @property
    def is_custom(self) -> bool:
        """Whether this package registers the id (it names its own task class)."""
        return self.task is not None


@dataclass(frozen=True)
class TaskConfig:
    """All distributions and env entries, validated."""

    distributions: Mapping[str, TaskDistribution]
    envs: Mapping[str, EnvEntry]
    sources: tuple[str, ...]

    def distribution(self, name: str) -> TaskDistribution:
        """The distribution called ``name``.

        Raises:
            TaskDistributionError: Listing the known names if there is none.
        """
        if name not in self.distributions:
            raise TaskDistributionError(
                f'unknown task distribution {name!r}; allowed: {sorted(self.distributions)} '
                f'(defined in {", ".join(self.sources)})',
            )
        return self.distributions[name]

    def env(self, env_id: str) -> EnvEntry:
        """The entry of ``env_id``.

        Raises:
            UnknownEnvIdError: Listing the supported ids if there is none.
        """
        if env_id not in self.envs:
            raise UnknownEnvIdError(env_id, self.envs)
        return self.envs[env_id]


def default_config_dir() -> Path | None:
    """The directory holding the default YAML files: ``configs/`` or the wheel's ``_configs/``."""
    source = Path(__file__).resolve().parent.parent / 'configs'
    if (source / CONFIG_NAME).is_file():
        return source
    # Installed from a wheel: pyproject.toml force-includes configs/ as
    # omnisafe_metacpo/_configs (find_spec locates the package without importing it).
    spec = importlib.util.find_spec('omnisafe_metacpo')
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / '_configs'
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    return None


def default_config_paths() -> list[Path]:
    """The YAML files read, in order: the defaults, then the user's file.

    The defaults are ``DEFAULT_CONFIG_NAMES`` (Table 1, then the authors' settings) in
    :func:`default_config_dir`; the user's file is ``TASK_DISTRIBUTIONS_CONFIG`` if set.
    """
    paths: list[Path] = []
    directory = default_config_dir()
    if directory is not None:
        # The authors' file is optional: a trimmed copy of configs/ with Table 1 alone still works.
        paths.extend(
            directory / name for name in DEFAULT_CONFIG_NAMES if (directory / name).is_file()
        )
    user = os.environ.get(CONFIG_ENV_VAR)
    if user:
        paths.append(Path(user))
    if not paths:
        raise TaskDistributionError(
            f'no {CONFIG_NAME} found (looked next to the package and in '
            f'omnisafe_metacpo/_configs); set {CONFIG_ENV_VAR} to a file',
        )
    return paths


def load_config(paths: str | os.PathLike | list[str | os.PathLike] | None = None) -> TaskConfig:
    """Read and validate task-distribution YAML files (later files add to or replace earlier ones).

    Args:
        paths: One file or a list; ``None`` reads :func:`default_config_paths` (cached).

    Raises:
        TaskDistributionError: On a missing file, bad YAML, or an invalid entry (the message names
            the file and the field).
    """
    if paths is None:
        return _load_cached(tuple(str(path) for path in default_config_paths()))
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    return _load_cached(tuple(str(path) for path in paths))


def clear_cache() -> None:
    """Forget parsed files (after editing a YAML in the same process)."""
    _load_cached.cache_clear()


@functools.lru_cache(maxsize=8)
def _load_cached(paths: tuple[str, ...]) -> TaskConfig:
    raw_distributions: dict[str, tuple[str, Any]] = {}
    raw_envs: dict[str, tuple[str, Any]] = {}
    for path in paths:
        document = _read_yaml(path)
        unknown = sorted(set(document) - {'distributions', 'envs'})
        if unknown:
            raise TaskDistributionError(
                f'{path}: unknown top-level key(s) {unknown}; allowed: distributions, envs',
            )
        for section, target in (('distributions', raw_distributions), ('envs', raw_envs)):
            entries = document.get(section) or {}
            if not isinstance(entries, Mapping):
                raise TaskDistributionError(f'{path}: `{section}` must be a mapping')
            for name, entry in entries.items():
                target[str(name)] = (path, entry)

    distributions: dict[str, TaskDistribution] = {}
    for name, (path, entry) in raw_distributions.items():
        try:
            distributions[name] = TaskDistribution.from_config(name, entry)
        except TaskDistributionError as error:
            raise TaskDistributionError(f'{path}: {error}') from None
    envs = {
        env_id: _parse_env(path, env_id, entry, distributions)
        for env_id, (path, entry) in raw_envs.items()
    }
    return TaskConfig(distributions=distributions, envs=envs, sources=paths)


def _read_yaml(path: str) -> Mapping[str, Any]:
    try:
        with open(path, encoding='utf-8') as file:
            document = yaml.safe_load(file)
    except OSError as error:
        raise TaskDistributionError(f'cannot read task-distribution file {path}: {error}') from None
    except yaml.YAMLError as error:
        raise TaskDistributionError(f'{path}: invalid YAML: {error}') from None
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise TaskDistributionError(f'{path}: expected a mapping with `distributions` and `envs`')
    return document


def _parse_env(
    path: str,
    env_id: str,
    entry: Any,
    distributions: Mapping[str, TaskDistribution],
) -> EnvEntry:
    where = f'{path}: envs.{env_id}'
    if not isinstance(entry, Mapping):
        raise TaskDistributionError(f'{where}: expected a mapping with `distribution`')
    unknown = sorted(set(entry) - _ENV_KEYS)
    if unknown:
        raise TaskDistributionError(
            f'{where}: unknown key(s) {unknown}; allowed: {sorted(_ENV_KEYS)}',
        )
    name = entry.get('distribution')
    if name not in distributions:
        raise TaskDistributionError(
            f'{where}.distribution: {name!r} is not a distribution; allowed: '
            f'{sorted(distributions)}',
        )
    if 'task' in entry:
        missing = [key for key in _NEW_ENV_KEYS if key not in entry]
        if missing:
            raise TaskDistributionError(
                f'{where}: an env with its own `task` also needs {missing}',
            )
        if not isinstance(entry['task'], str) or ':' not in entry['task']:
            raise TaskDistributionError(
                f'{where}.task: expected "<module>:<class>", got {entry["task"]!r}',
            )
        if entry['agent'] not in AGENTS:
            raise TaskDistributionError(
                f'{where}.agent: {entry["agent"]!r} is not an agent; allowed: {list(AGENTS)}',
            )
        steps = entry['max_episode_steps']
        if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
            raise TaskDistributionError(
                f'{where}.max_episode_steps: expected an integer > 0, got {steps!r}',
            )
    else:
        extra = [key for key in _NEW_ENV_KEYS if key in entry]
        if extra:
            raise TaskDistributionError(
                f'{where}: {extra} only apply to an env with its own `task`; a stock id needs '
                'only `distribution`',
            )
    return EnvEntry(
        env_id=env_id,
        distribution=name,
        task=entry.get('task'),
        agent=entry.get('agent'),
        max_episode_steps=entry.get('max_episode_steps'),
        base_env=entry.get('base_env'),
    )


def get_distribution(name: str) -> TaskDistribution:
    """The distribution called ``name`` in the default configuration."""
    return load_config().distribution(name)


def distribution_for_env(env_id: str) -> TaskDistribution:
    """The task distribution of ``env_id``.

    Raises:
        UnknownEnvIdError: (a :class:`TaskDistributionError`) listing the supported ids.
    """
    config = load_config()
    return config.distribution(config.env(env_id).distribution)


def env_entry(env_id: str) -> EnvEntry:
    """The YAML entry of ``env_id`` (raises :class:`UnknownEnvIdError` for an unknown id)."""
    return load_config().env(env_id)


def supported_env_ids() -> tuple[str, ...]:
    """All env ids that have a task distribution, sorted."""
    return tuple(sorted(load_config().envs))


def meta_env_ids() -> tuple[str, ...]:
    """The ids this package registers (their YAML entry names a task class), sorted."""
    return tuple(sorted(env_id for env_id, entry in load_config().envs.items() if entry.is_custom))
