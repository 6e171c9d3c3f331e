"""Compatibility fixes for the pinned stack, applied from outside (nothing is edited or vendored).

Each fix says which defect it repairs and where it is installed. They are idempotent.

* :func:`patch_safety_gymnasium_dataclasses` -- safety-gymnasium 1.0.0 declares dataclass fields
  whose default is a ``numpy.ndarray`` (``color: np.array = COLOR['hazard']``). Python 3.11 rejects
  unhashable defaults (``ValueError: mutable default ... use default_factory``), so the package
  cannot even be imported. Before its modules run, ``dataclasses.dataclass`` is wrapped so that, for
  classes defined in ``safety_gymnasium`` only, such defaults become ``default_factory`` copies.
* :func:`patch_evaluator` -- OmniSafe 0.5.0's ``Evaluator`` wraps every env in
  ``TimeLimit(time_limit=1000)``; on 500-step tasks one evaluated "episode" spans two real ones and
  doubles the cost. It also calls ``torch.load`` without ``weights_only``/``map_location``. The
  evaluator module's ``TimeLimit`` and ``torch`` names are rebound to versions that use the env's
  own episode length and load weights-only tensors onto the CPU.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

_SAFETY_GYMNASIUM = 'safety_gymnasium'


def _ndarray_defaults_to_factories(cls: type) -> type:
    """Turn class-level ``ndarray`` field defaults of ``cls`` into ``default_factory`` copies."""
    for name in cls.__dict__.get('__annotations__', {}):
        value = cls.__dict__.get(name)
        if isinstance(value, np.ndarray):
            setattr(cls, name, dataclasses.field(default_factory=value.copy))
    return cls


def patch_safety_gymnasium_dataclasses() -> None:
    """Make ``@dataclass`` accept safety-gymnasium's ndarray defaults (Python 3.11).

    Must run before ``safety_gymnasium`` is first imported: its modules bind ``dataclass`` with
    ``from dataclasses import dataclass`` at import time. Classes of other packages are untouched.
    """
    original = dataclasses.dataclass
    if getattr(original, '_omnisafe_metacpo_patched', False):
        return

    @functools.wraps(original)
    def dataclass(cls: type | None = None, /, **kwargs: Any) -> Any:
        def wrap(klass: type) -> type:
            if klass.__module__.split('.')[0] == _SAFETY_GYMNASIUM:
                _ndarray_defaults_to_factories(klass)
            return original(klass, **kwargs)

        return wrap if cls is None else wrap(cls)

    dataclass._omnisafe_metacpo_patched = True  # type: ignore[attr-defined]
    dataclasses.dataclass = dataclass


def _time_limit_from_env(env: Any, time_limit: int, device: Any) -> Any:
    """``TimeLimit`` for the Evaluator: the env's own episode length instead of a fixed 1000."""
    from omnisafe.envs.wrapper import TimeLimit

    own_limit = getattr(env, 'max_episode_steps', None)
    return TimeLimit(env, time_limit=int(own_limit or time_limit), device=device)


class _WeightsOnlyTorch:
    """Stands in for the ``torch`` module inside ``omnisafe.evaluator``.

    ``Evaluator`` calls ``torch.load(path)``: since torch 2.6 that means ``weights_only=True`` by
    default, but implicitly, and without ``map_location`` a run saved on a GPU cannot be evaluated
    on a CPU-only machine. Saved runs hold only tensors and plain containers (the plug-in keeps its
    resume state elsewhere), so loading is made explicitly weights-only and onto the CPU.
    """

    def __init__(self, torch_module: Any) -> None:
        self._torch = torch_module

    def load(self, f: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault('weights_only', True)
        kwargs.setdefault('map_location', 'cpu')
        return self._torch.load(f, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._torch, name)


def patch_evaluator() -> None:
    """Rebind ``TimeLimit`` and ``torch`` inside ``omnisafe.evaluator`` (idempotent)."""
    import omnisafe.evaluator as evaluator

    if getattr(evaluator, '_omnisafe_metacpo_patched', False):
        return
    evaluator.TimeLimit = _time_limit_from_env
    evaluator.torch = _WeightsOnlyTorch(evaluator.torch)
    evaluator._omnisafe_metacpo_patched = True
