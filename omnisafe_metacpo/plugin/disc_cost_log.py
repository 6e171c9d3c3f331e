"""The paper's discounted cost per episode in the progress of stock OmniSafe algorithms.

OmniSafe's ``OnPolicyAdapter`` logs the undiscounted ``Metrics/EpCost`` of every finished episode.
Meta-CPO's paper judges safety by J_C = E[sum_t gamma^t c_t] (Cho & Sun, section 3), so every
algorithm of the comparison -- CPO, TRPO and CPOCorrected run OmniSafe's adapter -- also logs
``Metrics/EpDiscCost``: sum_t gamma^t c_t of each finished episode from its own start, gamma =
``algo_cfgs.cost_gamma``, window-averaged like ``Metrics/EpCost``.

Adaptation from outside (OmniSafe is not edited): ``install`` wraps three methods of
``OnPolicyAdapter`` (``_reset_log``, ``_log_value``, ``_log_metrics``: where OmniSafe keeps and
logs its episode sums) and ``PolicyGradient._init_log`` (to register the key). It acts only on the
plug-in's task-distribution environments, so the progress of any other OmniSafe run keeps its
columns. The adapter can also record each step's position in its episode
(``record_steps``), from which CPOCorrected weights its discounted cost surrogate.
"""

from __future__ import annotations

from typing import Any

import torch
from omnisafe.adapter import OnPolicyAdapter
from omnisafe.algorithms.on_policy.base.policy_gradient import PolicyGradient

from omnisafe_metacpo.sampling.envs import TaskDistributionEnv, unwrapped

#: The progress column (stock OmniSafe's ``Metrics/EpCost`` is the undiscounted sum).
KEY = 'Metrics/EpDiscCost'


def _discount(adapter: Any) -> float | None:
    """``cost_gamma`` if the adapter runs a task-distribution env of the plug-in, else None."""
    env = unwrapped(adapter._env)  # pylint: disable=protected-access
    if not isinstance(env, TaskDistributionEnv):
        return None
    return float(adapter._cfgs.algo_cfgs.get('cost_gamma', 0.99))  # pylint: disable=protected-access


def record_steps(adapter: Any) -> None:
    """Make ``adapter`` record every step's position in its episode (:func:`take_steps`)."""
    adapter._metacpo_steps = []  # pylint: disable=protected-access


def take_steps(adapter: Any) -> torch.Tensor:
    """The positions t - (episode start) of the steps since the last call, (steps, num_envs)."""
    steps = adapter._metacpo_steps  # pylint: disable=protected-access
    adapter._metacpo_steps = []  # pylint: disable=protected-access
    return torch.stack(steps)


def install() -> None:
    """Wrap the adapter's episode bookkeeping and the key registration (idempotent)."""
    if getattr(OnPolicyAdapter, '_metacpo_disc_cost', False):
        return
    reset_log = OnPolicyAdapter._reset_log
    log_value = OnPolicyAdapter._log_value
    log_metrics = OnPolicyAdapter._log_metrics
    init_log = PolicyGradient._init_log

    def _reset_log(self: Any, idx: int | None = None) -> None:
        reset_log(self, idx)
        if idx is None:  # the constructor's call: all environments
            self._metacpo_gamma = _discount(self)
            self._metacpo_disc = torch.zeros(self._env.num_envs, dtype=torch.float64)
        else:
            self._metacpo_disc[idx] = 0.0

    def _log_value(self: Any, reward: torch.Tensor, cost: torch.Tensor,
                   info: dict[str, Any]) -> None:
        if self._metacpo_gamma is not None:
            # OmniSafe counts _ep_len after this call: before it, it is t - (episode start)
            position = self._ep_len.clone()
            raw = info.get('original_cost', cost).cpu().to(torch.float64)
            self._metacpo_disc += self._metacpo_gamma ** position.to(torch.float64) * raw
            if getattr(self, '_metacpo_steps', None) is not None:
                self._metacpo_steps.append(position)
        log_value(self, reward, cost, info)

    def _log_metrics(self: Any, logger: Any, idx: int) -> None:
        log_metrics(self, logger, idx)
        if self._metacpo_gamma is not None:
            logger.store({KEY: float(self._metacpo_disc[idx])})

    def _init_log(self: Any) -> None:
        init_log(self)
        if getattr(self._env, '_metacpo_gamma', None) is not None:
            self._logger.register_key(KEY, window_length=50)

    OnPolicyAdapter._reset_log = _reset_log
    OnPolicyAdapter._log_value = _log_value
    OnPolicyAdapter._log_metrics = _log_metrics
    PolicyGradient._init_log = _init_log
    OnPolicyAdapter._metacpo_disc_cost = True
