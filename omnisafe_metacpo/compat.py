"""Fixes of OmniSafe 0.5.0 defects, applied from outside (nothing is edited or vendored).

* :func:`patch_evaluator` -- OmniSafe 0.5.0's ``Evaluator`` wraps every env in
  ``TimeLimit(time_limit=1000)``; on 500-step tasks one evaluated "episode" spans two real ones and
  doubles the cost. It also calls ``torch.load`` without ``weights_only``/``map_location``. The
  evaluator module's ``TimeLimit`` and ``torch`` names are rebound to versions that use the env's
  own episode length and load weights-only tensors onto the CPU.
* Two resets per episode end and the time limit of training envs are fixed in
  :mod:`omnisafe_metacpo.envs`; safety-gymnasium's Python 3.11 incompatibility in the start-up
  hook (``_omnisafe_metacpo_hook.patch_safety_gymnasium_dataclasses``), which must act before
  safety-gymnasium is imported.
"""

from __future__ import annotations

from typing import Any


def _time_limit_from_env(env: Any, time_limit: int, device: Any) -> Any:
    """``TimeLimit`` for the Evaluator: the env's own episode length instead of a fixed 1000."""
    from omnisafe.envs.core import Wrapper
    from omnisafe.envs.wrapper import TimeLimit

    inner = env
    while isinstance(inner, Wrapper):  # OmniSafe's wrappers answer None for max_episode_steps
        inner = inner._env  # pylint: disable=protected-access
    own_limit = inner.max_episode_steps
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
