"""The rule that keeps OmniSafe's observation normaliser identical on all ranks."""

from __future__ import annotations

from collections.abc import Callable

import torch

from omnisafe_metacpo.distributed.collectives import gather_rows, world_size


class NormalizerSync:
    """Keeps OmniSafe's observation normaliser identical on all ranks (the documented rule).

    During a meta-iteration each rank's normaliser is updated, as on one rank, by the
    observations of its own rollouts (so it lags the other ranks' observations by at most one
    meta-iteration). At the end of the iteration every rank returns to the state it had at the
    iteration's start, which all ranks shared, and pushes the raw observations of all ranks,
    in rank order, with the normaliser's ``_push`` (OmniSafe's arithmetic, bit for bit, through
    :mod:`omnisafe_metacpo.sampling.fast_normalizer`): afterwards every normaliser holds
    the statistics of every observation of the run, and all ranks hold the same bits.

    The raw observations a rank pushes are recorded by wrapping the normaliser instance's
    ``_push`` (what OmniSafe's ``ObsNormalize`` wrapper, through ``normalize``, and the batched
    sampler, through ``fast_normalizer.normalize``, call); with one rank nothing is wrapped and
    nothing changes.

    Args:
        normalizer: The adapter's running normaliser, or ``None``.
    """

    def __init__(self, normalizer: torch.nn.Module | None) -> None:
        self._normalizer = normalizer
        self._pushed: list[torch.Tensor] = []
        self._start: dict[str, torch.Tensor] | None = None
        self._push: Callable[[torch.Tensor], None] | None = None
        if normalizer is None or world_size() == 1:
            return
        self._push = normalizer._push  # pylint: disable=protected-access
        shape = tuple(normalizer.shape)

        def recording_push(raw_data: torch.Tensor) -> None:
            self._pushed.append(raw_data.detach().reshape(-1, *shape).clone())
            assert self._push is not None
            self._push(raw_data)

        normalizer._push = recording_push  # type: ignore[method-assign]

    def begin(self) -> None:
        """Remember the shared state at the start of a meta-iteration."""
        if self._push is None or self._normalizer is None:
            return
        # Clones: ``_push`` updates the buffers in place.
        self._start = {k: v.clone() for k, v in self._normalizer.state_dict().items()}
        self._pushed = []

    def end(self) -> None:
        """Replace each rank's state by the start state plus every rank's observations."""
        if self._push is None or self._normalizer is None or self._start is None:
            return
        shape = tuple(self._normalizer.shape)
        local = torch.cat(self._pushed) if self._pushed else torch.empty((0, *shape))
        union = torch.cat(gather_rows(local))
        self._normalizer.load_state_dict(self._start)
        if union.shape[0] > 0:
            self._push(union)
        self._pushed = []
        self._start = None
