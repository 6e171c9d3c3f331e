r"""Backtracking line search for CPO steps, shared by the local (eq. 9) and meta (eq. 12) updates.

The linearised problem that gives the CPO step is only trusted near the current parameters, so
CPO (Achiam et al., "Constrained Policy Optimization", ICML 2017, section 6.3) and Meta-CPO
(Cho & Sun, AAAI 2024, Algorithm 1, lines 9 and 14) shrink the step until the sampled surrogates
agree. The trial fractions are ``decay**j`` for ``j = 0, 1, ..., max_steps - 1``; a fraction is
accepted when, as in OmniSafe 0.5.0's ``CPO._cpo_search_step``,

* the surrogate reward did not decrease, when the current parameters satisfy the cost constraint
  (``b < 0``; OmniSafe's ``optim_case > 1``) and the step is not the eq. (4) recovery,
* the surrogate cost rose by at most ``max(-b, 0)`` (the slack left below the limit),
* the trust-region distance (mean KL, or the Euclidean ``0.5 |dx|^2`` of the paper's metric) is at
  most ``max_kl``,
* and all three are finite. A NaN or Inf, or a ``ValueError`` raised by ``evaluate`` (what
  ``torch.distributions`` raises for NaN parameters, which OmniSafe also treats as a rejection),
  rejects the fraction and the search goes on with the next one. (OmniSafe retries the same
  fraction after a non-finite KL; here every trial shrinks the step.)

When nothing is accepted the fraction is 0.0: the parameters stay where they are. Unlike OmniSafe's
method this function has no logger, no model and no side effects: the caller's ``evaluate`` maps a
fraction to the three measured quantities, and the caller applies ``fraction * step``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from omnisafe_metacpo.cpo_step import CPOCase

__all__ = ['LineSearchResult', 'Rejection', 'backtracking_line_search']

Number = float | int | torch.Tensor
Evaluate = Callable[[float], tuple[Number, Number, Number]]


class Rejection:
    """Reasons a trial fraction is rejected (values of :attr:`LineSearchResult.reason`)."""

    #: The step itself has a NaN or Inf: nothing was evaluated.
    STEP_NOT_FINITE = 'step not finite'
    #: ``evaluate`` returned a NaN/Inf or raised ``ValueError``.
    NOT_FINITE = 'not finite'
    #: The surrogate reward decreased although the current parameters are feasible.
    REWARD = 'reward decreased'
    #: The surrogate cost rose by more than ``max(-b, 0)``.
    COST = 'cost increased'
    #: The trust-region distance exceeded ``max_kl``.
    KL = 'trust region exceeded'


@dataclass(frozen=True)
class LineSearchResult:
    """Outcome of :func:`backtracking_line_search`.

    Attributes:
        accepted: Whether some fraction was accepted.
        fraction: The accepted fraction of the step, 0.0 if none was.
        num_backtracks: Rejected trials before the accepted one (all trials if none was accepted).
        reason: Why the last rejected trial was rejected (a :class:`Rejection` value), None if the
            full step was accepted.
        reward_improvement: Measured at the last evaluated fraction (NaN if none was evaluated).
        cost_increase: Measured at the last evaluated fraction (NaN if none was evaluated).
        kl: Measured at the last evaluated fraction (NaN if none was evaluated).
    """

    accepted: bool
    fraction: float
    num_backtracks: int
    reason: str | None
    reward_improvement: float = math.nan
    cost_increase: float = math.nan
    kl: float = math.nan


def backtracking_line_search(
    step: torch.Tensor,
    evaluate: Evaluate,
    case: CPOCase | int | torch.Tensor,
    *,
    b: Number,
    max_kl: float,
    decay: float = 0.8,
    max_steps: int = 15,
) -> LineSearchResult:
    """Find the largest fraction ``decay**j`` of ``step`` that the sampled surrogates accept.

    Args:
        step: The full step (e.g. ``cpo_step(...).x``); only checked for NaN/Inf here.
        evaluate: ``fraction -> (reward_improvement, cost_increase, kl)`` for the parameters
            ``theta + fraction * step``: the rise of the reward surrogate, the rise of the cost
            surrogate, and the trust-region distance from the current policy. Floats or 0-dim
            tensors.
        case: The :class:`CPOCase` of the step (a 0-dim tensor or int is accepted).
        b: Constraint value ``J_C - h`` at the current parameters (the same ``b`` as the step's).
        max_kl: Largest accepted trust-region distance (OmniSafe's ``target_kl``; ``delta``).
        decay: Factor between successive fractions, in (0, 1). OmniSafe uses 0.8.
        max_steps: Number of fractions tried, ``>= 1``. OmniSafe's CPO uses 20, the default 15.

    Returns:
        A :class:`LineSearchResult`.

    Raises:
        ValueError: If ``decay``, ``max_steps``, ``max_kl`` or ``case`` has an unsupported value.
    """
    decay, max_kl = float(decay), float(max_kl)
    if not 0.0 < decay < 1.0:
        raise ValueError(f'decay must be in (0, 1), got {decay}')
    if int(max_steps) != max_steps or max_steps < 1:
        raise ValueError(f'max_steps must be an integer >= 1, got {max_steps}')
    if not max_kl > 0.0:
        raise ValueError(f'max_kl must be > 0, got {max_kl}')
    if isinstance(case, torch.Tensor):
        if case.numel() != 1:
            raise ValueError(
                f'case must be a single CPOCase (one task), got shape {tuple(case.shape)}',
            )
        case = int(case.item())
    if case not in tuple(CPOCase):
        allowed = ', '.join(f'{c.name}={int(c)}' for c in CPOCase)
        raise ValueError(f'case must be a CPOCase ({allowed}), got {case}')
    b = _to_float(b)
    if math.isnan(b):
        raise ValueError('b must not be NaN')

    # OmniSafe: `loss_reward_improve < 0 if optim_case > 1 else False` -- its cases 2, 3, 4 are
    # exactly those with b < 0 (current parameters feasible).
    check_reward = b < 0.0 and CPOCase(case) != CPOCase.INFEASIBLE_RECOVERY
    cost_slack = max(-b, 0.0)

    if not bool(torch.isfinite(step).all()):
        return LineSearchResult(False, 0.0, 0, Rejection.STEP_NOT_FINITE)

    reason: str | None = None
    values = (math.nan, math.nan, math.nan)
    for j in range(int(max_steps)):
        fraction = decay**j
        try:
            measured = evaluate(fraction)
        except ValueError:  # e.g. torch.distributions rejecting NaN parameters
            measured = (math.nan, math.nan, math.nan)
        reward_improvement, cost_increase, kl = (_to_float(v) for v in measured)
        values = (reward_improvement, cost_increase, kl)
        if not all(math.isfinite(v) for v in values):
            reason = Rejection.NOT_FINITE
        elif check_reward and reward_improvement < 0.0:
            reason = Rejection.REWARD
        elif cost_increase > cost_slack:
            reason = Rejection.COST
        elif kl > max_kl:
            reason = Rejection.KL
        else:
            return LineSearchResult(True, fraction, j, reason, *values)
    return LineSearchResult(False, 0.0, int(max_steps), reason, *values)


def _to_float(value: Number) -> float:
    """A float from a number or a one-element tensor (detached first: values only)."""
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
