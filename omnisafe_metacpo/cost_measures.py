"""The two scales of cost a rollout is judged on: OmniSafe's and the paper's.

* ``episode`` -- OmniSafe's ``EpCost``: the undiscounted sum of the step costs of an episode,
  averaged over episodes. The plug-in estimates it from a rollout as its cost rate times the
  episode length T (``Batch.cost_rate * T``), the unit of ``cost_limit`` for an OmniSafe user.
* ``discounted`` -- the paper's J_C(pi) = E[sum_t gamma^t C(s_t, a_t)] (Cho & Sun, section 3),
  with the discount restarting at each episode's start (the paper's definition; the authors'
  code restarts it only at a termination, never at a truncation, so in the Circle tasks its value
  is the first episode's of a batch).

A rollout of N steps holds finished episodes and, unless it ends exactly at an episode's end, one
unfinished episode. Both measures are "cost per episode": the sum over the rollout's steps of
w_t c_t (w_t = 1, or gamma^(t - start of t's episode)) divided by the number of episodes it covers,
where a finished episode counts 1 and the unfinished one counts the share of an episode's weight
it has seen (its weight sum over that of a full episode of T steps). With only whole episodes of T
steps this is the plain mean of the episodes' sums; a Button rollout of 500 steps of a 1,000-step
episode counts as 1/2 an episode undiscounted and 0.993 of one discounted (gamma = 0.99), since
the first 500 steps carry 99.3 % of an episode's discount weight.

The cost surrogate of a CPO step must predict changes on the scale of the measure it is compared
with (``b = J_C - h``): with per-step weights w_t and ``per_episode`` = the weight of one episode
(T undiscounted, (1 - gamma^T) / (1 - gamma) discounted),
``L_C(phi) = per_episode * sum_t w_t ratio_t A^C_t / sum_t w_t``. Undiscounted that is
``T * mean_t[ratio_t A^C_t]``; discounted, the importance-sampled estimate of
sum_t gamma^t E[A^C_t] per episode, i.e. 1/(1 - gamma) times the expectation under the discounted
state distribution (Kakade & Langford 2002; Achiam et al. 2017, eq. 2), for episodes of T steps.

These functions know nothing of samplers or loggers; :func:`cost_advantage_settings` reads a
config's ``algo_cfgs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

#: The names ``algo_cfgs.cost_measure`` accepts for the constraint of the CPO steps.
COST_MEASURES: tuple[str, ...] = ('episode', 'discounted')
#: What ``meta_test_cfgs.cost_advantages`` accepts: cost advantages from a critic fitted on each
#: test rollout (centred), or the rollout's returns-to-go on the step's measure (no baseline).
COST_ADVANTAGES: tuple[str, ...] = ('fresh_critic', 'returns')
#: What ``algo_cfgs.cost_advantage`` accepts, the cost advantages of the training rollouts:
#: ``gae``, OmniSafe's GAE(gamma, lam_c) of the cost with the reward's discount, bootstrapped with
#: the cost critic at a time-limit end (what OmniSafe's CPO uses); ``measure``, the cost to the
#: end of the step's episode on the constraint's own scale minus the cost critic's value
#: (:func:`measure_discount`; see :func:`cost_advantage_settings`).
COST_ADVANTAGE_RULES: tuple[str, ...] = ('gae', 'measure')
#: The measure of a config without ``cost_measure``: runs saved before the key existed
#: constrained OmniSafe's undiscounted cost per episode.
BEFORE_THE_KEY = 'episode'


def check_measure(name: str, key: str = 'algo_cfgs.cost_measure') -> str:
    """Return ``name`` if it is a cost measure, else raise a ``ValueError`` naming ``key``."""
    if name not in COST_MEASURES:
        raise ValueError(f'{key} = {name!r}: allowed values are {", ".join(COST_MEASURES)}')
    return name


def measure_discount(measure: str, cost_gamma: float) -> float:
    """The discount of ``measure``'s sum over an episode: 1 for ``episode``, ``cost_gamma`` for
    ``discounted``."""
    return float(cost_gamma) if check_measure(measure) == 'discounted' else 1.0


class CostAdvantageSettings(NamedTuple):
    """How a sampler computes the cost advantages of a rollout (:func:`cost_advantage_settings`)."""

    #: the discount of the GAE sum
    gamma: float
    #: the GAE lambda
    lam: float
    #: bootstrap with the critic's value at a time-limit end (else the sum stops there)
    bootstrap_time_limit: bool
    #: subtract the rollout's mean advantage
    centre: bool


def cost_advantage_settings(algo_cfgs: Any) -> CostAdvantageSettings:
    """The cost advantages of a config's rollouts.

    ``gae`` (also a config without ``cost_advantage``, as stock OmniSafe configs are): OmniSafe's
    GAE(``gamma``, ``lam_c``), bootstrapped at time limits, centred if ``standardized_cost_adv``.
    Its discount is the reward's, whatever the constraint's measure, so with ``cost_measure:
    episode`` a step's predicted change of the cost per episode is about 0.2 of the change measured
    (``benchmarks/cost_prediction.py``).

    ``measure``: lambda = 1 and the discount of the measure (:func:`measure_discount`), so the GAE
    sum telescopes to A_t = G_t - V(s_t), G_t the cost from t to the end of t's episode discounted
    as the measure is. The measure ends with the episode, so a time-limit end is not bootstrapped
    (a cut by the end of the rollout still is, with the critic's value: the estimate of the
    episode's rest). Not centred, whatever ``standardized_cost_adv``: the rollout's mean advantage
    depends on every action in it, so subtracting it removes part of the gradient (0.3 of it with
    rollouts of one episode, measured by that benchmark), while the critic's V(s_t), fitted on
    earlier rollouts, is a baseline in the policy-gradient sense. The advantages are then unbiased
    for the measure's gradient whatever the critic has learnt.
    """
    rule = algo_cfgs.get('cost_advantage', 'gae')
    if rule not in COST_ADVANTAGE_RULES:
        raise ValueError(f'algo_cfgs.cost_advantage = {rule!r}: allowed values are '
                         f'{", ".join(COST_ADVANTAGE_RULES)}')
    if rule == 'gae':
        return CostAdvantageSettings(float(algo_cfgs.gamma), float(algo_cfgs.lam_c), True,
                                     bool(algo_cfgs.standardized_cost_adv))
    measure = algo_cfgs.get('cost_measure', BEFORE_THE_KEY)
    return CostAdvantageSettings(measure_discount(measure, algo_cfgs.cost_gamma), 1.0, False,
                                 False)


def episode_weight(gamma: float, length: int) -> float:
    """The weight of one whole episode of ``length`` steps: sum_{t < length} gamma^t."""
    if gamma == 1.0:
        return float(length)
    return float((1.0 - gamma ** length) / (1.0 - gamma))


def discount_weights(num_steps: int, ends: Sequence[int], gamma: float) -> np.ndarray:
    """w_t = gamma^(t - start of t's episode) for a rollout of ``num_steps`` steps (float64).

    Args:
        num_steps: Steps in the rollout (it starts with a reset: step 0 starts an episode).
        ends: The last step of every finished episode, ascending (a termination or a truncation).
        gamma: The discount.
    """
    starts = np.zeros(num_steps, dtype=np.int64)
    start = 0
    for end in ends:
        starts[start:end + 1] = start
        start = end + 1
    starts[start:] = start
    return gamma ** (np.arange(num_steps) - starts).astype(np.float64)


def episodes_covered(num_steps: int, ends: Sequence[int], gamma: float, length: int) -> float:
    """How many episodes the rollout covers: finished ones count 1, the unfinished one its share
    of a whole episode's weight (see the module docstring)."""
    last = ends[-1] + 1 if ends else 0
    remaining = num_steps - last
    share = episode_weight(gamma, remaining) / episode_weight(gamma, length) if remaining else 0.0
    return float(len(ends)) + share


def per_episode(costs: np.ndarray, ends: Sequence[int], gamma: float, length: int) -> float:
    """The rollout's cost per episode on the scale of ``gamma`` (1: OmniSafe's, else discounted).

    Args:
        costs: The step costs of the rollout, in order.
        ends: The last step of every finished episode, ascending.
        gamma: 1 for the undiscounted sum, the cost discount for J_C.
        length: T, the env's episode length (what a whole episode is).
    """
    costs = np.asarray(costs, dtype=np.float64)
    weights = discount_weights(len(costs), ends, gamma)
    return float((weights * costs).sum() / episodes_covered(len(costs), ends, gamma, length))


def episode_sums(costs: np.ndarray, ends: Sequence[int], gamma: float) -> list[float]:
    """sum_t gamma^t c_t of each finished episode, from its own start."""
    costs = np.asarray(costs, dtype=np.float64)
    sums, start = [], 0
    for end in ends:
        sums.append(float((gamma ** np.arange(end + 1 - start) * costs[start:end + 1]).sum()))
        start = end + 1
    return sums


def returns_to_go(costs: np.ndarray, ends: Sequence[int], gamma: float) -> np.ndarray:
    """sum_{u >= t} gamma^(u - t) c_u within t's episode, for every step t (float64).

    Args:
        costs: The step costs of a rollout, in order.
        ends: The last step of every finished episode, ascending; steps after the last end belong
            to the rollout's unfinished episode, whose sums stop at the rollout's end.
        gamma: The discount (1: the undiscounted cost to the episode's end).
    """
    costs = np.asarray(costs, dtype=np.float64)
    out = np.empty_like(costs)
    last = set(ends)
    carried = 0.0
    for step in range(len(costs) - 1, -1, -1):
        if step in last:
            carried = 0.0
        carried = costs[step] + gamma * carried
        out[step] = carried
    return out
