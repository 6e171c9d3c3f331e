"""The entry point :func:`cpo_step`, its argument checks, and :func:`linearized_change`."""

from __future__ import annotations

import torch

from omnisafe_metacpo.cpo_step._common import _check_values
from omnisafe_metacpo.cpo_step.closed_form import (
    _ClosedFormStep,
    _NeedsGeneralPath,
    _SingleClosedFormStep,
)
from omnisafe_metacpo.cpo_step.dco_layer import _dco_step
from omnisafe_metacpo.cpo_step.fisher import cg_solve
from omnisafe_metacpo.cpo_step.types import BACKENDS, FVP, METRICS, SOLVERS, CPOStep

__all__ = ['cpo_step', 'linearized_change']


def cpo_step(
    g: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor | float,
    delta: torch.Tensor | float,
    *,
    backend: str = 'closed_form',
    metric: str = 'euclidean',
    fvp: FVP | None = None,
    h_inv: tuple[torch.Tensor, torch.Tensor] | None = None,
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
            required for, and only for, ``metric='fisher'`` (unless ``h_inv`` is given). Evaluated
            without building a graph through it: ``H`` is held constant in the derivative.
        h_inv: ``(H^-1 g, H^-1 a)`` already computed by the caller, for ``metric='fisher'`` only,
            same shape, dtype and device as ``g``; then no CG runs and ``fvp`` is not needed. For
            callers that need these vectors themselves (``CPOCorrected`` logs OmniSafe's ``q``,
            ``r``, ``s`` from them) and would otherwise pay for the CG solves twice. Derivatives
            flow through them as given (from :func:`cg_solve`: implicitly, ``H`` constant).
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
    g, a, b, delta = _validate_arguments(
        g, a, b, delta, backend=backend, metric=metric, fvp=fvp, h_inv=h_inv,
    )
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
        _check_values(g, a, b, delta)
        if h_inv is not None:
            u, w = h_inv
        else:
            assert fvp is not None
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


def _validate_arguments(
    g: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor | float,
    delta: torch.Tensor | float,
    *,
    backend: str,
    metric: str,
    fvp: FVP | None,
    h_inv: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check the types, shapes and options of :func:`cpo_step`; numbers become tensors.

    (Values -- finiteness, ``delta > 0`` -- are checked where the data are first reduced.)
    """
    if backend not in BACKENDS:
        raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
    if metric not in METRICS:
        raise ValueError(f'metric must be one of {METRICS}, got {metric!r}')
    if metric == 'fisher' and not callable(fvp) and h_inv is None:
        raise ValueError("metric='fisher' needs fvp, a callable v -> H v (or h_inv)")
    if metric == 'euclidean' and fvp is not None:
        raise ValueError("fvp is only used with metric='fisher'; got metric='euclidean'")
    if metric == 'euclidean' and h_inv is not None:
        raise ValueError("h_inv is only used with metric='fisher'; got metric='euclidean'")
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
    if h_inv is not None:
        if not (isinstance(h_inv, tuple) and len(h_inv) == 2):
            raise ValueError('h_inv must be a pair of tensors (H^-1 g, H^-1 a)')
        for name, value in zip(('H^-1 g', 'H^-1 a'), h_inv, strict=True):
            if not isinstance(value, torch.Tensor) or value.shape != g.shape:
                raise ValueError(f'h_inv: {name} must be a tensor of the shape of g')
            if value.dtype != g.dtype or value.device != g.device:
                raise ValueError(f'h_inv: {name} must have the dtype/device of g')
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
