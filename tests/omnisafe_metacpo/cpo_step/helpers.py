"""Shared instances and checks for the tests of :mod:`omnisafe_metacpo.cpo_step`."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from omnisafe_metacpo.cpo_step import (
    CPOCase,
    CPOStep,
    cpo_step,
)

F64 = torch.float64
ALL_CASES = tuple(CPOCase)


def make_instance(
    case: CPOCase,
    n: int,
    gen: torch.Generator,
    *,
    dtype: torch.dtype = F64,
    delta: float = 0.01,
    h_inv: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random ``(g, a, b, delta)`` whose solution is ``case``, with a margin to the boundaries.

    ``b`` is placed relative to ``reach = sqrt(2 delta s)`` (the largest |a'x| in the trust region)
    and to ``a'x_t`` of the TRPO step ``x_t``, in the metric ``h_inv`` (identity if None).
    """
    g = torch.randn(n, generator=gen, dtype=F64)
    a = torch.randn(n, generator=gen, dtype=F64)
    hg = g if h_inv is None else h_inv @ g
    ha = a if h_inv is None else h_inv @ a
    q, r, s = float(g @ hg), float(g @ ha), float(a @ ha)
    reach = math.sqrt(2 * delta * s)
    trpo_cost = math.sqrt(2 * delta / q) * r  # a'x_t
    u = 0.2 + 0.6 * float(torch.rand((), generator=gen, dtype=F64))
    if case == CPOCase.INFEASIBLE_RECOVERY:
        b = reach * (1.2 + u)
    elif case == CPOCase.WHOLE_REGION_FEASIBLE:
        b = -reach * (1.2 + u)
    elif case == CPOCase.FEASIBLE_ACTIVE:
        low = max(-reach, -trpo_cost)
        b = low + (reach - low) * u
    else:
        b = -reach + (-trpo_cost + reach) * u
    return g.to(dtype), a.to(dtype), torch.tensor(b, dtype=dtype), torch.tensor(delta, dtype=dtype)


def make_batch(
    cases: tuple[CPOCase, ...],
    n: int,
    seed: int,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack instances of the given cases into a batch (one delta per row)."""
    gen = torch.Generator().manual_seed(seed)
    rows = [make_instance(case, n, gen, **kwargs) for case in cases]
    return tuple(torch.stack(column) for column in zip(*rows, strict=True))  # type: ignore[return-value]


def vjps(
    fn: Callable[..., torch.Tensor],
    inputs: tuple[torch.Tensor, ...],
    cotangents: list[torch.Tensor],
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Output of ``fn`` and its vector-Jacobian products, each flattened per batch row."""
    inputs = tuple(t.detach().clone().requires_grad_(True) for t in inputs)
    out = fn(*inputs)
    rows = out.shape[0]
    products = []
    for v in cotangents:
        grads = torch.autograd.grad(out, inputs, v, retain_graph=True)
        products.append(torch.cat([grad.reshape(rows, -1) for grad in grads], dim=1))
    return out.detach(), products


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Row-wise relative error ``|x - ref| / |ref|``."""
    return torch.linalg.vector_norm(x - ref, dim=-1) / torch.linalg.vector_norm(ref, dim=-1)


def step_x(**options: Any) -> Callable[..., torch.Tensor]:
    """``(g, a, b, delta) -> x`` for the given options."""
    return lambda g, a, b, delta: cpo_step(g, a, b, delta, **options).x


def spd_matrix(n: int, seed: int, dtype: torch.dtype = F64) -> torch.Tensor:
    """A random SPD matrix with eigenvalues in [0.5, 5]."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64))
    eig = 0.5 + 4.5 * torch.rand(n, generator=gen, dtype=F64)
    return ((q * eig) @ q.T).to(dtype)


def fisher_reference(
    h: torch.Tensor,
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], CPOStep]:
    """The Fisher-metric step through the Euclidean one: with ``H = L L'`` and ``y = L'x``,
    ``0.5 x'Hx = 0.5 |y|^2``, ``g'x = (L^-1 g)'y`` and ``a'x = (L^-1 a)'y``."""
    chol = torch.linalg.cholesky(h)

    def reference(g: torch.Tensor, a: torch.Tensor, b: torch.Tensor, d: torch.Tensor) -> CPOStep:
        def white(v: torch.Tensor) -> torch.Tensor:  # L^-1 v, row-wise
            return torch.linalg.solve_triangular(chol, v.T, upper=False).T

        step = cpo_step(white(g), white(a), b, d)
        x = torch.linalg.solve_triangular(chol.T, step.x.T, upper=True).T  # L^-T y
        return step._replace(x=x)

    return reference


def assert_finite_step_and_grads(
    g: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    delta: torch.Tensor,
    **options: Any,
) -> CPOStep:
    """Run the step; check that it, its multipliers and its gradient w.r.t. every input are finite.

    (The multipliers' own derivatives are left out: with |g| / |a| = 1e30, ``nu`` is ~1e30 and its
    derivative w.r.t. ``a`` ~1e60, genuinely beyond float32.)
    """
    inputs = tuple(t.detach().clone().requires_grad_(True) for t in (g, a, b, delta))
    step = cpo_step(*inputs, **options)
    weights = torch.linspace(-1.0, 2.0, g.shape[-1], dtype=g.dtype)
    grads = torch.autograd.grad((step.x * weights).sum(), inputs)
    for out in (step.x, step.lam, step.nu, *grads):
        assert torch.isfinite(out).all()
    return step


DTYPES = [torch.float32, torch.float64]
