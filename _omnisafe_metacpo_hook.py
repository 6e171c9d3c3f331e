"""Start-up hook of omnisafe-metacpo, run from ``omnisafe_metacpo.pth`` at interpreter start.

The stock ``omnisafe`` console script, ``omnisafe benchmark`` workers (spawned processes) and
torchrun ranks never import this plug-in. A ``.pth`` line runs in every interpreter, so it installs
an import hook that does nothing until ``safety_gymnasium`` or ``omnisafe`` is first imported:

* before ``safety_gymnasium`` executes, its dataclass incompatibility with Python 3.11+ is patched;
* after ``safety_gymnasium`` has executed, the ``Meta*`` environment ids are registered with it;
* after ``omnisafe`` has executed, the plug-in's environments and algorithms are registered;
* after ``farama_notifications`` has executed, its notice about gymnasium-robotics' Adroit
  environments is dropped (see :func:`_after_farama_notifications`).

This module must stay cheap: it imports only the standard library (start-up cost is measured by
``benchmarks/startup_time.py``). It lives outside the ``omnisafe_metacpo`` package because that
package imports ``omnisafe`` first thing (so that its modules never start importing OmniSafe
half-way through their own import).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importlib.abc and typing would cost ~20 ms at start-up
    import importlib.machinery
    from collections.abc import Callable, Sequence
    from types import ModuleType


def _ndarray_defaults_to_factories(cls: type) -> type:
    """Turn class-level ``ndarray`` field defaults of ``cls`` into ``default_factory`` copies."""
    import dataclasses
    import inspect

    import numpy as np

    for name in inspect.get_annotations(cls):
        value = cls.__dict__.get(name)
        if isinstance(value, np.ndarray):
            setattr(cls, name, dataclasses.field(default_factory=value.copy))
    return cls


def patch_safety_gymnasium_dataclasses() -> None:
    """Make ``@dataclass`` accept safety-gymnasium 1.0.0's ndarray defaults on Python 3.11+.

    safety-gymnasium declares fields such as ``color: np.array = COLOR['hazard']``; Python 3.11
    rejects unhashable defaults (``ValueError: mutable default ... use default_factory``), so the
    package cannot even be imported. ``dataclasses.dataclass`` is wrapped so that, for classes
    defined in ``safety_gymnasium`` only, such defaults become ``default_factory`` copies (each
    instance gets its own array, as the authors intended). It must run before safety_gymnasium's
    modules bind ``from dataclasses import dataclass``. Idempotent.
    """
    import dataclasses
    import functools

    original = dataclasses.dataclass
    if getattr(original, '_omnisafe_metacpo_patched', False):
        return

    @functools.wraps(original)
    def dataclass(cls: type | None = None, /, **kwargs: object) -> object:
        def wrap(klass: type) -> type:
            if klass.__module__.split('.')[0] == 'safety_gymnasium':
                _ndarray_defaults_to_factories(klass)
            return original(klass, **kwargs)

        return wrap if cls is None else wrap(cls)

    dataclass._omnisafe_metacpo_patched = True  # type: ignore[attr-defined]
    dataclasses.dataclass = dataclass


def _before_safety_gymnasium(_module: ModuleType) -> None:
    patch_safety_gymnasium_dataclasses()


def _after_safety_gymnasium(_module: ModuleType) -> None:
    from task_distributions.registration import register_safety_gymnasium_envs

    register_safety_gymnasium_envs()


def _after_omnisafe(_module: ModuleType) -> None:
    from omnisafe_metacpo.install import install

    install()


#: The notice gymnasium-robotics 1.2.1-1.4.2 prints (with print, to stderr: it is no warning
#: that a filter could catch) whenever it is imported, twice per process here; it concerns only
#: its Adroit environments, which neither OmniSafe nor this plug-in uses.
_ADROIT_NOTICE = 'AdroitHandRelocateDense-v1, AdroitHandHammerDense-v1, AdroitHandDoorDense-v1'


def _after_farama_notifications(module: ModuleType) -> None:
    # gymnasium_robotics/__init__.py prints notifications['gymnasium_robotics'][its version] if
    # present: remove exactly the Adroit notice, keep every other notification.
    for project in module.notifications.values():
        for version, text in list(project.items()):
            if isinstance(text, str) and text.startswith(_ADROIT_NOTICE):
                del project[version]


# module name -> (called before its code runs, called after it ran)
_ACTIONS: dict[str, tuple[Callable[[ModuleType], None] | None, Callable[[ModuleType], None] | None]]
_ACTIONS = {
    'safety_gymnasium': (_before_safety_gymnasium, _after_safety_gymnasium),
    'omnisafe': (None, _after_omnisafe),
    'farama_notifications': (None, _after_farama_notifications),
}


class _HookLoader:
    """Delegates to the real loader and runs the plug-in's actions around ``exec_module``."""

    def __init__(self, loader: object, name: str) -> None:
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


class _HookFinder:
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
