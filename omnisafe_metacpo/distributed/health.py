"""Whether the ranks are well: identical states, and failures that name the rank.

* :func:`check_identical`: a digest of each rank's state, compared after every meta-iteration;
* :func:`rank_failures` and :class:`LauncherWatchdog`: a rank that fails, or loses its launcher,
  ends the run with an error that names the rank, instead of leaving the others waiting.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist

from omnisafe_metacpo.distributed.collectives import all_gather, rank, world_size


class RankFailure(RuntimeError):
    """A rank of a distributed run failed; the message names the rank and the cause."""


class RanksDivergedError(RuntimeError):
    """The ranks' parameters, critics or normaliser are no longer identical."""


def state_digest(tensors: Sequence[torch.Tensor]) -> str:
    """SHA-256 of the bytes of ``tensors`` (order matters)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def gather_digests(digest: str) -> list[str]:
    """Every rank's hexadecimal digest, in rank order."""
    if world_size() == 1:
        return [digest]
    raw = torch.tensor(list(bytes.fromhex(digest)), dtype=torch.uint8)
    return [bytes(part.tolist()).hex() for part in all_gather(raw)]


def check_identical(digest: str, what: str) -> list[str]:
    """Compare this rank's digest with every rank's; raise if any differs.

    Every rank sees all digests, so all ranks raise together (no rank is left waiting).

    Returns:
        The digests of all ranks, in rank order.
    """
    digests = gather_digests(digest)
    if len(set(digests)) > 1:
        listing = ', '.join(f'rank {r}: {d[:16]}' for r, d in enumerate(digests))
        raise RanksDivergedError(f'{what} differ across ranks ({listing})')
    return digests


@contextlib.contextmanager
def rank_failures(timeout: float | None) -> Iterator[None]:
    """Turn an exception of this rank into a :class:`RankFailure` that names the rank.

    With several ranks, the error is printed (every rank's stderr reaches the launcher) and
    recorded in torchrun's error file (``TORCHELASTIC_ERROR_FILE``, what ``@record`` writes), so
    torchrun's summary shows the rank and the cause; torchrun then stops the other ranks. A
    collective that fails because another rank died or hangs says so.

    Args:
        timeout: ``train_cfgs.dist_timeout``, quoted in the message of a timed-out collective.
    """
    try:
        yield
    except Exception as exc:
        if world_size() == 1:
            raise
        from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

        cause = f'{type(exc).__name__}: {exc}'.strip()
        # gloo raises a plain RuntimeError from its sources (".../gloo/transport/...").
        if isinstance(exc, dist.DistError) or '/gloo/' in cause:
            cause += (' [a collective failed: another rank died, or did not answer within '
                      f'train_cfgs.dist_timeout = {timeout} s]')
        error = RankFailure(f'rank {rank()} of {world_size()} failed: {cause}')
        print(f'ERROR: {error}', file=sys.stderr, flush=True)
        try:
            raise error from exc
        except RankFailure:
            # Recorded while handled, so the file's traceback ends with this message.
            ErrorHandler().record_exception(error)
            raise


class LauncherWatchdog:
    """Ends this rank when its torchrun agent, or the ``omnisafe train`` launcher, is gone.

    torchrun starts ranks in their own sessions, so killing the launcher (``kill -9`` of
    ``omnisafe train``, or of its process group) leaves them running without a parent, training
    and writing checkpoints next to a run the user may be resuming. A daemon thread checks every
    ``interval`` seconds that the rank's parent (the torchrun agent) is unchanged and, when
    OmniSafe's ``fork`` launched torchrun (``IN_MPI`` set), that the agent's parent (the launcher)
    is too (``/proc``, Linux); when either is gone the rank exits at once (``os._exit``: no
    half-written files, checkpoints are atomic).

    Args:
        interval: Seconds between checks.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self._interval = interval
        self._agent = os.getppid()
        self._launcher = _parent_of(self._agent) if os.getenv('IN_MPI') else None
        self._thread = threading.Thread(target=self._watch, name='launcher-watchdog',
                                        daemon=True)

    def start(self) -> LauncherWatchdog:
        """Start watching (returns ``self``)."""
        self._thread.start()
        return self

    def _watch(self) -> None:
        while True:
            time.sleep(self._interval)
            gone = None
            if os.getppid() != self._agent:
                gone = f'its torchrun agent (pid {self._agent})'
            elif self._launcher is not None and _parent_of(self._agent) != self._launcher:
                gone = f'the launcher (pid {self._launcher})'
            if gone is not None:
                print(f'ERROR: rank {rank()}: {gone} is gone: stopping', file=sys.stderr,
                      flush=True)
                os._exit(1)


def _parent_of(pid: int) -> int | None:
    """The parent pid of ``pid`` from ``/proc`` (``None`` where there is no ``/proc``)."""
    try:
        with open(f'/proc/{pid}/stat', encoding='utf-8') as file:
            # pid (comm) state ppid ...: comm may hold spaces and parentheses.
            return int(file.read().rsplit(')', 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
