r"""The differentiable CPO step of Meta-CPO (Cho & Sun, AAAI 2024, eq. 3, 4, 9 and 12).

Every local adaptation (eq. 9) and the meta update (eq. 12) solve the same linear-quadratic problem

.. math::

    x^\star = \arg\max_x \; g^\top x \quad \text{s.t.} \quad
    \tfrac12 x^\top H x \le \delta, \qquad b + a^\top x \le 0,

with ``g`` the reward gradient, ``a`` the cost gradient, ``b = J_C - h`` and trust region ``delta``.
When no ``x`` satisfies both constraints, CPO takes the recovery step of eq. (4),
:math:`x = -\sqrt{2\delta / a^\top H^{-1} a}\; H^{-1} a` (Achiam et al., "Constrained Policy
Optimization", ICML 2017). The paper differentiates through this problem with cvxpylayers (its
"DCO" layer, Agrawal et al. 2019). The solution is known in closed form (Achiam et al. 2017,
appendix 10.2) in terms of :math:`q = g^\top H^{-1} g`, :math:`r = g^\top H^{-1} a`,
:math:`s = a^\top H^{-1} a`: inside each case it is a smooth function of ``(g, a, b, delta)``, and
its derivative is the Jacobian that implicit differentiation of the KKT system (the paper's eq. 7)
gives, which is what cvxpylayers computes -- exactly, and much faster
(``benchmarks/results/cpo_step_speed.md``).

One entry point, :func:`cpo_step`, with two backends:

* ``'closed_form'`` (default): batched, CPU or GPU, exact first derivatives through every case.
  The O(n) work is a 2 x 2 Gram matrix and one linear combination each way. The case analysis
  (:func:`_solve`) runs per batch element on the Gram matrix's Python floats (one small
  device-to-host copy), inside a ``torch.autograd.Function`` whose backward is the chain rule
  written out (:func:`_solve_backward`): the graph is never broken, degenerate or unselected cases
  cannot leak NaN into gradients, and batching is a loop over the few batch elements. Taped
  operation by operation, the same algebra costs ~100 tiny torch calls per step, more than all the
  rest together. Second derivatives are not provided (double backward raises): Meta-CPO
  differentiates through the steps once.
* ``'cvxpylayers'``: the paper's DCO layer, the exact same problem solved by a conic solver through
  ``cvxpylayers``/``diffcp``; the reference the closed form is tested against. Layers are built once
  per size and cached. Solver failures raise :class:`CPOStepError`.

and two metrics:

* ``'euclidean'``: ``H = I``, as in the paper (its section 5 replaces the KL metric by the
  Euclidean one because of cvxpylayers);
* ``'fisher'``: ``H`` given as a Fisher-vector product ``fvp(v) -> H v``. ``H^-1 g`` and
  ``H^-1 a`` are conjugate-gradient solves whose derivative is taken implicitly (the backward pass
  is another CG solve, ``H`` being symmetric), never by unrolling CG. **Held constant:** ``H``
  itself, i.e. its dependence on the policy parameters at which it was evaluated; derivatives flow
  through ``g``, ``a``, ``b`` and ``delta`` only. Supported by the closed form only.

Sign conventions: ``g`` is the gradient of the quantity to *increase* (reward surrogate), ``a`` the
gradient of the quantity to keep below the limit (cost surrogate); the step is added to the
parameters. OmniSafe's ``CPO._update_actor`` uses the same convention for its ``x``/``grads``.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from enum import IntEnum
from typing import Any, NamedTuple

import torch

__all__ = [
    'BACKENDS',
    'METRICS',
    'SOLVERS',
    'CPOCase',
    'CPOStep',
    'CPOStepError',
    'cg_solve',
    'cpo_step',
    'linearized_change',
]

#: Supported values of ``backend``.
BACKENDS: tuple[str, ...] = ('closed_form', 'cvxpylayers')
#: Supported values of ``metric``.
METRICS: tuple[str, ...] = ('euclidean', 'fisher')
#: Supported ``solver`` values of the cvxpylayers backend (``diffcp`` ``solve_method``).
SOLVERS: tuple[str, ...] = ('Clarabel', 'SCS')

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


# ------------------------------------------------------------------------------------------------
# Public entry points
# ------------------------------------------------------------------------------------------------
def cpo_step(
    g: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor | float,
    delta: torch.Tensor | float,
    *,
    backend: str = 'closed_form',
    metric: str = 'euclidean',
    fvp: FVP | None = None,
    cg_iters: int = 15,
    cg_tol: float = 1e-10,
    eps: float | None = None,
    solver: str = 'Clarabel',
) -> CPOStep:
    r"""Solve the CPO problem (eq. 3/9/12) or take the recovery step (eq. 4), differentiably.

    Args:
        g: Reward gradient, shape ``(*batch, n)``, float32 or float64.
        a: Cost gradient, same shape, dtype and device as ``g``.
        b: Constraint value ``J_C - h``, shape ``batch`` (a Python number is broadcast).
        delta: Trust-region size, ``> 0``, shape ``()`` or ``batch`` (a number is broadcast).
        backend: ``'closed_form'`` or ``'cvxpylayers'`` (the paper's DCO layer).
        metric: ``'euclidean'`` (``H = I``, the paper) or ``'fisher'`` (``H`` given by ``fvp``).
        fvp: Fisher-vector product ``v -> H v`` mapping ``(*batch, n)`` tensors to the same shape;
            required for, and only for, ``metric='fisher'``. Evaluated without building a graph
            through it: ``H`` is held constant in the derivative.
        cg_iters: Maximum conjugate-gradient iterations (fisher metric; OmniSafe's default is 15).
        cg_tol: CG stops when ``|residual|^2 <= cg_tol * |rhs|^2`` for every batch element.
        eps: Tolerance of the two degenerate configurations, which are clamped (the step stays
            continuous, its derivative bounded): ``g`` parallel to ``a`` in the ``H^-1`` metric,
            ``1 - cos^2 <= eps`` (every point of the face ``a'x = -b`` is optimal; the step tends
            to the minimum-norm one), and the constraint plane tangent to the trust region,
            ``1 - b^2 / (2 delta s) <= eps``. Defaults to the machine epsilon of the dtype.
        solver: Conic solver of the cvxpylayers backend, ``'Clarabel'`` (default) or ``'SCS'``.

    Returns:
        A :class:`CPOStep` ``(x, case, lam, nu)``.

    Raises:
        ValueError: If shapes, dtypes or devices do not match, ``delta <= 0``, an input is not
            finite, or an option has an unsupported value.
        NotImplementedError: For ``backend='cvxpylayers'`` with ``metric='fisher'``.
        CPOStepError: If the cvxpylayers solver fails.
    """
    g, a, b, delta = _validate_arguments(g, a, b, delta, backend=backend, metric=metric, fvp=fvp)
    if eps is None:
        eps = torch.finfo(g.dtype).eps
    if backend == 'cvxpylayers':
        if metric != 'euclidean':
            raise NotImplementedError(
                "backend='cvxpylayers' supports metric='euclidean' only; supported combinations: "
                "(closed_form, euclidean), (closed_form, fisher), (cvxpylayers, euclidean)",
            )
        if solver not in SOLVERS:
            raise ValueError(f'solver must be one of {SOLVERS}, got {solver!r}')
        _check_values(g, a, b, delta)
        return CPOStep(*_dco_step(g, a, b, delta, solver, eps))
    u = w = None
    if metric == 'fisher':
        assert fvp is not None
        _check_values(g, a, b, delta)
        u = cg_solve(fvp, g, iters=cg_iters, tol=cg_tol)
        w = cg_solve(fvp, a, iters=cg_iters, tol=cg_tol)
    info: dict[str, torch.Tensor] = {}
    if u is None and g.dim() == 1:  # one Euclidean problem: the common case, in fewer calls
        try:
            x = _SingleClosedFormStep.apply(g, a, b, delta, eps, info)
            return CPOStep(x, info['case'], info['lam'], info['nu'])
        except _NeedsGeneralPath:
            pass
    x = _ClosedFormStep.apply(g, a, b, delta, u, w, eps, info)
    return CPOStep(x, info['case'], info['lam'], info['nu'])


def linearized_change(
    g: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor | float,
    x: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted (linearised) effect of a step: ``(g'x, b + a'x)``.

    The first value is the expected surrogate-reward improvement (OmniSafe logs it as "Expected
    Improvement"), the second the predicted constraint value after the step (``<= 0`` when the step
    is predicted to satisfy the cost limit). Batched like :func:`cpo_step`.

    Args:
        g: Reward gradient ``(*batch, n)``.
        a: Cost gradient ``(*batch, n)``.
        b: Constraint value ``J_C - h``, shape ``batch`` or a number.
        x: The step ``(*batch, n)``.

    Returns:
        The expected reward improvement and the predicted constraint value, both of batch shape.
    """
    return (g * x).sum(-1), b + (a * x).sum(-1)


# ------------------------------------------------------------------------------------------------
# The closed form (Achiam et al. 2017, appendix 10.2)
# ------------------------------------------------------------------------------------------------
class _Solution(NamedTuple):
    """Closed-form solution of one CPO problem, and what its derivative needs (Python floats).

    The step is ``x = alpha H^-1 g + beta H^-1 a``.
    """

    alpha: float
    beta: float
    case: int
    lam: float
    nu: float
    # For the backward pass.
    q: float
    s: float
    kappa: float
    rho: float
    c: float
    t: float
    crossing: bool
    tilted: bool


def _solve(q: float, r: float, s: float, b: float, two_delta: float, eps: float) -> _Solution:
    r"""The closed-form CPO step for one problem: the maths, top to bottom.

    Args:
        q: ``g' H^-1 g >= 0``.
        r: ``g' H^-1 a``.
        s: ``a' H^-1 a >= 0``.
        b: ``J_C - h``.
        two_delta: ``2 delta > 0``.
        eps: Tolerance of the degenerate cases (see :func:`cpo_step`).

    Returns:
        The :class:`_Solution`.
    """
    # Normalised data. kappa = sqrt(2 delta) is the trust-region radius in the H-norm. Over the
    # trust region a'x ranges over [-reach, reach], reach = kappa sqrt(s), so c = b / reach is the
    # constraint value in units of the largest change the trust region allows. rho is the cosine
    # between g and a in the H^-1 inner product (0 if either is 0).
    kappa = math.sqrt(two_delta)
    sq, ss = math.sqrt(q), math.sqrt(s)
    reach = kappa * ss
    rho = min(1.0, max(-1.0, r / (sq * ss))) if q > 0.0 and s > 0.0 else 0.0

    # The case, and the step written x = kappa (alpha_hat u / sqrt(q) + beta_hat w / sqrt(s)),
    # u = H^-1 g, w = H^-1 a.
    c = t = 0.0
    crossing = tilted = True
    if b > reach:
        # b + a'x > 0 everywhere in the trust region (with a = 0: b > 0). Eq. (4), the step that
        # lowers the cost most: x = -sqrt(2 delta / s) w.
        case, alpha_hat, beta_hat = CPOCase.INFEASIBLE_RECOVERY, 0.0, -1.0
    elif b < -reach:
        # b + a'x < 0 everywhere in the trust region: the TRPO step to the boundary.
        case, alpha_hat, beta_hat = CPOCase.WHOLE_REGION_FEASIBLE, 1.0, 0.0
    elif b + reach * rho > 0.0:
        # The TRPO step x_t = kappa u / sqrt(q) would violate the constraint
        # (b + a'x_t = b + reach rho), so both constraints bind. Stationarity g = lam H x + nu a
        # puts x in span(u, w); a'x = -b and x'Hx = 2 delta then give beta_hat = -c - rho alpha_hat
        # and alpha_hat = t = sqrt((1 - c^2) / (1 - rho^2)). (In Achiam et al.'s notation,
        # x = -(b/s) w + sqrt(B/A) (u - (r/s) w), A = q - r^2/s, B = 2 delta - b^2/s.)
        # Both factors are clamped at eps, which keeps x continuous and its derivative bounded in
        # the degenerate configurations: 1 - rho^2 -> 0, g parallel to a (every point of the face
        # a'x = -b is optimal; the step tends to the minimum-norm one, -(b/s) w), and 1 - c^2 -> 0,
        # the constraint plane tangent to the trust region (a single feasible point).
        case, c = CPOCase.FEASIBLE_ACTIVE, b / reach  # reach > 0: s = 0 forces b = 0, inactive
        crossing, tilted = 1.0 - c * c > eps, 1.0 - rho * rho > eps
        t = math.sqrt(max(1.0 - c * c, eps) / max(1.0 - rho * rho, eps))
        alpha_hat, beta_hat = t, -c - rho * t
    else:
        # The TRPO step satisfies the constraint: it is the optimum.
        case, alpha_hat, beta_hat = CPOCase.FEASIBLE_INACTIVE, 1.0, 0.0

    # Coefficients of u and w. No g (q = 0): no u part. No a (s = 0): no w part; in particular
    # the recovery step is 0, there being no direction that lowers the cost.
    alpha = kappa * alpha_hat / sq if q > 0.0 else 0.0
    beta = kappa * beta_hat / ss if s > 0.0 else 0.0
    # Multipliers, from g = lam H x + nu a: lam = sqrt(q) / (kappa alpha_hat) and
    # nu = -lam kappa beta_hat / sqrt(s); for the recovery, OmniSafe's nu = sqrt(2 delta / s).
    if case == CPOCase.INFEASIBLE_RECOVERY:
        lam, nu = 0.0, kappa / ss if s > 0.0 else 0.0
    else:  # alpha_hat >= sqrt(eps) > 0
        lam = sq / (kappa * alpha_hat)
        nu = -lam * kappa * beta_hat / ss if s > 0.0 else 0.0
    return _Solution(alpha, beta, int(case), lam, nu, q, s, kappa, rho, c, t, crossing, tilted)


def _solve_backward(sol: _Solution, alpha_bar: float, beta_bar: float) -> tuple[float, ...]:
    """Reverse mode through :func:`_solve`: the chain rule, from the end backwards.

    Args:
        sol: The forward pass's :class:`_Solution`.
        alpha_bar: Cotangent of ``alpha``.
        beta_bar: Cotangent of ``beta``.

    Returns:
        The cotangents of ``(q, r, s, b, two_delta)``.
    """
    q, s, kappa, rho, c, t = sol.q, sol.s, sol.kappa, sol.rho, sol.c, sol.t
    sq, ss = math.sqrt(q), math.sqrt(s)
    c_bar = rho_bar = 0.0
    if sol.case == CPOCase.FEASIBLE_ACTIVE:
        # alpha = kappa alpha_hat / sqrt(q), beta = kappa beta_hat / sqrt(s), and in this case
        # alpha_hat = t, beta_hat = -c - rho t, t = sqrt((1 - c^2) / (1 - rho^2)) (a clamped
        # factor being constant).
        alpha_hat_bar = alpha_bar * kappa / sq if q > 0.0 else 0.0
        beta_hat_bar = beta_bar * kappa / ss  # s > 0 in this case
        t_c = -c * t / (1.0 - c * c) if sol.crossing else 0.0
        t_rho = rho * t / (1.0 - rho * rho) if sol.tilted else 0.0
        c_bar = alpha_hat_bar * t_c - beta_hat_bar * (1.0 + rho * t_c)
        if q > 0.0:  # rho is the constant 0 when g = 0
            rho_bar = alpha_hat_bar * t_rho - beta_hat_bar * (t + rho * t_rho)
    # rho = r q^-1/2 s^-1/2 and c = b (2 delta)^-1/2 s^-1/2, plus the kappa q^-1/2 and
    # kappa s^-1/2 factors of alpha and beta (alpha = 0 where q = 0, beta = 0 where s = 0).
    q_bar = -(alpha_bar * sol.alpha + rho_bar * rho) / (2.0 * q) if q > 0.0 else 0.0
    r_bar = rho_bar / (sq * ss) if rho_bar else 0.0
    s_bar = -(beta_bar * sol.beta + c_bar * c + rho_bar * rho) / (2.0 * s) if s > 0.0 else 0.0
    b_bar = c_bar / (kappa * ss) if c_bar else 0.0
    two_delta_bar = (alpha_bar * sol.alpha + beta_bar * sol.beta - c_bar * c) / (2.0 * kappa**2)
    return q_bar, r_bar, s_bar, b_bar, two_delta_bar


class _ClosedFormStep(torch.autograd.Function):
    """The closed-form step ``x`` and its first derivative, batched.

    The O(n) work is a 2 x 2 Gram matrix and one linear combination each way; the case analysis
    (:func:`_solve`) and its chain rule (:func:`_solve_backward`) run per batch element on Python
    floats read from the Gram matrix. That is what makes the step cheap: taped as ~100 tiny torch
    operations per call (~1 us each forward, ~5 us backward) it costs more than all the rest. The
    graph is not broken: this Function is the graph node, with its exact derivative.

    Inputs ``u = H^-1 g``, ``w = H^-1 a`` are None for the Euclidean metric (``u = g``,
    ``w = a``); for the Fisher metric they come from :func:`cg_solve` and receive gradients.
    ``info`` receives the non-differentiable outputs ``case``, ``lam`` and ``nu`` (returning them
    as outputs of the Function would cost more autograd bookkeeping than the step itself).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        g: torch.Tensor,
        a: torch.Tensor,
        b: torch.Tensor,
        delta: torch.Tensor,
        u: torch.Tensor | None,
        w: torch.Tensor | None,
        eps: float,
        info: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        f64, dtype, device, batch = torch.float64, g.dtype, g.device, g.shape[:-1]
        euclidean = u is None or w is None
        vv = _float64(torch.stack((g, a), -2))  # (*batch, 2, n); float64 for the Gram matrix
        uu = vv if euclidean else _float64(torch.stack((u, w), -2))
        b_host = _host_list(b)
        delta_host = _host_list(delta) * (len(b_host) if delta.dim() == 0 else 1)
        gram = (vv @ uu.mT).reshape(-1, 4).tolist()  # q = g'u, r = g'w, s = a'w
        scales, divisor = [(1.0, 1.0)] * len(gram), None
        if not all(_plain(q) and _plain(s) for q, _, _, s in gram):
            # Rare: non-finite inputs, a zero gradient, or magnitudes whose squares would leave
            # float64. The solution is invariant to g -> g / sg and (a, b) -> (a, b) / sa: where
            # needed, g, a (and u, w) are divided by their max-abs and the whole step works on the
            # scaled vectors. Constant scales give the exact derivative, since the invariance holds
            # for any constant scale.
            maxabs = vv.abs().amax(-1).reshape(-1, 2).tolist()
            _check_host_values(maxabs, b_host, delta_host)
            if not euclidean and not bool(torch.isfinite(uu).all()):
                raise ValueError('fvp gave a non-finite H^-1 g or H^-1 a: is H positive definite?')
            scales = [(_safe_scale(sg), _safe_scale(sa)) for sg, sa in maxabs]
            if any(scale != (1.0, 1.0) for scale in scales):
                divisor = torch.tensor(scales, dtype=f64, device=device).reshape(*batch, 2, 1)
                vv = vv / divisor
                uu = vv if euclidean else uu / divisor
                gram = (vv @ uu.mT).reshape(-1, 4).tolist()
        else:
            _check_host_values([(1.0, 1.0)], b_host, delta_host)
        solutions, outputs, cases = [], [], []
        for (q, r, _, s), (sg, sa), b_i, delta_i in zip(
            gram, scales, b_host, delta_host, strict=True,
        ):
            sol = _solve(max(q, 0.0), r, max(s, 0.0), b_i / sa, 2.0 * delta_i, eps)
            solutions.append((sol, sa))
            # Multipliers in the caller's units: g = lam H x + nu a, recovery x = -nu H^-1 a.
            nu = sol.nu / sa if sol.case == CPOCase.INFEASIBLE_RECOVERY else sol.nu * sg / sa
            outputs.append((sol.alpha, sol.beta, sol.lam * sg, nu))
            cases.append(sol.case)
        # (Plain indexing, not Ellipsis: at ~3 us per call this path is dominated by call count.)
        out = torch.tensor(outputs, dtype=f64, device=device)  # (B, 4)
        if batch:
            coef = out[:, :2].reshape(*batch, 2)
            x = (coef.unsqueeze(-2) @ uu).squeeze(-2)
            lam, nu = out[:, 2].reshape(batch), out[:, 3].reshape(batch)
        else:
            coef = out[0, :2]
            x = coef @ uu
            lam, nu = out[0, 2], out[0, 3]
        info['case'] = torch.tensor(cases, dtype=torch.int64, device=device).reshape(batch)
        info['lam'], info['nu'] = _cast(lam, dtype), _cast(nu, dtype)
        x = _cast(x, dtype)
        ctx.solutions, ctx.euclidean, ctx.delta_shape = solutions, euclidean, delta.shape
        ctx.divisor = divisor
        ctx.save_for_backward(vv, uu, coef)
        return x

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any,
        grad_x: torch.Tensor,
    ) -> tuple[torch.Tensor | None, ...]:
        if torch.is_grad_enabled():
            raise RuntimeError('cpo_step (closed_form) supports first derivatives only')
        vv, uu, coef = ctx.saved_tensors
        f64, dtype, device, batch = torch.float64, grad_x.dtype, grad_x.device, vv.shape[:-2]
        v = _float64(grad_x)
        # Cotangents of the coefficients of u and w (x = alpha' u + beta' w).
        dots = [(uu @ v).tolist()] if not batch else (uu @ v.unsqueeze(-1)).reshape(-1, 2).tolist()
        rows = []
        for (sol, sa), (u_dot, w_dot) in zip(ctx.solutions, dots, strict=True):
            q_bar, r_bar, s_bar, b_bar, two_delta_bar = _solve_backward(sol, u_dot, w_dot)
            if ctx.euclidean:  # q = g'g, r = g'a, s = a'a: rows of (g, a) on (g, a)
                rows.append((2 * q_bar, r_bar, r_bar, 2 * s_bar, b_bar / sa, 2 * two_delta_bar))
            else:  # q = g'u, r = g'w, s = a'w: rows of (g, a) on (u, w), of (u, w) on (g, a)
                bars = (b_bar / sa, 2 * two_delta_bar)
                rows.append((q_bar, r_bar, 0.0, s_bar, *bars, q_bar, 0.0, r_bar, s_bar))
        table = torch.tensor(rows, dtype=f64, device=device)

        def combine(matrix: torch.Tensor, vectors: torch.Tensor, plus_outer: bool) -> torch.Tensor:
            # matrix @ vectors (+ coef outer v), per batch element; 2 x 2 matrices.
            if not batch:
                product = matrix.reshape(2, 2) @ vectors
                return torch.addr(product, coef, v) if plus_outer else product
            product = matrix.reshape(*batch, 2, 2) @ vectors
            return product + coef.unsqueeze(-1) * v.unsqueeze(-2) if plus_outer else product

        grad_vv = combine(table[:, :4], uu, ctx.euclidean)
        grad_uu = None if ctx.euclidean else combine(table[:, 6:], vv, True)
        if ctx.divisor is not None:  # the step worked on g / sg, a / sa (u / sg, w / sa)
            grad_vv = grad_vv / ctx.divisor
            grad_uu = None if grad_uu is None else grad_uu / ctx.divisor
        grad_u = grad_w = None
        if grad_uu is not None:
            grad_u, grad_w = _cast(grad_uu, dtype).unbind(-2)
        grad_g, grad_a = _cast(grad_vv, dtype).unbind(-2)
        grad_b = _cast(table[:, 4].reshape(batch), dtype)
        grad_delta = _cast(table[:, 5].reshape(batch), dtype)
        if grad_delta.shape != ctx.delta_shape:  # delta was broadcast over the batch
            grad_delta = grad_delta.sum()
        return grad_g, grad_a, grad_b, grad_delta, grad_u, grad_w, None, None


class _NeedsGeneralPath(Exception):
    """Raised by :class:`_SingleClosedFormStep` for data it leaves to :class:`_ClosedFormStep`."""


class _SingleClosedFormStep(torch.autograd.Function):
    """:class:`_ClosedFormStep` for one Euclidean problem (``g``, ``a`` of shape ``(n,)``).

    The same maths (:func:`_solve`, :func:`_solve_backward`) with about half the torch calls: at
    the paper's size (n = 1,500) the cost is set by the number of calls, not by the arithmetic.
    Data that need rescaling (zero, non-finite or extreme gradients) go to the general path.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        g: torch.Tensor,
        a: torch.Tensor,
        b: torch.Tensor,
        delta: torch.Tensor,
        eps: float,
        info: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        dtype, device = g.dtype, g.device
        g64, a64 = _float64(g), _float64(a)
        q, r, s = float(g64 @ g64), float(g64 @ a64), float(a64 @ a64)
        if not (_plain(q) and _plain(s)):
            raise _NeedsGeneralPath
        b_host, delta_host = float(b), float(delta)
        _check_host_values([(1.0, 1.0)], [b_host], [delta_host])
        sol = _solve(q, r, s, b_host, 2.0 * delta_host, eps)
        x = (g64 * sol.alpha).add_(a64, alpha=sol.beta)
        info['case'] = torch.tensor(sol.case, dtype=torch.int64, device=device)
        info['lam'] = torch.tensor(sol.lam, dtype=dtype, device=device)
        info['nu'] = torch.tensor(sol.nu, dtype=dtype, device=device)
        ctx.sol = sol
        ctx.save_for_backward(g64, a64)
        return _cast(x, dtype)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any,
        grad_x: torch.Tensor,
    ) -> tuple[torch.Tensor | None, ...]:
        if torch.is_grad_enabled():
            raise RuntimeError('cpo_step (closed_form) supports first derivatives only')
        g, a = ctx.saved_tensors
        sol, dtype, device = ctx.sol, grad_x.dtype, grad_x.device
        v = _float64(grad_x)
        # x = alpha g + beta a; (q, r, s) = (g'g, g'a, a'a): the general path's algebra.
        q_bar, r_bar, s_bar, b_bar, two_delta_bar = _solve_backward(sol, float(v @ g), float(v @ a))
        grad_g = (v * sol.alpha).add_(g, alpha=2.0 * q_bar).add_(a, alpha=r_bar)
        grad_a = (v * sol.beta).add_(g, alpha=r_bar).add_(a, alpha=2.0 * s_bar)
        grad_b = torch.tensor(b_bar, dtype=dtype, device=device)
        grad_delta = torch.tensor(2.0 * two_delta_bar, dtype=dtype, device=device)
        return _cast(grad_g, dtype), _cast(grad_a, dtype), grad_b, grad_delta, None, None


def _float64(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float64 (no call when it already is: this path counts microseconds)."""
    return _cast(tensor, torch.float64)


def _cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor.to(dtype)``, without the call when it is a no-op."""
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def _host_list(tensor: torch.Tensor) -> list[float]:
    """The values of ``tensor`` as a flat Python list (a device-to-host copy)."""
    values = tensor.tolist() if tensor.dim() <= 1 else tensor.reshape(-1).tolist()
    return values if isinstance(values, list) else [values]


def _plain(value: float) -> bool:
    """Whether a squared norm is safely inside float64's range (the common case)."""
    return 1e-200 < value < 1e200


def _safe_scale(maxabs: float) -> float:
    """The divisor for a vector of max-abs ``maxabs``: 1 unless its squares could leave float64."""
    return maxabs if maxabs > 0.0 and not 1e-90 < maxabs < 1e90 else 1.0


def _check_host_values(
    maxabs: list[tuple[float, float]],
    b_host: list[float],
    delta_host: list[float],
) -> None:
    """Raise ValueError for non-finite ``g``, ``a``, ``b``, ``delta`` or ``delta <= 0``."""
    message = _values_message(
        all(math.isfinite(m[0]) for m in maxabs),
        all(math.isfinite(m[1]) for m in maxabs),
        all(math.isfinite(value) for value in b_host),
        all(math.isfinite(value) for value in delta_host),
        all(value > 0.0 for value in delta_host),
    )
    if message:
        raise ValueError(message)


# ------------------------------------------------------------------------------------------------
# Fisher metric: conjugate gradients with an implicit derivative
# ------------------------------------------------------------------------------------------------
def cg_solve(fvp: FVP, v: torch.Tensor, *, iters: int = 15, tol: float = 1e-10) -> torch.Tensor:
    """``H^-1 v`` by conjugate gradients, differentiable in ``v`` (``H`` held constant).

    The backward pass solves ``H y = grad`` with CG again (``H`` is symmetric), i.e. implicit
    differentiation of ``H u = v``; CG iterations are never unrolled. Works batched over the
    leading dimensions of ``v`` provided ``fvp`` does. Unlike
    ``omnisafe.utils.math.conjugate_gradients`` it leaves ``v`` untouched.

    Args:
        fvp: ``v -> H v`` for a symmetric positive-definite ``H``; called under
            ``torch.enable_grad`` (so it may use autograd internally, as OmniSafe's ``_fvp`` does),
            its result is detached.
        v: Right-hand side ``(*batch, n)``.
        iters: Maximum number of iterations.
        tol: Stop when ``|residual|^2 <= tol * |v|^2`` for every batch element.

    Returns:
        The approximate solution, same shape as ``v``.
    """
    return _CGSolve.apply(v, fvp, iters, tol)


class _CGSolve(torch.autograd.Function):
    """``u = H^-1 v``; backward ``grad_v = H^-1 grad_u`` by another CG solve."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        v: torch.Tensor,
        fvp: FVP,
        iters: int,
        tol: float,
    ) -> torch.Tensor:
        ctx.fvp, ctx.iters, ctx.tol = fvp, iters, tol
        return _conjugate_gradients(fvp, v.detach(), iters, tol)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any,
        grad_u: torch.Tensor,
    ) -> tuple[torch.Tensor | None, None, None, None]:
        # apply (not the raw solver): the backward is itself differentiable under create_graph.
        return _CGSolve.apply(grad_u, ctx.fvp, ctx.iters, ctx.tol), None, None, None


def _conjugate_gradients(fvp: FVP, v: torch.Tensor, iters: int, tol: float) -> torch.Tensor:
    """Batched CG for ``H x = v`` (not differentiable; see :func:`cg_solve`).

    ``v`` is scaled to max-abs 1 first (CG is linear in ``v``), so float32 cannot overflow.
    """
    scale = v.abs().amax(-1, keepdim=True)
    scale = torch.where(scale > 0, scale, 1.0)
    res = v / scale
    x = torch.zeros_like(res)
    p = res.clone()
    rs = _dot(res, res)
    stop = tol * rs
    for _ in range(iters):
        done = rs <= stop
        if bool(done.all()):
            break
        with torch.enable_grad():
            hp = fvp(p)
        hp = hp.detach()
        php = _dot(p, hp)
        alpha = torch.where(done | (php <= 0), 0.0, rs / torch.where(php > 0, php, 1.0))
        x = x + alpha[..., None] * p
        res = res - alpha[..., None] * hp
        rs_new = _dot(res, res)
        beta = torch.where(rs > 0, rs_new / torch.where(rs > 0, rs, 1.0), 0.0)
        p = res + beta[..., None] * p
        rs = rs_new
    return x * scale


# ------------------------------------------------------------------------------------------------
# Backend 'cvxpylayers': the paper's DCO layer
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------
def _dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Batched inner product over the last dimension."""
    return (x * y).sum(-1)


def _max_abs_scale(v: torch.Tensor) -> torch.Tensor:
    """Detached ``max |v|`` over the last dimension, 1 where ``v`` is zero."""
    with torch.no_grad():
        scale = v.abs().amax(-1)
        return torch.where(scale > 0, scale, torch.ones_like(scale))


def _values_message(
    g_finite: bool,
    a_finite: bool,
    b_finite: bool,
    delta_finite: bool,
    delta_positive: bool,
) -> str | None:
    """The ValueError message for bad input values, None if they are fine."""
    bad = [
        name
        for name, ok in (('g', g_finite), ('a', a_finite), ('b', b_finite), ('delta', delta_finite))
        if not ok
    ]
    if bad:
        return f'{", ".join(bad)} must be finite (no NaN or Inf)'
    if not delta_positive:
        return 'delta (the trust-region size) must be > 0 everywhere'
    return None


def _check_values(g: torch.Tensor, a: torch.Tensor, b: torch.Tensor, delta: torch.Tensor) -> None:
    """Raise ValueError for non-finite inputs or ``delta <= 0`` (one host synchronisation)."""
    flags = torch.stack(
        [
            torch.isfinite(g).all(),
            torch.isfinite(a).all(),
            torch.isfinite(b).all(),
            torch.isfinite(delta).all(),
            (delta > 0).all(),
        ],
    ).tolist()
    message = _values_message(*flags)
    if message:
        raise ValueError(message)


def _validate_arguments(
    g: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor | float,
    delta: torch.Tensor | float,
    *,
    backend: str,
    metric: str,
    fvp: FVP | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check the types, shapes and options of :func:`cpo_step`; numbers become tensors.

    (Values -- finiteness, ``delta > 0`` -- are checked where the data are first reduced.)
    """
    if backend not in BACKENDS:
        raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
    if metric not in METRICS:
        raise ValueError(f'metric must be one of {METRICS}, got {metric!r}')
    if metric == 'fisher' and not callable(fvp):
        raise ValueError("metric='fisher' needs fvp, a callable v -> H v")
    if metric == 'euclidean' and fvp is not None:
        raise ValueError("fvp is only used with metric='fisher'; got metric='euclidean'")
    for name, value in (('g', g), ('a', a)):
        if not isinstance(value, torch.Tensor):
            raise ValueError(f'{name} must be a torch.Tensor, got {type(value).__name__}')
        if value.dtype not in (torch.float32, torch.float64):
            raise ValueError(f'{name} must be float32 or float64, got {value.dtype}')
        if value.dim() < 1 or value.shape[-1] < 1:
            raise ValueError(
                f'{name} must have shape (*batch, n) with n >= 1, got {tuple(value.shape)}',
            )
    if a.shape != g.shape:
        raise ValueError(f'a must have the shape of g {tuple(g.shape)}, got {tuple(a.shape)}')
    if a.dtype != g.dtype or a.device != g.device:
        raise ValueError(
            f'a must have the dtype/device of g ({g.dtype}, {g.device}), got {a.dtype}, {a.device}',
        )
    batch = g.shape[:-1]
    tensors = []
    for name, value, shapes in (('b', b, (batch,)), ('delta', delta, (batch, torch.Size()))):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = torch.full(shapes[-1], float(value), dtype=g.dtype, device=g.device)
        elif not isinstance(value, torch.Tensor):
            raise ValueError(
                f'{name} must be a torch.Tensor or a number, got {type(value).__name__}',
            )
        if value.dtype != g.dtype or value.device != g.device:
            raise ValueError(
                f'{name} must have the dtype/device of g ({g.dtype}, {g.device}), '
                f'got {value.dtype}, {value.device}',
            )
        if value.shape not in shapes:
            allowed = ' or '.join(str(tuple(shape)) for shape in shapes)
            raise ValueError(
                f'{name} must have shape {allowed} (batch shape of g), got {tuple(value.shape)}',
            )
        tensors.append(value)
    return g, a, tensors[0], tensors[1]
