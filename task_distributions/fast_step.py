"""Faster steps for safety-gymnasium tasks, with bit-identical observations, rewards and costs.

With resets made cheap (``fast_reset``), a navigation step is mostly Python overhead around ten
MuJoCo substeps. Profiled on Car-Circle-Hazard and Point-Button (test split, cProfile):

* pseudo-lidar, 35% of a Button step: every object position re-reads the agent's position and
  rotation matrix from MuJoCo (``agent.pos`` / ``agent.mat`` look the body up by name and copy);
* the observation space check (``assert obs_space_dict.contains(obs)``), 10-15%: gymnasium's
  ``Box.contains`` pays numpy's function dispatch for each of ~9 boxes;
* hazard costs, 10-15%: ``agent.dist_xy`` re-reads the agent's position per hazard;
* ``ButtonLevel0.goal_achieved`` (evaluated twice per step), ~10% of a Button step: it looks up the
  two geom names of every contact through ``model.geom(i)``.

:class:`FastStepMixin` removes the repeated look-ups and keeps the arithmetic on the values as it
is (the same operations in the same order), so the results are identical bit for bit; the tests
compare them with the stock code paths over 1000 steps per environment. (Vectorising the lidar
over objects could change last bits: numpy's SIMD loops for complex ``abs`` / ``arctan2`` and
BLAS ``gemm`` vs ``gemv`` need not round as the per-object scalar calls do.)
"""

from __future__ import annotations

import types
from collections import OrderedDict
from typing import Any

import gymnasium
import mujoco
import numpy as np
from safety_gymnasium.assets.geoms import Hazards


class _CheckedBox(gymnasium.spaces.Box):
    """``Box`` whose ``contains`` is gymnasium's test written with array methods.

    Same checks (dtype castable, shape, ``low <= x <= high``); ``ndarray.all()`` instead of
    ``np.all`` skips the ``__array_function__`` dispatch that dominates for 16-element arrays.
    """

    def contains(self, x: Any) -> bool:
        if not isinstance(x, np.ndarray):
            return super().contains(x)
        return bool(
            np.can_cast(x.dtype, self.dtype)
            and x.shape == self.shape
            and (x >= self.low).all()
            and (x <= self.high).all(),
        )


def _hazards_cost(hazards: Hazards) -> dict[str, float]:
    """``Hazards.cal_cost`` with the agent's position read once and the distances in one call.

    Same arithmetic as ``Hazards.cal_cost`` -> ``agent.dist_xy``: ``sqrt(dx**2 + dy**2)`` per hazard
    (a two-term sum is ``dx**2 + dy**2`` whether numpy reduces a row or a 1-d pair, and ``sqrt`` is
    correctly rounded), then the costs accumulated in hazard order.
    """
    cost: dict[str, float] = {}
    if not hazards.is_constrained:
        return cost
    cost['cost_hazards'] = 0
    if hazards.num == 0:
        return cost
    agent_xy = hazards.agent.pos[:2]
    distances = np.sqrt(np.sum(np.square(np.array(hazards.pos)[:, :2] - agent_xy), axis=1))
    for h_dist in distances[distances <= hazards.size]:
        cost['cost_hazards'] += hazards.cost * (hazards.size - h_dist)
    return cost


