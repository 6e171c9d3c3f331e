"""Backend ``'cvxpylayers'``: the paper's DCO layer (Agrawal et al. 2019, through ``diffcp``).

The exact same problem as the closed form, solved by a conic solver through ``cvxpylayers``; the
reference the closed form is tested against, and the path for variants without a closed form.
Layers are built once per size and cached. Solver failures raise :class:`CPOStepError`. Euclidean
metric only (the paper's section 5 replaces the KL metric by the Euclidean one because of
cvxpylayers).
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch

from omnisafe_metacpo.cpo_step._common import _dot
from omnisafe_metacpo.cpo_step.closed_form import _ClosedFormStep
from omnisafe_metacpo.cpo_step.types import CPOCase, CPOStepError

#: Solver settings of the cvxpylayers backend: tight enough for the reference role.
_SOLVER_ARGS: dict[str, dict[str, Any]] = {
    'Clarabel': {
        'solve_method': 'Clarabel',
        # Clarabel's defaults (1e-8) leave Jacobian errors of ~1e-3; these give ~1e-6.
        'tol_gap_abs': 1e-12,
        'tol_gap_rel': 1e-12,
        'tol_feas': 1e-12,
    },
    'SCS': {'solve_method': 'SCS', 'eps_abs': 1e-9, 'eps_rel': 1e-9, 'max_iters': 100_000},
}
#: Relative tolerance of the optimality certificate checked on every cvxpylayers solution.
_CERTIFICATE_RTOL = 1e-4


@functools.lru_cache(maxsize=4)
def _dco_layer(n: int) -> Any:
    r"""The DPP layer ``max g'y s.t. ||y||_2 <= 1, c + a'y <= 0`` for ``n`` parameters (cached).

    It is the CPO problem after the change of variables ``x = sqrt(2 delta) y``
    (``0.5 ||x||^2 <= delta`` iff ``||y|| <= 1``, and ``c = b / sqrt(2 delta)``), so ``delta``
    enters through torch and the cone program has a fixed unit ball. The layer returns ``y`` and
    the multiplier of the cost constraint. Construction costs seconds and gigabytes for large ``n``
    (cvxpy's DPP canonicalisation is quadratic in ``n``): hence the cache.

    Args:
        n: Number of parameters.

    Returns:
        A ``cvxpylayers.torch.CvxpyLayer`` taking ``(g, a, c)``, returning ``(y, nu)``.
    """
    import cvxpy as cp
    from cvxpylayers.torch import CvxpyLayer

    y = cp.Variable(n)
    g = cp.Parameter(n)
    a = cp.Parameter(n)
    c = cp.Parameter()
    cost = c + a @ y <= 0
    problem = cp.Problem(cp.Maximize(g @ y), [cp.norm(y, 2) <= 1, cost])
    with warnings.catch_warnings():
        # "too many parameters for efficient DPP compilation" and torch's sparse-CSR beta notice.
        warnings.simplefilter('ignore', UserWarning)
        return CvxpyLayer(
            problem,
            parameters=[g, a, c],
            variables=[y, cost.dual_variables[0]],
            canon_backend='SCIPY',  # 2-3x faster to build than the default, less peak memory
        )


def _dco_step(
    g: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    delta: torch.Tensor,
    solver: str,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The CPO step by the DCO layer; infeasible problems take the (closed-form) eq. (4) step.

    The case is decided from the problem data (infeasible iff ``b > sqrt(2 delta s)``), never by
    catching solver errors, with the same test as the closed form.

    Args:
        g: Reward gradient ``(*batch, n)``.
        a: Cost gradient ``(*batch, n)``.
        b: Constraint value, batch shape.
        delta: Trust region, shape ``()`` or batch shape.
        solver: ``'Clarabel'`` or ``'SCS'``.
        eps: Degeneracy tolerance of the closed form (used for the recovery step and the case).

    Returns:
        ``(x, case, lam, nu)`` as in :class:`CPOStep`.

    Raises:
        CPOStepError: If the solver fails or its solution fails the optimality certificate.
    """
    import diffcp

    info: dict[str, torch.Tensor] = {}
    x_closed = _ClosedFormStep.apply(g, a, b, delta, None, None, eps, info)
    case, lam_closed, nu_closed = info['case'], info['lam'], info['nu']
    infeasible = case == CPOCase.INFEASIBLE_RECOVERY
    batch, n = g.shape[:-1], g.shape[-1]
    # Normalised data (see _ClosedFormStep.forward: exact derivative with constant scales).
    sg, sa = _max_abs_scale(g), _max_abs_scale(a)
    gn, an, bn = g / sg[..., None], a / sa[..., None], b / sa
    radius = torch.sqrt(2.0 * delta).expand(batch)
    # The layer works in float64 on (B, n). Infeasible rows get a feasible dummy (c = 0, never
    # used). Where c < -|a| the constraint cannot bind: clamping c there changes nothing (its
    # derivative is 0 either way) but keeps the solver's data well scaled.
    g64, a64 = gn.reshape(-1, n).double(), an.reshape(-1, n).double()
    c64 = (bn / radius).reshape(-1).double()
    floor = -(torch.linalg.vector_norm(a64.detach(), dim=-1) + 1.0)
    c64 = torch.where(infeasible.reshape(-1), 0.0, torch.maximum(c64, floor))
    try:
        y64, nu64 = _dco_layer(n)(g64, a64, c64, solver_args=dict(_SOLVER_ARGS[solver]))
    except diffcp.SolverError as exc:  # SCS reports failures this way; Clarabel does not raise
        raise CPOStepError(
            f'cvxpylayers ({solver}) failed on a CPO problem of size {n}: {exc}',
        ) from exc
    _check_certificate(g64, a64, c64, y64, nu64, ~infeasible.reshape(-1), solver)

    x_solver = radius[..., None] * y64.to(g.dtype).reshape(g.shape)
    x = torch.where(infeasible[..., None], x_closed, x_solver)
    with torch.no_grad():
        # Multipliers of the original problem: g = lam x + nu a, |x| = sqrt(2 delta).
        nu_solver = nu64.to(g.dtype).reshape(batch).clamp_min(0.0) * sg / sa
        lam_solver = torch.linalg.vector_norm(g - nu_solver[..., None] * a, dim=-1) / radius
        lam = torch.where(infeasible, lam_closed, lam_solver)
        nu = torch.where(infeasible, nu_closed, nu_solver)
    return x, case, lam, nu


@torch.no_grad()
def _check_certificate(
    g: torch.Tensor,
    a: torch.Tensor,
    c: torch.Tensor,
    y: torch.Tensor,
    nu: torch.Tensor,
    rows: torch.Tensor,
    solver: str,
) -> None:
    """Raise :class:`CPOStepError` unless ``y`` is a certified optimum of the normalised problem.

    Checks primal feasibility and the duality gap of ``max g'y s.t. |y| <= 1, c + a'y <= 0``
    against the Lagrange dual bound ``|g - nu a| - nu c`` (weak duality, for the solver's own
    ``nu >= 0``), relative to the size of the terms. Clarabel reports failures only through a
    status that cvxpylayers discards, so this is how a failed solve is detected.

    Args:
        g: Normalised reward gradients ``(B, n)``.
        a: Normalised cost gradients ``(B, n)``.
        c: Constraint offsets ``(B,)``.
        y: Solutions ``(B, n)``.
        nu: Multipliers of the cost constraint ``(B,)``.
        rows: Rows to check ``(B,)``.
        solver: Solver name, for the message.
    """
    nu = nu.clamp_min(0.0)
    norm_a = torch.linalg.vector_norm(a, dim=-1)
    primal = _dot(g, y)
    dual = torch.linalg.vector_norm(g - nu[:, None] * a, dim=-1) - nu * c
    scale = torch.linalg.vector_norm(g, dim=-1) + nu * (norm_a + c.abs()) + 1e-30
    tol = _CERTIFICATE_RTOL
    ok = (
        torch.isfinite(y).all(-1)
        & torch.isfinite(nu)
        & (torch.linalg.vector_norm(y, dim=-1) <= 1.0 + tol)
        & (c + _dot(a, y) <= tol * (norm_a + c.abs()))
        & (dual - primal <= tol * scale)
    )
    bad = rows & ~ok
    if bool(bad.any()):
        index = bad.nonzero().flatten().tolist()
        raise CPOStepError(
            f'cvxpylayers ({solver}) returned an uncertified solution (infeasible, non-finite '
            f'or duality gap above {tol:g} relative) for batch rows {index[:10]} of size '
            f'{g.shape[-1]}',
        )


def _max_abs_scale(v: torch.Tensor) -> torch.Tensor:
    """Detached ``max |v|`` over the last dimension, 1 where ``v`` is zero."""
    with torch.no_grad():
        scale = v.abs().amax(-1)
        return torch.where(scale > 0, scale, torch.ones_like(scale))

