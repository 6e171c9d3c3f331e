"""Launching MetaCPO / MetaTRPO ranks: ``omnisafe train --parallel N`` (torchrun), from outside.

* :func:`init_process_group`: the process group of a rank, created before OmniSafe's ``fork``
  would create it, so that collectives time out after ``train_cfgs.dist_timeout`` seconds;
* :func:`ensure_torchrun_on_path` and :func:`patch_algo_wrapper`: ``AlgoWrapper._init_algo``
  wrapped so that the launcher finds torchrun and every rank gets that process group;
* :func:`usable_cores`: the cores this process may run on, which the samplers' helper processes
  and the CLI's thread count are sized by.
"""

from __future__ import annotations

import datetime
import functools
import os
import shutil
import sys
from collections.abc import Callable
from typing import Any

import torch.distributed as dist

from omnisafe_metacpo.config import validate_dist_timeout


def usable_cores() -> int:
    """The number of CPU cores this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS, Windows)
        return os.cpu_count() or 1


def backend(device: str) -> str:
    """The process-group backend OmniSafe's ``fork`` picks: gloo on the CPU, nccl on GPUs."""
    return 'gloo' if device == 'cpu' else 'nccl'


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
