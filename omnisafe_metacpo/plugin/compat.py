"""Fixes of OmniSafe 0.5.0 defects, applied from outside (nothing is edited or vendored).

* :func:`patch_evaluator` -- OmniSafe 0.5.0's ``Evaluator`` wraps every env in
  ``TimeLimit(time_limit=1000)``; on 500-step tasks one evaluated "episode" spans two real ones and
  doubles the cost. It also calls ``torch.load`` without ``weights_only``/``map_location``. The
  evaluator module's ``TimeLimit`` and ``torch`` names are rebound to versions that use the env's
  own episode length and load weights-only tensors onto the CPU.
* :func:`patch_custom_cfgs_parser` -- ``omnisafe train`` passes every ``--custom-cfgs`` value and
  its own ``--log-dir`` (joined with ``train``) through ``custom_cfgs_to_dict``, which turns any
  value containing a '.' into a float: ``--log-dir /tmp/tmp.abc123`` (or a run started in a
  directory with a dot) crashed with ``could not convert string to float``. A dotted value that
  is no number now stays a string; every other value is parsed exactly as before.
* :func:`patch_cli_defaults` -- ``omnisafe train`` always passes its own option defaults
  (``--total-steps`` 10,000,000, ``--torch-threads`` 16) as ``train_terminal_cfgs``, which
  ``AlgoWrapper`` applies after the YAML and ``--custom-cfgs``. For the plug-in's algorithms a
  default the user did not type no longer overrides them, and ``torch_threads`` is capped to the
  cores the process may use.
* :func:`patch_marker_rendering` -- gymnasium 0.28.1 (the version safety-gymnasium pins) sets
  ``MjvGeom.texid`` when it draws a marker; MuJoCo 3.2 removed that field, so rendering a
  Safety-Gymnasium task (``omnisafe.Agent.render``, the cost indicator markers) fails with
  ``AttributeError`` under the MuJoCo wheels Python 3.12 and 3.13 need. With such a MuJoCo the
  renderer's marker method is replaced by one that lets ``mujoco.mjv_initGeom`` set the defaults.
* Two resets per episode end and the time limit of training envs are fixed in
  :mod:`omnisafe_metacpo.sampling.envs`; safety-gymnasium's incompatibility with Python 3.11+ in the
  start-up hook (``_omnisafe_metacpo_hook.patch_safety_gymnasium_dataclasses``), which must act
  before safety-gymnasium is imported.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import mujoco
import numpy as np
from gymnasium.envs.mujoco import mujoco_rendering
from omnisafe.envs.wrapper import TimeLimit

from omnisafe_metacpo.distributed.launch import usable_cores
from omnisafe_metacpo.plugin import _original
from omnisafe_metacpo.sampling.envs import unwrapped

#: ``omnisafe train`` options whose stock defaults must not override the plug-in's YAML:
#: option name as typed -> key in ``train_terminal_cfgs``.
CLI_DEFAULTS_YIELDING: dict[str, str] = {'--total-steps': 'total_steps',
                                         '--torch-threads': 'torch_threads'}


def _time_limit_from_env(env: Any, time_limit: int, device: Any) -> Any:
    """``TimeLimit`` for the Evaluator: the env's own episode length instead of a fixed 1000."""
    own_limit = unwrapped(env).max_episode_steps
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


def _dotted_custom_cfgs_to_dict(original: Callable[[str, Any], dict[str, Any]]) -> Callable:
    @functools.wraps(original)
    def custom_cfgs_to_dict(key_list: str, value: Any) -> dict[str, Any]:
        if isinstance(value, str) and '.' in value and value not in ('True', 'False'):
            try:
                float(value)
            except ValueError:
                # Stock would call float(value) and crash: nest the string under the keys the
                # way stock does (':' separates levels, '-' reads as '_').
                keys = key_list.replace('-', '_').split(':')
                nested: dict[str, Any] = {keys[-1]: value}
                for key in reversed(keys[:-1]):
                    nested = {key: nested}
                return nested
        return original(key_list, value)

    custom_cfgs_to_dict._omnisafe_metacpo_patched = True  # type: ignore[attr-defined]
    return custom_cfgs_to_dict


def patch_custom_cfgs_parser() -> None:
    """Let ``custom_cfgs_to_dict`` keep dotted non-numbers (paths) as strings (idempotent).

    ``omnisafe.utils.command_app`` binds the function by name when it is imported; that happens
    after ``omnisafe`` itself (and so after this patch) in the console script, but any module
    that already holds the stock function is rebound as well.
    """
    import omnisafe.utils.tools as tools

    original = tools.custom_cfgs_to_dict
    if getattr(original, '_omnisafe_metacpo_patched', False):
        return
    _original.custom_cfgs_to_dict = original
    patched = _dotted_custom_cfgs_to_dict(original)
    for name, module in list(sys.modules.items()):
        if module is not None and (name == 'omnisafe' or name.startswith('omnisafe.')):
            for attr, value in list(vars(module).items()):
                if value is original:
                    setattr(module, attr, patched)


