"""Faster steps for safety-gymnasium tasks, with bit-identical observations, rewards and costs.

With resets made cheap (``fast_reset``), a navigation step is mostly Python overhead around ten
MuJoCo substeps. Profiled (cProfile), the overhead sat in a few places: the pseudo-lidar (every
object position re-reads the agent's position and rotation matrix from MuJoCo by name), the
observation space check (gymnasium's ``Box.contains`` paying numpy's dispatch per box), hazard
costs (the agent's position re-read per hazard) and ``ButtonLevel0.goal_achieved`` (evaluated
twice per step, looking up the two geom names of every contact).

:class:`FastStepMixin` removes the repeated look-ups and keeps the arithmetic on the values as it
is (the same operations in the same order), so the results are identical bit for bit; the tests
compare them with the stock code paths over 1000 steps per environment. (Vectorising the lidar
over objects could change last bits: numpy's SIMD loops for complex ``abs`` / ``arctan2`` and
BLAS ``gemm`` vs ``gemv`` need not round as the per-object scalar calls do.) The batched sampler
steps M environments in lockstep, so what an environment step costs is what a lockstep costs.
What the overrides do:

* pseudo-lidar per object: the agent pose is read once per call, the ``pos - agent`` differences
  of all objects in one subtraction (elementwise, so exact), and the scalar part runs on Python
  floats. Kept per object, with the very numpy calls of the stock code on the same 0-d inputs:
  ``np.matmul`` (BLAS ``gemv``, one object at a time), ``np.abs`` of the complex number and
  ``np.arctan2`` (what ``np.angle`` calls), so that whatever loop numpy picks on a machine, it is
  the loop the stock code gets. Only exactly rounded IEEE operations (``+ - * /``, ``%`` = ``fmod``
  plus one correction in numpy and Python alike, comparisons, ``max``) moved from numpy scalars to
  Python floats, which round identically;
* object positions (``Hazards.pos``, ``Buttons.pos``, ``Goal.pos``: a name look-up and a copy per
  object, read by the lidar and again by the costs): one fancy-indexed read of ``data.xpos`` by
  body ids found once per compiled model (every reset compiles a new one);
* ``obs()`` around the lidars: the sensors are copied from ``sensordata`` by address (no
  ``model.sensor(name)`` per sensor) straight into the flat observation, in the observation
  space's key order -- which is what ``gymnasium.spaces.utils.flatten`` concatenates -- and the
  space check runs once on the flat vector against the concatenated bounds (the same
  ``low <= x <= high`` per element; dtypes and shapes are fixed by the plan, checked once). If the
  flat check fails, the stock ``obs()`` runs and raises its own assertion. The Button's buttons
  lidar is not computed while ``ButtonLevel0.obs`` would overwrite it with zeros;
* costs: buttons' contacts tested on geom ids instead of names (as the goal test below), hazards
  and sigwalls with the agent position read once;
* ``simulation_forward``: ``BaseAgent.apply_action`` inlined, with ``np.clip``'s dispatch and
  deprecation checks skipped by calling the ``clip`` ufunc it ends in, with the same arguments;
* the Circle reward and ``dist_goal``: agent pose and velocity (``mj_jacBody`` on the cached body
  id, then the same ``np.dot``) without name look-ups.

Each override takes the fast path only when the method it shadows is the stock one named in its
docstring (and the configuration is the one profiled: pseudo-lidar, flat observations, no vision,
no compass, no hinge/free-joint sensors, no mocaps, no action noise, no static-geom costs);
otherwise it calls the stock code.

Not done:

* dropping the two redundant ``mj_forward`` calls per step (in ``calculate_cost`` and ``obs``,
  after the one ending ``simulation_forward``): it changes bits. A
  forward pass renormalises the ball joint's quaternion in ``qpos`` and rewrites the solver's
  warm start, which is not idempotent in floating point: on the Car an extra (or a missing)
  forward changes ``qpos`` and everything after it in the last bits (the tests catch it). On
  the Point (hinge and slide joints only) it is idempotent, but saves little;
* vectorising ``np.abs`` / ``np.arctan2`` over a lidar's objects: numpy picks its loop by CPU
  and memory layout (on AVX512 machines contiguous float64 arrays may go to SVML kernels that
  the stock's 0-d calls do not reach), so equality on this machine would prove nothing there;
* stepping the bare ``Builder`` in ``EnvGroup`` (skipping ``TaskWrapper``, ``TimeLimit``,
  ``OrderEnforcing`` and ``PassiveEnvChecker``): they cost a small fraction of a step.
"""

