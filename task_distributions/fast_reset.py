"""Cheaper episode resets for safety-gymnasium, with the same vector observations.

Every ``reset()`` of a safety-gymnasium navigation env rebuilds the MuJoCo model from XML
(``Underlying._build`` -> ``World.rebuild`` -> ``World.build`` -> ``MjModel.from_xml_string``).
Measured on this stack (see ``benchmarks/env_speed.py``), a stock reset spends its time on:

* decoding the six large skybox PNG textures (``star_hd.*.png``): about 1.3 s per reset, and only
  images can show them;
* parsing ``safety_gymnasium/configs/assets.yaml`` with the pure-Python YAML loader: about 4 ms of
  the 7 ms that remain once the skybox is gone.

:class:`FastWorld` is a :class:`safety_gymnasium.world.World` that removes both costs, and
:func:`install_fast_world` puts one into a built env before its first reset. Nothing of
safety-gymnasium is edited; the two adaptations are described where they are made.
"""

from __future__ import annotations

import copy
import os
import re
import threading
from typing import Any

import gymnasium
import yaml
from safety_gymnasium import world as world_module
from safety_gymnasium.world import World

# The skybox texture as ``xmltodict.unparse`` writes it from safety-gymnasium's assets.yaml: a
# ``<texture type="skybox" .../>`` element (it has no name, nothing refers to it).
_SKYBOX = re.compile(r'<texture type="skybox"[^>]*?(?:/>|></texture>)')


class _CachedAssetsYaml:
    """Stands in for the ``yaml`` module inside ``World.build`` and caches what it loads.

    ``World.build`` re-reads ``configs/assets.yaml`` at every reset through the module-global name
    ``yaml`` of ``safety_gymnasium.world``; no instance attribute reaches that call. So
    :meth:`FastWorld.build` rebinds that global to this object for the duration of its own
    ``build`` and restores it afterwards. Loads are cached per (file, mtime) and returned as deep
    copies, so a caller sees exactly what ``yaml.load`` would have returned: even a stock world
    building in another thread during that window gets identical data.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[str, float, Any], Any] = {}

    def load(self, stream: Any, Loader: Any) -> Any:  # yaml's own keyword name
        name = getattr(stream, 'name', None)
        if not isinstance(name, str) or not os.path.isfile(name):
            return yaml.load(stream, Loader=Loader)  # the same call as World.build makes
        key = (name, os.path.getmtime(name), Loader)
        if key not in self._cache:
            self._cache[key] = yaml.load(stream, Loader=Loader)
        return copy.deepcopy(self._cache[key])

    def __getattr__(self, name: str) -> Any:
        return getattr(yaml, name)  # FullLoader and anything else World.build may use


_CACHED_YAML = _CachedAssetsYaml()
_SWAP_LOCK = threading.RLock()


class FastWorld(World):
    """A ``World`` whose rebuilds skip the skybox (unless images are wanted) and re-parsing YAML.

    Args:
        agent: The task's agent (as ``World`` takes it).
        obstacles: The task's objects (as ``World`` takes it).
        config: World configuration (as ``World`` takes it); ``None`` until the first reset.
        keep_skybox: Keep the skybox texture (rendering asked for): images then look as stock.
    """

    def __init__(
        self,
        agent: Any,
        obstacles: list[Any],
        config: dict[str, Any] | None = None,
        keep_skybox: bool = False,
    ) -> None:
        self.keep_skybox = keep_skybox
        self.skybox_removed = False
        self._built = False
        super().__init__(agent, obstacles, config)

    # ``World.build`` assembles the XML, assigns it to ``self.xml_string`` and compiles
    # ``self.xml_string`` on the next line. Making the attribute a property lets this subclass drop
    # the skybox between the two, per instance, without copying ``build`` (300 lines).
    @property
    def xml_string(self) -> str | None:
        """The XML last compiled (without the skybox unless ``keep_skybox``)."""
        return self._xml_string

    @xml_string.setter
    def xml_string(self, value: str | None) -> None:
        if value is not None and not self.keep_skybox:
            value, count = _SKYBOX.subn('', value, count=1)
            if count != 1:
                # Fail loudly if a safety-gymnasium update writes the skybox differently: a silent
                # miss would only make resets slow again, a wrong strip could change the model.
                raise RuntimeError('FastWorld: no skybox texture found in the generated XML')
            self.skybox_removed = True
        self._xml_string = value

    def rebuild(self, config: dict[str, Any] | None = None, state: bool = True) -> None:
        """Rebuild as ``World.rebuild`` does; the first call builds as a new stock world would.

        ``install_fast_world`` sends the first reset through ``rebuild`` (parse, build, then one
        more ``mj_forward``) where stock creates the world (parse, build). The extra ``mj_forward``
        is not neutral: it leaves ``qacc_warmstart`` set, so the first step's constraint solve
        starts elsewhere and a Car's first episode differs from stock in the last bits (up to
        ~1e-13 measured). Skipping it on the first build keeps every episode identical to stock.
        """
        if not self._built:
            if config:
                self.parse(config)
            self.build()
            return
        super().rebuild(config, state)

    def build(self) -> None:
        """Build as ``World.build`` does, with ``assets.yaml`` parsed once per process."""
        self._built = True
        with _SWAP_LOCK:
            original = world_module.yaml
            world_module.yaml = _CACHED_YAML  # see _CachedAssetsYaml for why and why it is safe
            try:
                super().build()
            finally:
                world_module.yaml = original


def install_fast_world(env: gymnasium.Env, keep_skybox: bool | None = None) -> FastWorld:
    """Give a safety-gymnasium navigation env a :class:`FastWorld` before its first reset.

    ``Underlying._build`` creates a ``World`` at the first reset only when ``task.world`` is None;
    otherwise it calls ``world.rebuild(config)``, which :class:`FastWorld` answers on its first call
    exactly as a new stock world would be built. Setting ``task.world`` beforehand therefore swaps
    the world class without touching safety-gymnasium's code.

    Args:
        env: The env (wrapped or not) whose ``unwrapped`` is a safety-gymnasium ``Builder``.
        keep_skybox: Keep the skybox; ``None`` keeps it exactly when the env renders
            (``render_mode`` set), since only images can show it.

    Returns:
        The installed world.

    Raises:
        RuntimeError: If the env was already reset (its world exists).
    """
    builder = env.unwrapped
    task = builder.task
    if task.world is not None:
        raise RuntimeError('install_fast_world must be called before the first reset')
    if keep_skybox is None:
        keep_skybox = builder.render_mode is not None or bool(task.observe_vision)
    task.world = FastWorld(task.agent, task._obstacles, keep_skybox=keep_skybox)
    return task.world
