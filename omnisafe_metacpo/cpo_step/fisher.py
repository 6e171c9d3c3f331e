"""Fisher metric: ``H^-1 v`` by conjugate gradients, with an implicit derivative.

With ``metric='fisher'``, ``H`` is given as a Fisher-vector product ``fvp(v) -> H v``.
``H^-1 g`` and ``H^-1 a`` are conjugate-gradient solves whose derivative is taken implicitly (the
backward pass is another CG solve, ``H`` being symmetric), never by unrolling CG.
**Held constant:** ``H`` itself, i.e. its dependence on the policy parameters at which it was
evaluated; derivatives flow through ``g``, ``a``, ``b`` and ``delta`` only. Supported by the closed
form only.
"""

from __future__ import annotations

from typing import Any

import torch

from omnisafe_metacpo.cpo_step._common import _dot
from omnisafe_metacpo.cpo_step.types import FVP

__all__ = ['cg_solve']


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