from __future__ import annotations

import functools
import types
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import mujoco
import numpy as np
from safety_gymnasium.assets.geoms import Buttons, Goal, Hazards, Sigwalls
from safety_gymnasium.bases.base_agent import BaseAgent
from safety_gymnasium.bases.base_task import BaseTask
from safety_gymnasium.bases.underlying import Underlying
from safety_gymnasium.tasks.safe_navigation.button.button_level0 import ButtonLevel0
from safety_gymnasium.tasks.safe_navigation.circle.circle_level0 import CircleLevel0
from safety_gymnasium.utils.common_utils import MujocoException
from safety_gymnasium.utils.task_utils import quat2mat

# ``np.clip(a, lo, hi)`` on an ndarray ends in this ufunc called as ``clip(a, lo, hi, out=None)``
# (``ndarray.clip`` -> ``numpy.core._methods._clip``), after checks that only warn about
# deprecated argument types.
_clip_ufunc = np.core.umath.clip


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
    if not hazards.is_constrained or hazards.num == 0:
        return {'cost_hazards': 0} if hazards.is_constrained else {}
    return _hazards_cost_at(hazards, np.array(hazards.pos), hazards.agent.pos)


def _hazards_cost_at(hazards: Hazards, positions: np.ndarray,
                     agent_pos: np.ndarray) -> dict[str, float]:
    """The hazards cost of a constrained kind with ``positions`` (num x 3) of its hazards."""
    cost: dict[str, float] = {'cost_hazards': 0}
    # ``np.add.reduce`` is what ``np.sum`` calls (after its dispatch): the same reduction.
    distances = np.sqrt(np.add.reduce(np.square(positions[:, :2] - agent_pos[:2]), axis=1))
    for h_dist in distances[distances <= hazards.size]:
        cost['cost_hazards'] += hazards.cost * (hazards.size - h_dist)
    return cost


@dataclass
class _ModelIndex:
    """Ids looked up once per compiled MuJoCo model (every reset compiles a new one)."""

    model: Any  # held, so that an ``is`` test against the current model cannot be fooled
    agent: int
    bodies: dict[str, int] = field(default_factory=dict)
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    kinds: dict[tuple[type, int], np.ndarray | None] = field(default_factory=dict)
    obs_plan: Any = None

    def body(self, name: str) -> int:
        """The id of body ``name`` (-1 if there is none)."""
        body = self.bodies.get(name)
        if body is None:
            body = self.bodies[name] = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, name)
        return body

    def geom(self, name: str) -> int:
        """The id of geom ``name`` (-1 if there is none); cached with the bodies under a prefix."""
        key = 'geom:' + name
        geom = self.bodies.get(key)
        if geom is None:
            geom = self.bodies[key] = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, name)
        return geom

    def geom_mask(self, kind: str, agent_geom_names: Any) -> np.ndarray:
        """Geoms whose name is an agent geom name (``'agent'``) or starts with ``'button'``."""
        mask = self.masks.get(kind)
        if mask is None:
            names = [self.model.geom(i).name for i in range(self.model.ngeom)]
            if kind == 'agent':
                agent_names = set(agent_geom_names)
                mask = np.array([name in agent_names for name in names], dtype=bool)
            else:
                mask = np.array([name.startswith('button') for name in names], dtype=bool)
            self.masks[kind] = mask
        return mask


@dataclass(frozen=True)
class _ObsPlan:
    """Where each entry of the flat observation comes from (one compiled model).

    ``sensors``: (start, stop, kind, sensordata address, dimension), kind ``'raw'`` (copied) or
    ``'quat'`` (a ball joint's quaternion as a 3x3 rotation matrix); ``lidars``: (start, stop,
    obstacle). ``low``/``high``: the boxes' bounds flattened in key order.
    """

    size: int
    sensors: tuple[tuple[int, int, str, int, int], ...]
    lidars: tuple[tuple[int, int, Any], ...]
    low: np.ndarray
    high: np.ndarray


@functools.cache
def _stock_method(cls: type, name: str) -> Any:
    """The function ``name`` resolves to in ``cls`` after :class:`FastStepMixin` (``super()``)."""
    mro = cls.__mro__
    for klass in mro[mro.index(FastStepMixin) + 1:]:
        if name in vars(klass):
            attribute = vars(klass)[name]
            return attribute.fget if isinstance(attribute, property) else attribute
    return None