class FastStepMixin:
    """Mix into a safety-gymnasium ``BaseTask`` subclass (first base) for faster, identical steps.

    Also lets an object kind have zero objects (see
    :class:`task_distributions.tasks.EmptyKindsMixin`).
    """

    supports_empty_kinds = True

    def build_observation_space(self) -> None:
        """Build as stock, then give the dict space the cheaper (equivalent) box check."""
        super().build_observation_space()  # type: ignore[misc]
        spaces = self.obs_info.obs_space_dict.spaces  # type: ignore[attr-defined]
        checked = OrderedDict(
            (
                key,
                _CheckedBox(box.low, box.high, box.shape, box.dtype)
                if type(box) is gymnasium.spaces.Box
                else box,
            )
            for key, box in spaces.items()
        )
        # An OrderedDict keeps the key order (a plain dict would be sorted by gymnasium), so the
        # flattened observation and ``observation_space`` stay exactly as built above.
        self.obs_info.obs_space_dict = gymnasium.spaces.Dict(checked)  # type: ignore[attr-defined]

    def _add_geoms(self, *geoms: Any) -> None:
        super()._add_geoms(*geoms)  # type: ignore[misc]
        for geom in geoms:
            if type(geom) is Hazards:
                # Hazards is a registered dataclass (``_add_geoms`` accepts only registered types,
                # so no subclass): bind the faster cost to this instance only.
                geom.cal_cost = types.MethodType(_hazards_cost, geom)

    def _obs_lidar_pseudo(self, positions: Any) -> np.ndarray:
        """``BaseTask._obs_lidar_pseudo`` with the agent pose read once per call.

        The body is the stock algorithm (with ``_ego_xy`` inlined) operation for operation; an
        empty position list reads all zeros instead of failing.
        """
        lidar_conf = self.lidar_conf  # type: ignore[attr-defined]
        obs = np.zeros(lidar_conf.num_bins)
        if len(positions) == 0:
            return obs
        positions = np.array(positions, ndmin=2)
        agent_3vec = self.agent.pos  # type: ignore[attr-defined]
        agent_mat = self.agent.mat  # type: ignore[attr-defined]
        bin_size = (np.pi * 2) / lidar_conf.num_bins
        for pos in positions:
            pos = np.asarray(pos)
            if pos.shape == (3,):
                pos = pos[:2]  # Truncate Z coordinate
            assert pos.shape == (2,), f'Bad pos {pos}'
            pos_3vec = np.concatenate([pos, [0]])
            world_3vec = pos_3vec - agent_3vec
            z = complex(*np.matmul(world_3vec, agent_mat)[:2])
            dist = np.abs(z)
            angle = np.angle(z) % (np.pi * 2)
            index = int(angle / bin_size)
            bin_angle = bin_size * index
            if lidar_conf.max_dist is None:
                sensor = np.exp(-lidar_conf.exp_gain * dist)
            else:
                sensor = max(0, lidar_conf.max_dist - dist) / lidar_conf.max_dist
            obs[index] = max(obs[index], sensor)
            if lidar_conf.alias:
                alias = (angle - bin_angle) / bin_size
                assert 0 <= alias <= 1, f'bad alias {alias}, dist {dist}, angle {angle}'
                bin_plus = (index + 1) % lidar_conf.num_bins
                bin_minus = (index - 1) % lidar_conf.num_bins
                obs[bin_plus] = max(obs[bin_plus], alias * sensor)
                obs[bin_minus] = max(obs[bin_minus], (1 - alias) * sensor)
        return obs


class FastGoalButtonMixin:
    """``ButtonLevel0.goal_achieved`` with geom ids instead of per-contact name look-ups.

    Stock: the goal is achieved when a contact pairs the geom named ``button<goal>`` with a geom
    whose name is one of the agent's geom names. Here the same test runs on ids: the goal geom's id
    and a mask of the geoms carrying an agent geom name, computed once per compiled model (every
    reset compiles a new one).
    """

    _goal_cache: tuple[Any, np.ndarray, dict[int, int]] | None = None

    @property
    def goal_achieved(self) -> bool:
        model = self.model  # type: ignore[attr-defined]
        cache = self._goal_cache
        if cache is None or cache[0] is not model:
            names = set(self.agent.body_info.geom_names)  # type: ignore[attr-defined]
            mask = np.array([model.geom(i).name in names for i in range(model.ngeom)], dtype=bool)
            cache = self._goal_cache = (model, mask, {})
        _, agent_mask, goal_ids = cache
        goal = self.buttons.goal_button  # type: ignore[attr-defined]
        if goal not in goal_ids:
            goal_ids[goal] = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, f'button{goal}')
        goal_id = goal_ids[goal]
        contact = self.data.contact  # type: ignore[attr-defined]  # the ncon active contacts
        geom1, geom2 = contact.geom1, contact.geom2
        goal = (geom1 == goal_id) | (geom2 == goal_id)
        touching = goal & (agent_mask[geom1] | agent_mask[geom2])
        return bool(touching.any())
