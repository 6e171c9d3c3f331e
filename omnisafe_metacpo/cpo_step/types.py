"""Public types and option values of :mod:`omnisafe_metacpo.cpo_step`."""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import NamedTuple

import torch

__all__ = ['BACKENDS', 'FVP', 'METRICS', 'SOLVERS', 'CPOCase', 'CPOStep', 'CPOStepError']

#: Supported values of ``backend``.
BACKENDS: tuple[str, ...] = ('closed_form', 'cvxpylayers')
#: Supported values of ``metric``.
METRICS: tuple[str, ...] = ('euclidean', 'fisher')
#: Supported ``solver`` values of the cvxpylayers backend (``diffcp`` ``solve_method``).
SOLVERS: tuple[str, ...] = ('Clarabel', 'SCS')

#: A Fisher-vector product ``v -> H v`` (metric ``'fisher'``).
FVP = Callable[[torch.Tensor], torch.Tensor]


class CPOCase(IntEnum):
    """Which solution of the CPO problem applied (value of :attr:`CPOStep.case`).

    OmniSafe's ``CPO._determine_case`` numbers describe the problem data; these describe the
    solution. OmniSafe 0 is :attr:`INFEASIBLE_RECOVERY`; OmniSafe 1 and 2 are
    :attr:`FEASIBLE_ACTIVE` or :attr:`FEASIBLE_INACTIVE` (its choice between ``lambda_a`` and
    ``lambda_b``); OmniSafe 3 and 4 are :attr:`WHOLE_REGION_FEASIBLE`.
    """

    #: No point of the trust region satisfies the linearised constraint: eq. (4) recovery step.
    INFEASIBLE_RECOVERY = 0
    #: Both the trust region and the cost constraint are active at the optimum (``nu > 0``).
    FEASIBLE_ACTIVE = 1
    #: The cost constraint crosses the trust region but is inactive at the optimum: TRPO step.
    FEASIBLE_INACTIVE = 2
    #: Every point of the trust region satisfies the cost constraint: TRPO step.
    WHOLE_REGION_FEASIBLE = 3


class CPOStep(NamedTuple):
    """Result of :func:`cpo_step`.

    Attributes:
        x: The step, same shape and dtype as ``g``; add it to the parameters. Differentiable.
        case: :class:`CPOCase` values, ``torch.int64``, batch shape (``g.shape[:-1]``).
        lam: Multiplier of the trust-region constraint (``g = lam H x + nu a``); 0 in the
            recovery. Not differentiable (for logging, like OmniSafe's ``Misc/Lambda_star``).
        nu: Multiplier of the cost constraint; in the recovery case, as in OmniSafe, the length
            ``sqrt(2 delta / s)`` of the step along ``-H^-1 a``. Not differentiable.
    """

    x: torch.Tensor
    case: torch.Tensor
    lam: torch.Tensor
    nu: torch.Tensor


class CPOStepError(RuntimeError):
    """The cvxpylayers backend could not solve a CPO problem (solver error or failed certificate).

    Raised instead of returning an unreliable step, so that callers can catch and count failures.
    """
