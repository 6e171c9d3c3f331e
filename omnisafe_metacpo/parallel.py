"""Meta-iterations over torch.distributed ranks: ``omnisafe train --parallel N`` (torchrun).

The M tasks of a meta-iteration are independent until the meta step, so they are spread over the
ranks: every rank draws the same M tasks from the run's seed and adapts its share, tasks
``rank, rank + N, rank + 2N, ...`` (:func:`task_indices`); task i keeps its rollout seeds, so
which tasks are trained on, with which rollout seeds, does not depend on N. Whatever the meta
step and the logs need from all tasks is gathered in task order (:func:`gather_tasks`) and
reduced the same way on every rank, so every rank takes the same decisions and the same step,
bit for bit.

This module holds the pieces that are not the algorithm's maths:

* :func:`init_process_group`: the process group of a rank, created before OmniSafe's ``fork``
  would create it, so that collectives time out after ``train_cfgs.dist_timeout`` seconds;
* :func:`gather_rows`, :func:`gather_tasks`, :func:`weighted_average`: collectives whose result
  is identical on every rank by construction (each rank reduces the same gathered values in the
  same order; an all-reduce leaves that order to the backend);
* :class:`NormalizerSync`: the rule that keeps the observation normaliser identical on all ranks;
* :func:`gather_task_data`, :func:`local_gradients`, :func:`share_from`: the critics are fitted
  on the union of all ranks' rollouts, exactly as one rank would, the reward critic by one rank
  and the cost critic by another, without a collective per minibatch;
* :func:`check_identical`: a digest of each rank's state, compared after every meta-iteration;
* :func:`rank_failures` and :class:`LauncherWatchdog`: a rank that fails, or loses its launcher,
  ends the run with an error that names the rank, instead of leaving the others waiting.

With one process (no torchrun) every collective here is the identity and nothing is wrapped.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from omnisafe.utils import distributed


class RankFailure(RuntimeError):
    """A rank of a distributed run failed; the message names the rank and the cause."""


class RanksDivergedError(RuntimeError):
    """The ranks' parameters, critics or normaliser are no longer identical."""


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return distributed.get_rank()


def world_size() -> int:
    """Number of ranks (1 without torchrun)."""
    return distributed.world_size()


def backend(device: str) -> str:
    """The process-group backend OmniSafe's ``fork`` picks: gloo on the CPU, nccl on GPUs."""
    return 'gloo' if device == 'cpu' else 'nccl'


# ------------------------------------------------------------------------------ launching
def init_process_group(cfgs: Any) -> None:
    """Create this torchrun rank's process group with ``train_cfgs.dist_timeout``.

    OmniSafe's ``distributed.fork`` (called by ``AlgoWrapper._init_algo``) creates the group
    with torch's default timeout (30 minutes for gloo, 10 for nccl), so a rank that hangs would
    keep the others waiting that long, and nothing lets a config change it. ``fork`` only creates
    the group when the environment variable ``IN_DIST`` is unset: the group is created here first,
    with the configured timeout and ``fork``'s own backend rule, and ``IN_DIST`` is set so that
    ``fork`` leaves it alone. Outside torchrun (no ``MASTER_ADDR``), or for configs without
    ``dist_timeout`` (OmniSafe's own algorithms), nothing happens.
    """
    from omnisafe_metacpo.config import validate_dist_timeout

    train = cfgs.train_cfgs
    if os.getenv('MASTER_ADDR') is None or 'dist_timeout' not in train or dist.is_initialized():
        return
    validate_dist_timeout(train.dist_timeout)
    dist.init_process_group(backend=backend(train.device),
                            timeout=datetime.timedelta(seconds=float(train.dist_timeout)))
    os.environ['IN_DIST'] = '1'


