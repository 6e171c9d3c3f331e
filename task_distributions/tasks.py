"""The paper's environments as safety-gymnasium task classes.

* :class:`CircleLevel1` -- Point-Circle: safety-gymnasium's Circle level 1 (12 Point sensors +
  circle lidar 16 = 28, the paper's size).
* :class:`CircleHazardLevel1` -- Car-Circle-Hazard: Circle level 1 (circle + two sigwalls) with
  hazards added. With the Car: 24 sensors + circle lidar 16 + hazards lidar 16 = 56 (the paper's).
* :class:`ButtonNoGremlinsLevel1` -- Point-Button: Button level 1 (buttons, goal, hazards) without
  its gremlins. With the Point: 12 + 3 lidars x 16 = 60, the paper's size.

Each is its ``...Reference`` class (the task defined with safety-gymnasium's own step code) plus
:class:`~task_distributions.fast_step.FastStepMixin` (the same values, computed faster). The
registered ids use the fast classes; the tests compare them with the references. They are plugged
into safety-gymnasium's ``Builder`` by :class:`task_distributions.builder.TaskBuilder` (the stock
builder finds task classes by name in ``safety_gymnasium.tasks`` only).

Lidar observations have ``lidar_conf.num_bins`` entries per object *kind*, whatever the number of
objects, so the observation size is fixed by which kinds exist at construction, not by counts: a
kind a distribution varies must exist from the start (the hazards here), and its count may change
between episodes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from safety_gymnasium.assets.geoms import Hazards
from safety_gymnasium.tasks.safe_navigation.button.button_level1 import ButtonLevel1
from safety_gymnasium.tasks.safe_navigation.circle import circle_level1

from task_distributions.fast_step import FastGoalButtonMixin, FastStepMixin


class EmptyKindsMixin:
    """Lets an object kind have zero objects (a distribution may draw ``hazards: 0``).

    safety-gymnasium's pseudo-lidar turns an empty position list into one empty position and fails
    on it (``assert pos.shape == (2,)``); with no object of a kind the lidar reads all zeros, which
    is what it reads when every object is out of range.
    """

    supports_empty_kinds = True

    def _obs_lidar_pseudo(self, positions: Any) -> np.ndarray:
        if len(positions) == 0:
            return np.zeros(self.lidar_conf.num_bins)  # type: ignore[attr-defined]
        return super()._obs_lidar_pseudo(positions)  # type: ignore[misc]


class CircleHazardLevel1Reference(EmptyKindsMixin, circle_level1.CircleLevel1):
    """Circle level 1 with hazards (the paper's Car-Circle-Hazard with the Car agent).

    The Circle agent starts with keepout 0 (stock Circle), so a hazard's keepout alone keeps the
    start out of it: it must exceed the hazard's size (0.2), or ``Builder.reset`` fails with "World
    has starting cost!". 0.3 leaves 0.1 between the start and the nearest hazard's edge and lets the
    test split's 12 hazards cover about a fifth of the stock +-2 extents.
    """

    #: Hazards at construction (a task distribution sets the count per episode).
    default_hazards = 5
    hazard_keepout = 0.3

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config=config)
        self._add_geoms(Hazards(num=self.default_hazards, keepout=self.hazard_keepout))


class ButtonNoGremlinsLevel1Reference(EmptyKindsMixin, ButtonLevel1):
    """Button level 1 without gremlins (the paper's Point-Button with the Point agent).

    Derived from level 1, not rebuilt from level 0, so its extents, hazards and constrained buttons
    stay whatever safety-gymnasium's level 1 defines; only the gremlins (a mocap kind) are taken out
    before the observation space is built. That also removes their per-substep mocap update
    (``Gremlins.move``: ten ``np.r_`` + name look-ups per gremlin per step), the largest share of a
    stock Button1 step.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config=config)
        del self._mocaps['gremlins']
        del self.gremlins


class CircleLevel1(FastStepMixin, circle_level1.CircleLevel1):
    """Point-Circle: safety-gymnasium's Circle level 1 with faster (identical) steps."""


class CircleHazardLevel1(FastStepMixin, CircleHazardLevel1Reference):
    """Car-Circle-Hazard with faster (identical) steps."""


class ButtonNoGremlinsLevel1(FastGoalButtonMixin, FastStepMixin, ButtonNoGremlinsLevel1Reference):
    """Point-Button with faster (identical) steps."""
