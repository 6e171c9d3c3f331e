"""This process's share of a meta-iteration, behind one object: :class:`Ranks`.

Everything MetaCPO does differently because several torchrun ranks share a meta-iteration goes
through the methods of a :class:`Ranks` (:mod:`omnisafe_metacpo.distributed.collectives` says
why every rank's result is the same, bit for bit). Without torchrun the algorithm gets a
:class:`SingleProcess`, whose methods are the identity or do nothing: one process holds every
task, and a single-process run takes no path that exists only for ranks.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from omnisafe_metacpo.distributed import collectives, health
from omnisafe_metacpo.distributed.launch import backend
from omnisafe_metacpo.distributed.normalizer_sync import NormalizerSync


class Ranks:
    """The ranks of a torchrun run, seen from one of them.

    Args:
        num_tasks: M, the tasks of every meta-iteration (spread over the ranks).
    """

    def __init__(self, num_tasks: int) -> None:
        self.num_tasks = num_tasks
        #: The tasks of this rank among the M of a meta-iteration: rank, rank + N, ...
        self.indices: list[int] = collectives.task_indices(num_tasks)
        #: Every rank's state digest after the last meta-iteration (:meth:`check_identical`).
        self.digests: list[str] = []

    @staticmethod
    def current(num_tasks: int) -> Ranks:
        """The ranks of this process: :class:`SingleProcess` without torchrun."""
        if collectives.world_size() == 1:
            return SingleProcess(num_tasks)
        return Ranks(num_tasks)

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, which alone meta-tests, saves and draws the progress bar."""
        return collectives.rank() == 0

    # -- start and end of a run ------------------------------------------------------------------
    def watch_launcher(self) -> None:
        """End this rank if its launcher dies (:class:`health.LauncherWatchdog`)."""
        health.LauncherWatchdog().start()

    def failures(self, timeout: float) -> contextlib.AbstractContextManager[None]:
        """An error of this rank names the rank and stops the others
        (:func:`health.rank_failures`)."""
        return health.rank_failures(timeout)

    def describe(self, train_cfgs: Any) -> list[str]:
        """Log lines: how the tasks are spread over the ranks, and each rank's pid."""
        size = collectives.world_size()
        pids = [int(p) for p in collectives.gather_rows(torch.tensor([os.getpid()]))]
        shares = [len(range(r, self.num_tasks, size)) for r in range(size)]
        return [f'INFO: {size} ranks ({backend(train_cfgs.device)}, collectives time out after '
                f'train_cfgs.dist_timeout = {train_cfgs.dist_timeout} s); tasks per rank '
                f'{shares}; rank pids {pids}']

    def report(self) -> list[str]:
        """Log lines at the end of a run: the ranks' last state digests."""
        return [f'INFO: state digest per rank after the last meta-iteration: {self.digests} '
                '(theta, critics and their optimisers, normaliser)']

    # -- during a meta-iteration -----------------------------------------------------------------
    def normalizer_sync(self, normalizer: torch.nn.Module | None) -> NormalizerSync:
        """The rule that keeps ``normalizer`` identical on all ranks (:class:`NormalizerSync`)."""
        return NormalizerSync(normalizer)

    def gather_tasks(self, local: torch.Tensor) -> torch.Tensor:
        """One row per task of :attr:`indices` -> one row per task of the M, in task order."""
        return collectives.gather_tasks(local, self.num_tasks)

    def gather_task_data(self, local: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """One tensor per task of :attr:`indices` -> one per task of the M, in task order."""
        return collectives.gather_task_data(local, self.num_tasks)

    def mean_over(self, weight: float) -> Callable[[torch.Tensor], torch.Tensor]:
        """A function that turns this rank's mean over ``weight`` samples into the mean over
        every rank's samples (weighted by their numbers)."""
        return lambda local_mean: collectives.weighted_average(local_mean, weight)

    def store_once(self, logger: Any, values: dict[str, Any]) -> None:
        """Log values that every rank holds (reduced over all tasks) once, from rank 0.

        OmniSafe's logger averages a key over every value stored on every rank, so a value known
        to all ranks is stored by rank 0 alone; values that differ (timings) are stored by every
        rank with ``logger.store`` (their mean is logged).
        """
        if self.is_main:
            logger.store(values)

    def owns(self, index: int) -> bool:
        """Whether this rank computes item ``index`` of a few independent ones (``index % N``)."""
        return collectives.owner(index) == collectives.rank()

    def share_from_owner(self, index: int, module: torch.nn.Module,
                         optimizer: torch.optim.Optimizer) -> None:
        """Give every rank the owner's ``module`` and ``optimizer`` state of item ``index``."""
        collectives.share_from(collectives.owner(index), module, optimizer)

    def local_gradients(self) -> contextlib.AbstractContextManager[None]:
        """OmniSafe's per-minibatch gradient averaging off (:func:`collectives.local_gradients`)."""
        return collectives.local_gradients()

    def check_identical(self, tensors: Sequence[torch.Tensor], what: str) -> None:
        """Raise unless every rank holds the same ``tensors`` (keeps the digests for
        :meth:`report`)."""
        self.digests = health.check_identical(health.state_digest(tensors), what)


class _NoSync:
    """:class:`NormalizerSync` of a single process: nothing to do."""

    def begin(self) -> None:
        """Nothing to remember."""

    def end(self) -> None:
        """Nothing to merge."""


class SingleProcess(Ranks):
    """One process that holds every task: gathers are the identity, nothing is checked or shared."""

    def __init__(self, num_tasks: int) -> None:
        super().__init__(num_tasks)
        self.indices = list(range(num_tasks))

    @property
    def is_main(self) -> bool:
        return True

    def watch_launcher(self) -> None:
        pass

    def failures(self, timeout: float) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def describe(self, train_cfgs: Any) -> list[str]:
        return []

    def report(self) -> list[str]:
        return []

    def normalizer_sync(self, normalizer: torch.nn.Module | None) -> _NoSync:  # type: ignore[override]
        return _NoSync()

    def gather_tasks(self, local: torch.Tensor) -> torch.Tensor:
        return local

    def gather_task_data(self, local: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return list(local)

    def mean_over(self, weight: float) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda local_mean: local_mean

    def store_once(self, logger: Any, values: dict[str, Any]) -> None:
        logger.store(values)

    def owns(self, index: int) -> bool:
        return True

    def share_from_owner(self, index: int, module: torch.nn.Module,
                         optimizer: torch.optim.Optimizer) -> None:
        pass

    def local_gradients(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def check_identical(self, tensors: Sequence[torch.Tensor], what: str) -> None:
        pass