def ensure_torchrun_on_path() -> None:
    """Let OmniSafe's ``fork`` find ``torchrun`` when the venv is not on ``PATH``.

    ``fork`` runs ``torchrun`` by name; ``.venv/bin/omnisafe train --parallel 2`` from a shell
    without the venv activated would fail with ``FileNotFoundError``. torchrun is installed next
    to the interpreter, so that directory is appended to ``PATH`` when nothing else provides it.
    """
    here = os.path.dirname(sys.executable)
    if shutil.which('torchrun') is None and os.path.exists(os.path.join(here, 'torchrun')):
        os.environ['PATH'] = os.pathsep.join([*filter(None, [os.getenv('PATH')]), here])


def patch_algo_wrapper(is_meta_algo: Callable[[str], bool]) -> None:
    """Wrap ``AlgoWrapper._init_algo`` so MetaCPO / MetaTRPO ranks get :func:`init_process_group`.

    ``_init_algo`` is where OmniSafe calls ``fork`` (relaunch under torchrun in the launcher,
    process-group creation in a rank), so the group must exist before it runs. Idempotent.

    Args:
        is_meta_algo: Tells the algorithms whose configs have ``train_cfgs.dist_timeout``.
    """
    from omnisafe.algorithms.algo_wrapper import AlgoWrapper

    original = AlgoWrapper._init_algo
    if getattr(original, '_omnisafe_metacpo_patched', False):
        return

    @functools.wraps(original)
    def _init_algo(self: Any) -> None:
        if is_meta_algo(self.algo):
            ensure_torchrun_on_path()
            init_process_group(self.cfgs)
        original(self)

    _init_algo._omnisafe_metacpo_patched = True  # type: ignore[attr-defined]
    AlgoWrapper._init_algo = _init_algo


# ---------------------------------------------------------------------------- collectives
def _comm_device() -> torch.device:
    """Where a collective's buffers must live: the GPU for nccl, the CPU for gloo."""
    if dist.get_backend() == 'nccl':
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