def _called_from_train_cli() -> bool:
    """Whether the current call runs inside the ``omnisafe train`` command's function."""
    command_app = sys.modules.get('omnisafe.utils.command_app')
    train = getattr(command_app, 'train', None)
    code = getattr(train, '__code__', None)
    if code is None:
        return False
    frame = sys._getframe(1)  # pylint: disable=protected-access
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def untyped_cli_defaults(argv: list[str] | None = None) -> list[str]:
    """``train_terminal_cfgs`` keys of :data:`CLI_DEFAULTS_YIELDING` not typed on the command line.

    typer (which vendors its own click) offers no public way to ask whether an option was typed,
    so the command line is read: ``--total-steps N`` and ``--total-steps=N`` count as typed.

    Args:
        argv: The command line; ``sys.argv`` by default.
    """
    tokens = sys.argv[1:] if argv is None else argv
    return [key for option, key in CLI_DEFAULTS_YIELDING.items()
            if not any(token == option or token.startswith(f'{option}=') for token in tokens)]


def _plugin_init_config(original: Callable[[Any], Any], is_plugin_algo: Callable[[str], bool],
                        ) -> Callable[[Any], Any]:
    @functools.wraps(original)
    def _init_config(self: Any) -> Any:
        if not is_plugin_algo(self.algo):
            return original(self)
        terminal = self.train_terminal_cfgs
        if terminal and _called_from_train_cli():
            # Only the stock CLI passes its defaults; a value the user typed still wins.
            for key in untyped_cli_defaults():
                terminal.pop(key, None)
        cfgs = original(self)
        threads = cfgs.train_cfgs.torch_threads
        if isinstance(threads, int) and threads > usable_cores():
            # More threads than cores only oversubscribe them (OmniSafe's default is 16).
            cfgs.train_cfgs.torch_threads = usable_cores()
        return cfgs

    _init_config._omnisafe_metacpo_patched = True  # type: ignore[attr-defined]
    return _init_config


def patch_cli_defaults(is_plugin_algo: Callable[[str], bool]) -> None:
    """Wrap ``AlgoWrapper._init_config`` for the plug-in's algorithms (idempotent).

    Args:
        is_plugin_algo: Tells the plug-in's algorithm names; stock algorithms are left as they
            are.
    """
    from omnisafe.algorithms.algo_wrapper import AlgoWrapper

    if getattr(AlgoWrapper._init_config, '_omnisafe_metacpo_patched', False):
        return
    AlgoWrapper._init_config = _plugin_init_config(AlgoWrapper._init_config, is_plugin_algo)


def _add_marker_to_scene(self: Any, marker: dict[str, Any]) -> None:
    """``BaseRender._add_marker_to_scene`` for MuJoCo without ``MjvGeom.texid``.

    The geom is initialised by MuJoCo itself (``mjv_initGeom`` knows the fields of the MuJoCo it
    ships with) to the box gymnasium starts every marker from; then the marker's own fields are
    written as gymnasium writes them: numbers set, arrays copied, ``label`` as text.
    """
    scene = self.scn
    if scene.ngeom >= scene.maxgeom:
        raise RuntimeError(f'Ran out of geoms. maxgeom: {scene.maxgeom}')
    geom = scene.geoms[scene.ngeom]
    mujoco.mjv_initGeom(geom, mujoco.mjtGeom.mjGEOM_BOX, np.full(3, 0.1), np.zeros(3),
                        np.eye(3).ravel(), np.ones(4, dtype=np.float32))
    geom.category = mujoco.mjtCatBit.mjCAT_DECOR
    geom.specular = 0.5
    geom.shininess = 0.5
    for key, value in marker.items():
        if not hasattr(geom, key):
            raise ValueError(f'a marker has no field {key!r}; MjvGeom fields: '
                             f'{sorted(k for k in dir(geom) if not k.startswith("_"))}')
        if key == 'label':
            geom.label = '' if value is None else str(value)
        elif isinstance(value, (tuple, list, np.ndarray)):
            field = getattr(geom, key)
            field[:] = np.asarray(value).reshape(field.shape)
        elif isinstance(value, (int, float, mujoco.mjtGeom)):
            setattr(geom, key, value)
        else:
            raise ValueError(f'marker field {key!r} has type {type(value).__name__}; '
                             'allowed: number, mjtGeom, sequence, or str for label')
    scene.ngeom += 1


def patch_marker_rendering() -> bool:
    """Replace gymnasium's marker method where MuJoCo has no ``MjvGeom.texid`` (idempotent).

    Returns:
        Whether the renderer uses the replacement (False under MuJoCo 2.3, which keeps gymnasium's
        own method).
    """
    base = mujoco_rendering.BaseRender
    if base._add_marker_to_scene is _add_marker_to_scene:
        return True
    if hasattr(mujoco.MjvGeom(), 'texid'):
        return False
    base._add_marker_to_scene = _add_marker_to_scene
    return True