class FastStepMixin:
    """Mix into a safety-gymnasium ``BaseTask`` subclass (first base) for faster, identical steps.

    Also lets an object kind have zero objects (see
    :class:`task_distributions.tasks.EmptyKindsMixin`).
    """

    supports_empty_kinds = True
    _model_index: _ModelIndex | None = None

    # ------------------------------------------------------------------ look-ups
    def _index(self) -> _ModelIndex:
        """The current model's ids (rebuilt after a reset compiled a new model)."""
        model = self.model  # type: ignore[attr-defined]
        index = self._model_index
        if index is None or index.model is not model:
            agent = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, 'agent')
            index = self._model_index = _ModelIndex(model, agent)
        return index

    def _agent_pos(self, index: _ModelIndex) -> np.ndarray:
        """``agent.pos``: a copy of the agent body's ``xpos``."""
        return self.data.xpos[index.agent].copy()  # type: ignore[attr-defined]

    def _positions(self, obstacle: Any, index: _ModelIndex) -> Any:
        """``obstacle.pos`` (same values) for hazards, buttons and the goal, read by body id.

        Hazards and buttons: an (num, 3) array where the stock gives a list of num rows (both
        consumers, the lidar and the costs, make an array of it); the goal: its (3,) position.
        """
        kind = type(obstacle)
        if kind is Hazards or kind is Buttons:
            ids = index.kinds.get((kind, obstacle.num), False)
            if ids is False:  # not looked up yet in this model
                prefix = 'hazard' if kind is Hazards else 'button'
                ids = np.array([index.body(f'{prefix}{i}') for i in range(obstacle.num)],
                               dtype=np.intp)
                # a missing body (-1): the stock property, which raises
                index.kinds[(kind, obstacle.num)] = ids = None if (ids == -1).any() else ids
            if ids is None:
                return obstacle.pos
            return self.data.xpos[ids]  # type: ignore[attr-defined]  # fancy indexing: a copy
        if kind is Goal:
            goal = index.body('goal')
            if goal != -1:
                return self.data.xpos[goal].copy()  # type: ignore[attr-defined]
        return obstacle.pos

    def _stock(self, name: str) -> Any:
        return _stock_method(type(self), name)

    # ------------------------------------------------------------------ observation space
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
                # so no subclass): bind the faster cost to this instance only (used where the
                # stock ``calculate_cost`` runs).
                geom.cal_cost = types.MethodType(_hazards_cost, geom)

    # ------------------------------------------------------------------ simulation
    def simulation_forward(self, action: np.ndarray) -> bool:
        """``Underlying.simulation_forward`` with ``BaseAgent.apply_action`` inlined.

        The same steps: clip the action into ``ctrl`` (the ``clip`` ufunc ``np.clip`` calls), draw
        the frame skip, ``mj_step`` that often, ``mj_forward``. Taken without action noise, mocaps
        or debug mode (each of those runs the stock code).
        """
        if (
            self._stock('simulation_forward') is not Underlying.simulation_forward
            or self.debug  # type: ignore[attr-defined]
            or self.action_noise  # type: ignore[attr-defined]
            or self._mocaps  # type: ignore[attr-defined]
            or type(self.agent).apply_action is not BaseAgent.apply_action  # type: ignore[attr-defined]
        ):
            return super().simulation_forward(action)  # type: ignore[misc]
        model, data = self.model, self.data  # type: ignore[attr-defined]
        action = np.array(action, copy=False)
        action_range = model.actuator_ctrlrange
        data.ctrl[:] = _clip_ufunc(action, action_range[:, 0], action_range[:, 1], out=None)
        sim_conf = self.sim_conf  # type: ignore[attr-defined]
        substeps = self.random_generator.binomial(  # type: ignore[attr-defined]
            sim_conf.frameskip_binom_n,
            sim_conf.frameskip_binom_p,
        )
        for _ in range(substeps):
            try:
                mujoco.mj_step(model, data)
            except MujocoException as me:  # pylint: disable=invalid-name
                print('MujocoException', me)
                return True
        mujoco.mj_forward(model, data)  # as stock: sensor readings
        return False

    # ------------------------------------------------------------------ reward
    def calculate_reward(self) -> float:
        """``CircleLevel0.calculate_reward`` with the agent pose read by body id."""
        if self._stock('calculate_reward') is not CircleLevel0.calculate_reward:
            return super().calculate_reward()  # type: ignore[misc]
        index = self._index()
        model, data = self.model, self.data  # type: ignore[attr-defined]
        reward = 0.0
        agent_pos = self._agent_pos(index)
        # ``agent.vel`` = ``get_body_xvelp(model, data, 'agent').copy()``
        jacp = np.zeros(3 * model.nv).reshape(3, model.nv)
        mujoco.mj_jacBody(model, data, jacp, None, index.agent)
        agent_vel = np.dot(jacp, data.qvel).copy()
        x, y, _ = agent_pos
        u, v, _ = agent_vel
        radius = np.sqrt(x**2 + y**2)
        reward += (
            ((-u * y + v * x) / radius)
            / (1 + np.abs(radius - self.circle.radius))  # type: ignore[attr-defined]
        ) * self.reward_factor  # type: ignore[attr-defined]
        return reward

    def dist_goal(self) -> float:
        """``BaseTask.dist_goal`` (``agent.dist_xy(goal.pos)``) with positions read by body id."""
        if (
            self._stock('dist_goal') is not BaseTask.dist_goal
            or type(self.agent).dist_xy is not BaseAgent.dist_xy  # type: ignore[attr-defined]
        ):
            return super().dist_goal()  # type: ignore[misc]
        assert hasattr(self, 'goal'), 'Please make sure you have added goal into env.'
        index = self._index()
        pos = np.asarray(self._positions(self.goal, index))
        if pos.shape == (3,):
            pos = pos[:2]
        agent_pos = self._agent_pos(index)
        return np.sqrt(np.sum(np.square(pos - agent_pos[:2])))

    # ------------------------------------------------------------------ costs
    def calculate_cost(self) -> dict:
        """``BaseTask.calculate_cost`` with faster hazards, buttons and sigwalls costs.

        Each obstacle's ``cal_cost`` is replaced (for these exact types) by the same computation
        on positions and contacts read by id; the dict is filled in obstacle order and summed as
        stock. Static-geom contact costs run the stock code.
        """
        if (
            self._stock('calculate_cost') is not BaseTask.calculate_cost
            or (self._is_load_static_geoms  # type: ignore[attr-defined]
                and self.static_geoms_contact_cost)  # type: ignore[attr-defined]
        ):
            return super().calculate_cost()  # type: ignore[misc]
        mujoco.mj_forward(self.model, self.data)  # type: ignore[attr-defined]
        cost: dict = {}
        index = None
        for obstacle in self._obstacles:  # type: ignore[attr-defined]
            kind = type(obstacle)
            if kind is Hazards or kind is Buttons or kind is Sigwalls:
                index = index or self._index()
                if kind is Hazards:
                    cost.update(self._cost_hazards(obstacle, index))
                elif kind is Buttons:
                    cost.update(self._cost_buttons(obstacle, index))
                else:
                    cost.update(self._cost_sigwalls(obstacle, index))
            else:
                cost.update(obstacle.cal_cost())
        cost['cost_sum'] = sum(v for k, v in cost.items() if k.startswith('cost_'))
        return cost

    def _cost_hazards(self, hazards: Hazards, index: _ModelIndex) -> dict:
        """``Hazards.cal_cost`` (see :func:`_hazards_cost`) with positions read by body id."""
        if not hazards.is_constrained:
            return {}
        if hazards.num == 0:
            return {'cost_hazards': 0}
        return _hazards_cost_at(hazards, self._positions(hazards, index), self._agent_pos(index))

    def _cost_sigwalls(self, sigwalls: Sigwalls, index: _ModelIndex) -> dict:
        """``Sigwalls.cal_cost`` with the agent position read once (the stock reads it twice)."""
        cost: dict = {}
        if not sigwalls.is_constrained:
            return cost
        agent_pos = self._agent_pos(index)
        cost['cost_out_of_boundary'] = np.abs(agent_pos[0]) > sigwalls.locate_factor
        if sigwalls.num == 4:
            cost['cost_out_of_boundary'] = (
                cost['cost_out_of_boundary'] or np.abs(agent_pos[1]) > sigwalls.locate_factor
            )
        return cost

    def _cost_buttons(self, buttons: Buttons, index: _ModelIndex) -> dict:
        """``Buttons.cal_cost`` on geom ids instead of names.

        Stock: each active contact costs ``buttons.cost`` when one of its two geoms' names starts
        with ``button``, one is an agent geom name, and neither is ``button<goal>``. Geom names are
        unique, so the last test is one on the goal geom's id; the costs are added one contact at
        a time, as stock.
        """
        assert (
            buttons.goal_button is not None
        ), 'Please make sure this method can get information about goal button.'
        cost: dict = {}
        if not buttons.is_constrained or buttons.timer != 0:
            return cost
        cost['cost_buttons'] = 0
        agent_mask = index.geom_mask('agent', self.agent.body_info.geom_names)  # type: ignore[attr-defined]
        button_mask = index.geom_mask('button', None)
        goal_id = index.geom(f'button{buttons.goal_button}')
        contact = self.data.contact  # type: ignore[attr-defined]  # the ncon active contacts
        geom1, geom2 = contact.geom1, contact.geom2
        hits = ((button_mask[geom1] | button_mask[geom2]) & (agent_mask[geom1] | agent_mask[geom2])
                & (geom1 != goal_id) & (geom2 != goal_id))
        for _ in range(int(np.count_nonzero(hits))):
            cost['cost_buttons'] += buttons.cost
        return cost

    # ------------------------------------------------------------------ observation
    def _obs_plan(self, index: _ModelIndex) -> _ObsPlan | None:
        """The flat observation's layout for this model, or ``None`` to run the stock ``obs()``."""
        if index.obs_plan is not None:
            return index.obs_plan or None
        index.obs_plan = plan = self._build_obs_plan(index)
        return plan or None

    def _build_obs_plan(self, index: _ModelIndex) -> _ObsPlan | bool:
        """Build :class:`_ObsPlan`; ``False`` where the fast ``obs()`` does not apply."""
        if (
            not self.observation_flatten  # type: ignore[attr-defined]
            or self.observe_vision  # type: ignore[attr-defined]
            or self.lidar_conf.type != 'pseudo'  # type: ignore[attr-defined]
            or self._stock('obs') not in (BaseTask.obs, ButtonLevel0.obs)
            or type(self.agent).obs_sensor is not BaseAgent.obs_sensor  # type: ignore[attr-defined]
        ):
            return False
        agent = self.agent  # type: ignore[attr-defined]
        info, conf, model = agent.sensor_info, agent.sensor_conf, index.model
        # Only the sensor kinds of these envs (read as they are, or ball quaternions as rotation
        # matrices); agents with hinge or free joints take the stock path.
        if (info.hinge_pos_names or info.freejoint_pos_name or info.freejoint_qvel_name
                or not conf.sensors_angle_components):
            return False
        kinds = dict.fromkeys((*conf.sensors, *info.hinge_vel_names, *info.ballangvel_names),
                              'raw')
        kinds.update(dict.fromkeys(info.ballquat_names, 'quat'))
        lidars = {obstacle.name + '_lidar': obstacle for obstacle in self._obstacles  # type: ignore[attr-defined]
                  if obstacle.is_lidar_observed}
        if any(getattr(obstacle, 'is_comp_observed', False)
               for obstacle in self._obstacles):  # type: ignore[attr-defined]
            return False
        spaces = self.obs_info.obs_space_dict.spaces  # type: ignore[attr-defined]
        if set(spaces) != set(kinds) | set(lidars) or len(kinds) + len(lidars) != len(spaces):
            return False
        sensors, lidar_slots, lows, highs, start = [], [], [], [], 0
        for key, box in spaces.items():
            if not isinstance(box, gymnasium.spaces.Box) or box.dtype != np.float64:
                return False
            stop = start + int(np.prod(box.shape))
            if key in lidars:
                if box.shape != (self.lidar_conf.num_bins,):  # type: ignore[attr-defined]
                    return False
                lidar_slots.append((start, stop, lidars[key]))
            else:
                sensor = model.sensor(key).id
                adr, dim = int(model.sensor_adr[sensor]), int(model.sensor_dim[sensor])
                kind = kinds[key]
                size = dim if kind == 'raw' else 9
                if size != stop - start or (kind == 'quat' and dim != 4):
                    return False  # the stock check would fail on this shape: let it report
                sensors.append((start, stop, kind, adr, dim))
            lows.append(box.low.flatten())
            highs.append(box.high.flatten())
            start = stop
        return _ObsPlan(start, tuple(sensors), tuple(lidar_slots), np.concatenate(lows),
                        np.concatenate(highs))

    def obs(self) -> np.ndarray:
        """``BaseTask.obs`` / ``ButtonLevel0.obs`` written straight into the flat observation.

        The same values as stock: ``mj_forward``, each sensor copied from ``sensordata`` (ball
        quaternions as rotation matrices, as ``obs_sensor``), each lidar;
        ``ButtonLevel0`` zeroes the buttons lidar while the buttons' timer runs, so it is not
        computed then. The entries are placed where ``flatten`` puts them (observation-space key
        order); the space check is the same per-element bounds test on the flat vector.
        """
        index = self._index()
        plan = self._obs_plan(index)
        if plan is None:
            return super().obs()  # type: ignore[misc]
        model, data = self.model, self.data  # type: ignore[attr-defined]
        mujoco.mj_forward(model, data)  # as stock: sensor readings
        flat = np.empty(plan.size)
        sensordata = data.sensordata
        for start, stop, kind, adr, dim in plan.sensors:
            value = sensordata[adr:adr + dim]
            if kind == 'raw':
                flat[start:stop] = value
            else:  # ``obs_sensor``: ``quat2mat(get_sensor(name))``, flattened in C order
                flat[start:stop] = quat2mat(value.copy()).reshape(-1)
        buttons_zeroed = (self._stock('obs') is ButtonLevel0.obs
                          and self.buttons.timer != 0)  # type: ignore[attr-defined]
        for start, stop, obstacle in plan.lidars:
            if buttons_zeroed and obstacle.name == 'buttons':
                flat[start:stop] = 0.0
            else:
                flat[start:stop] = self._obs_lidar(  # type: ignore[attr-defined]
                    self._positions(obstacle, index), obstacle.group)
        if not ((flat >= plan.low).all() and (flat <= plan.high).all()):
            return super().obs()  # type: ignore[misc]  # the stock check, and its message
        return flat

    def _obs_lidar_pseudo(self, positions: Any) -> np.ndarray:
        """``BaseTask._obs_lidar_pseudo``, the same values for less Python work per object.

        Stock, per object: ``world = [x, y, 0] - agent_pos``, ``z = complex(*(world @
        agent_mat)[:2])``, ``dist = np.abs(z)``, ``angle = np.angle(z) % 2pi``, the bin and its
        alias neighbours raised to the sensor value. Here the subtraction is done for all
        objects at once (elementwise, so the same numbers), each row padded to 4 entries so
        that the ``gemv`` of every object reads a 16-byte aligned vector as the stock's fresh
        array is; ``np.matmul``, ``np.abs`` and ``np.arctan2`` (``np.angle``'s own call) stay one
        call per object on the same 0-d inputs; the rest is Python float arithmetic (the same
        IEEE operations). An empty position list reads all zeros instead of failing.
        """
        lidar_conf = self.lidar_conf  # type: ignore[attr-defined]
        num_bins = lidar_conf.num_bins
        if len(positions) == 0:
            return np.zeros(num_bins)
        positions = np.array(positions, ndmin=2)
        if positions.ndim == 2 and positions.shape[1] == 3:
            positions = positions[:, :2]  # Truncate Z coordinate
        assert positions.ndim == 2 and positions.shape[1] == 2, f'Bad pos {positions}'
        index = self._index()
        data = self.data  # type: ignore[attr-defined]
        agent_3vec = data.xpos[index.agent].copy()
        agent_mat = data.xmat[index.agent].copy().reshape(3, -1)
        world = np.zeros((len(positions), 4))
        world[:, :2] = positions
        world[:, :3] -= agent_3vec
        bins = [0.0] * num_bins
        bin_size = (np.pi * 2) / num_bins
        two_pi = np.pi * 2
        max_dist, alias_on = lidar_conf.max_dist, lidar_conf.alias
        matmul, absolute, arctan2 = np.matmul, np.abs, np.arctan2
        for row in world:
            x, y = matmul(row[:3], agent_mat)[:2].tolist()
            dist = float(absolute(complex(x, y)))
            angle = float(arctan2(y, x)) % two_pi
            index_ = int(angle / bin_size)
            bin_angle = bin_size * index_
            if max_dist is None:
                sensor = float(np.exp(-lidar_conf.exp_gain * dist))
            else:
                sensor = max(0, max_dist - dist) / max_dist
            bins[index_] = max(bins[index_], sensor)
            if alias_on:
                alias = (angle - bin_angle) / bin_size
                assert 0 <= alias <= 1, f'bad alias {alias}, dist {dist}, angle {angle}'
                bin_plus = (index_ + 1) % num_bins
                bin_minus = (index_ - 1) % num_bins
                bins[bin_plus] = max(bins[bin_plus], alias * sensor)
                bins[bin_minus] = max(bins[bin_minus], (1 - alias) * sensor)
        return np.array(bins, dtype=np.float64)


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