def _all_gather(local: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``local`` (one shape on all ranks), in rank order, on ``local``'s device."""
    if world_size() == 1:
        return [local]
    device = _comm_device()
    sent = local.detach().to(device).contiguous()
    parts = [torch.empty_like(sent) for _ in range(world_size())]
    distributed.all_gather(parts, sent)
    return [part.to(local.device) for part in parts]


def gather_rows(local: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``local`` (any number of rows, same trailing shape), in rank order."""
    if world_size() == 1:
        return [local]
    sizes = [int(c.item()) for c in _all_gather(torch.tensor([local.shape[0]]))]
    padded = torch.zeros((max(sizes), *local.shape[1:]), dtype=local.dtype, device=local.device)
    padded[: local.shape[0]] = local.detach()
    return [part[:size] for part, size in zip(_all_gather(padded), sizes, strict=True)]


def task_indices(num_tasks: int) -> list[int]:
    """The tasks of this rank: ``rank, rank + N, rank + 2N, ...`` of ``range(num_tasks)``."""
    return list(range(rank(), num_tasks, world_size()))


def gather_tasks(local: torch.Tensor, num_tasks: int) -> torch.Tensor:
    """Per-task rows of all ranks in task order: row i is task i's, wherever it was adapted.

    Args:
        local: One row per task of :func:`task_indices`, in that order.
        num_tasks: M, the tasks of the meta-iteration.
    """
    size = world_size()
    if size == 1:
        return local
    most = -(-num_tasks // size)  # the rank with the most tasks has ceil(M / N)
    padded = torch.zeros((most, *local.shape[1:]), dtype=local.dtype, device=local.device)
    padded[: local.shape[0]] = local.detach()
    ordered = torch.empty((num_tasks, *local.shape[1:]), dtype=local.dtype, device=local.device)
    for source, part in enumerate(_all_gather(padded)):
        ordered[source::size] = part[: len(range(source, num_tasks, size))]
    return ordered


def weighted_average(value: torch.Tensor, weight: float) -> torch.Tensor:
    """sum_r weight_r * value_r / sum_r weight_r over ranks (e.g. means over local samples)."""
    if world_size() == 1:
        return value
    weights = [float(w) for w in _all_gather(torch.tensor([float(weight)], dtype=torch.float64))]
    total = sum(weights)
    result = torch.zeros_like(value)
    for part, share in zip(_all_gather(value), weights, strict=True):
        result = result + part * (share / total)  # rank order: the same sum on every rank
    return result


# ----------------------------------------------------------------------------- normaliser
class NormalizerSync:
    """Keeps OmniSafe's observation normaliser identical on all ranks (the documented rule).

    During a meta-iteration each rank's normaliser is updated, as on one rank, by the
    observations of its own rollouts (so it lags the other ranks' observations by at most one
    meta-iteration). At the end of the iteration every rank returns to the state it had at the
    iteration's start, which all ranks shared, and pushes the raw observations of all ranks,
    in rank order, with the normaliser's ``_push`` (OmniSafe's arithmetic, bit for bit, through
    :mod:`omnisafe_metacpo.fast_normalizer`): afterwards every normaliser holds
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


# -------------------------------------------------------------------------------- critics
def gather_task_data(local: Sequence[torch.Tensor], num_tasks: int) -> list[torch.Tensor]:
    """Per-task tensors of all ranks in task order (each any number of rows, same trailing shape).

    One collective for the lot (two ``all_gather`` calls: sizes, then the padded rows).

    Args:
        local: One tensor per task of :func:`task_indices`, in that order.
        num_tasks: M, the tasks of the meta-iteration.
    """
    size = world_size()
    if size == 1:
        return list(local)
    counts = torch.tensor([t.shape[0] for t in local], dtype=torch.int64)
    parts = gather_rows(torch.cat(list(local)))
    sizes = gather_tasks(counts[:, None], num_tasks)[:, 0].tolist()
    ordered: list[torch.Tensor] = []
    offsets = [0] * size
    for task in range(num_tasks):
        source = task % size
        ordered.append(parts[source][offsets[source]: offsets[source] + sizes[task]])
        offsets[source] += sizes[task]
    return ordered


@contextlib.contextmanager
def local_gradients() -> Iterator[None]:
    """OmniSafe's ``distributed.avg_grads`` as a no-op while every rank fits the same data.

    OmniSafe's ``_update_reward_critic`` / ``_update_cost_critic`` average the gradients of
    every parameter over ranks at every minibatch (one collective per parameter: 12 x ~2 ms
    over gloo here, per minibatch, more than the minibatch's own compute). When every rank
    holds the union of the data, shuffles it with the same generator and starts from the same
    critics, the ranks' gradients are already equal, so the average is skipped; the loss,
    critic-norm penalty, clipping and optimiser step stay OmniSafe's. Patching the module
    attribute works because ``policy_gradient`` calls ``distributed.avg_grads`` through the
    module at call time.
    """
    original = distributed.avg_grads
    distributed.avg_grads = lambda module: None  # type: ignore[assignment]
    try:
        yield
    finally:
        distributed.avg_grads = original


def owner(index: int) -> int:
    """The rank that computes item ``index`` of a few independent ones (``index % N``)."""
    return index % world_size()


def share_from(source: int, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Give every rank ``source``'s parameters and optimiser state of ``module`` (bit for bit).

    One ``broadcast_object_list`` of the two state dicts: the optimiser's state is created on
    its first step, so a rank that did not fit the module may not have one to copy into.
    """
    if world_size() == 1:
        return
    mine = source == rank()
    payload = [(module.state_dict(), optimizer.state_dict()) if mine else None]
    dist.broadcast_object_list(payload, src=source, device=_comm_device())
    if not mine:
        module_state, optimizer_state = payload[0]
        module.load_state_dict(module_state)
        optimizer.load_state_dict(optimizer_state)


# ------------------------------------------------------------------------------ identity
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
    return [bytes(part.tolist()).hex() for part in _all_gather(raw)]


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


# -------------------------------------------------------------------------------- failures
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
