"""The one error type of the package: bad task-distribution input, raised before training starts."""

from __future__ import annotations

from collections.abc import Iterable


class TaskDistributionError(ValueError):
    """A task distribution, a task or an environment id is invalid.

    The message names the offending field and the allowed values, so that a typo in
    ``configs/task_distributions.yaml`` or in a call is found at construction time, not hours into
    a training run.
    """


class UnknownEnvIdError(TaskDistributionError):
    """An environment id has no task distribution (the message lists the supported ids)."""

    def __init__(self, env_id: str, supported: Iterable[str]) -> None:
        self.env_id = env_id
        self.supported = tuple(sorted(supported))
        super().__init__(
            f'env id {env_id!r} has no task distribution; supported ids: '
            f'{", ".join(self.supported)} (add it under `envs:` in the task-distribution YAML)',
        )
