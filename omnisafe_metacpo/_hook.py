"""Start-up hook, run from ``omnisafe_metacpo.pth`` at interpreter start.

The stock ``omnisafe`` console script, ``omnisafe benchmark`` workers (spawned processes) and
torchrun ranks never import this plug-in. A ``.pth`` line runs in every interpreter, so it installs
an import hook that does nothing until ``safety_gymnasium`` or ``omnisafe`` is first imported:

* before ``safety_gymnasium`` executes, its Python 3.11 dataclass incompatibility is patched;
* after ``safety_gymnasium`` has executed, the ``Meta*`` environment ids are registered with it;
* after ``omnisafe`` has executed, the plug-in's environments and algorithms are registered.

This module must stay cheap: it imports only the standard library (start-up cost is measured by
``benchmarks/startup_time.py``).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable, Sequence
from types import ModuleType


def _before_safety_gymnasium(_module: ModuleType) -> None:
    from omnisafe_metacpo.compat import patch_safety_gymnasium_dataclasses

    patch_safety_gymnasium_dataclasses()


def _after_safety_gymnasium(_module: ModuleType) -> None:
    from task_distributions.registration import register_safety_gymnasium_envs

    register_safety_gymnasium_envs()


def _after_omnisafe(_module: ModuleType) -> None:
    from omnisafe_metacpo.integration import install

    install()


# module name -> (called before its code runs, called after it ran)
_ACTIONS: dict[str, tuple[Callable[[ModuleType], None] | None, Callable[[ModuleType], None] | None]]
_ACTIONS = {
    'safety_gymnasium': (_before_safety_gymnasium, _after_safety_gymnasium),
    'omnisafe': (None, _after_omnisafe),
}


class _HookLoader(importlib.abc.Loader):
    """Delegates to the real loader and runs the plug-in's actions around ``exec_module``."""

    def __init__(self, loader: importlib.abc.Loader, name: str) -> None:
        self._loader = loader
        self._name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        before, after = _ACTIONS[self._name]
        if before is not None:
            before(module)
        self._loader.exec_module(module)
        if after is not None:
            after(module)

    def __getattr__(self, item: str) -> object:
        # get_resource_reader, is_package, get_filename, ... as the real loader has them.
        return getattr(self._loader, item)


class _HookFinder(importlib.abc.MetaPathFinder):
    """Finds the watched top-level modules with the other finders, then wraps their loader."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _ACTIONS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and not isinstance(spec.loader, _HookLoader):
                    spec.loader = _HookLoader(spec.loader, fullname)
                return spec
        return None


def install_import_hook() -> None:
    """Put the finder first on ``sys.meta_path`` (once) and act on already imported modules."""
    if not any(isinstance(finder, _HookFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _HookFinder())


install_import_hook()
