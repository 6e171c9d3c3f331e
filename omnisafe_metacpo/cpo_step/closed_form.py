r"""The closed-form CPO step and its exact first derivative (backend ``'closed_form'``).

The solution of :math:`\max_x g^\top x` s.t. :math:`\tfrac12 x^\top H x \le \delta`,
:math:`b + a^\top x \le 0` is known in closed form (Achiam et al. 2017, appendix 10.2) in terms of
:math:`q = g^\top H^{-1} g`, :math:`r = g^\top H^{-1} a`, :math:`s = a^\top H^{-1} a`: inside each
case it is a smooth function of ``(g, a, b, delta)``, and its derivative is the Jacobian that
implicit differentiation of the KKT system (the paper's eq. 7) gives, which is what cvxpylayers
computes -- exactly, and much faster (``benchmarks/results/cpo_step_speed.md``).

Batched, CPU or GPU, exact first derivatives through every case. The O(n) work is a 2 x 2 Gram
matrix and one linear combination each way. The case analysis (:func:`_solve`) runs per batch
element on the Gram matrix's Python floats (one small device-to-host copy), inside a
``torch.autograd.Function`` whose backward is the chain rule written out (:func:`_solve_backward`):
the graph is never broken, degenerate or unselected cases cannot leak NaN into gradients, and
batching is a loop over the few batch elements. Taped operation by operation, the same algebra costs
~100 tiny torch calls per step, more than all the rest together. Second derivatives are not provided
(double backward raises): Meta-CPO differentiates through the steps once.

For the Fisher metric the Functions take ``u = H^-1 g`` and ``w = H^-1 a`` from
:mod:`omnisafe_metacpo.cpo_step.fisher`; the entry point is
:func:`omnisafe_metacpo.cpo_step.cpo_step`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from omnisafe_metacpo.cpo_step._common import _check_host_values
from omnisafe_metacpo.cpo_step.types import CPOCase


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

