"""Tests of the Fisher metric (``omnisafe_metacpo.cpo_step.fisher``).

Reference: the change of variables ``y = L'x`` (``H = L L'``) that turns the Fisher metric into the
Euclidean one, with an explicit SPD ``H``.
"""

from __future__ import annotations

import pytest
import torch

from omnisafe_metacpo.cpo_step import (
    CPOCase,
    CPOStep,
    cg_solve,
    cpo_step,
)
from tests.omnisafe_metacpo.cpo_step.helpers import (
    ALL_CASES,
    F64,
    fisher_reference,
    make_batch,
    rel_err,
    spd_matrix,
    step_x,
    vjps,
)


@pytest.mark.parametrize('case', ALL_CASES)
def test_gradcheck_fisher(case: CPOCase) -> None:
    n = 5
    h = spd_matrix(n, seed=50)
    inputs = make_batch((case,), n, seed=51 + int(case), h_inv=torch.linalg.inv(h))
    options = {'metric': 'fisher', 'fvp': lambda v: v @ h, 'cg_iters': 4 * n, 'cg_tol': 1e-28}
    assert cpo_step(*inputs, **options).case.tolist() == [int(case)]
    inputs = tuple(t.requires_grad_(True) for t in inputs)
    assert torch.autograd.gradcheck(step_x(**options), inputs)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_fisher_matches_explicit_inverse(dtype: torch.dtype) -> None:
    n = 12
    h = spd_matrix(n, seed=70)
    cases = ALL_CASES * 2
    g, a, b, delta = make_batch(cases, n, seed=71, h_inv=torch.linalg.inv(h))
    hd = h.to(dtype)
    g, a, b, delta = (t.to(dtype) for t in (g, a, b, delta))
    cg_tol = 1e-24 if dtype == torch.float64 else 1e-12
    options = {'metric': 'fisher', 'fvp': lambda v: v @ hd, 'cg_iters': 3 * n, 'cg_tol': cg_tol}
    reference = fisher_reference(hd)
    ours, ref = cpo_step(g, a, b, delta, **options), reference(g, a, b, delta)
    assert ours.case.tolist() == ref.case.tolist() == [int(c) for c in cases]
    tol = 1e-9 if dtype == torch.float64 else 2e-4
    assert rel_err(ours.x, ref.x).max() < tol
    torch.testing.assert_close(ours.lam, ref.lam, rtol=tol, atol=tol)
    torch.testing.assert_close(ours.nu, ref.nu, rtol=tol, atol=tol)
    gen = torch.Generator().manual_seed(72)
    cotangents = [torch.randn(len(cases), n, generator=gen, dtype=F64).to(dtype) for _ in range(3)]
    _, vjp_ours = vjps(step_x(**options), (g, a, b, delta), cotangents)
    _, vjp_ref = vjps(lambda *args: reference(*args).x, (g, a, b, delta), cotangents)
    assert rel_err(torch.cat(vjp_ours, 1), torch.cat(vjp_ref, 1)).max() < (10 * tol)


def test_fisher_with_autograd_fvp_holds_h_constant() -> None:
    # An fvp built with autograd at theta (as OmniSafe's NaturalPG._fvp): Hessian-vector products
    # of a strictly convex function. H depends on theta, but is held constant in the derivative.
    gen = torch.Generator().manual_seed(80)
    n = 6
    w = torch.randn(9, n, generator=gen, dtype=F64)
    theta = torch.randn(n, generator=gen, dtype=F64, requires_grad=True)

    def potential(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.softplus(w @ t).sum() + 0.5 * (t @ t)

    def fvp(v: torch.Tensor) -> torch.Tensor:
        grad = torch.autograd.grad(potential(theta), theta, create_graph=True)[0]
        return torch.autograd.grad(grad @ v, theta)[0]

    h = torch.autograd.functional.hessian(potential, theta.detach())
    g, a, b, delta = make_batch((CPOCase.FEASIBLE_ACTIVE,), n, seed=81, h_inv=torch.linalg.inv(h))
    g, a, b, delta = g[0].requires_grad_(True), a[0], b[0], delta[0]
    step = cpo_step(g, a, b, delta, metric='fisher', fvp=fvp, cg_iters=3 * n, cg_tol=1e-24)
    ref = fisher_reference(h)(g[None], a[None], b[None], delta[None])
    torch.testing.assert_close(step.x, ref.x[0], rtol=1e-8, atol=1e-10)
    grad_theta, grad_g = torch.autograd.grad(step.x.sum(), (theta, g), allow_unused=True)
    assert grad_theta is None  # H (its dependence on theta) is constant
    torch.testing.assert_close(grad_g, torch.autograd.grad(ref.x.sum(), g)[0])


def test_cg_solve_is_differentiable_and_batched() -> None:
    h = spd_matrix(7, seed=90)
    v = torch.randn(3, 7, generator=torch.Generator().manual_seed(91), dtype=F64)
    v.requires_grad_(True)
    u = cg_solve(lambda p: p @ h, v, iters=30, tol=1e-28)
    torch.testing.assert_close(u, torch.linalg.solve(h, v.T).T)
    weights = torch.arange(21, dtype=F64).reshape(3, 7)
    (grad,) = torch.autograd.grad((u * weights).sum(), v)
    torch.testing.assert_close(grad, torch.linalg.solve(h, weights.T).T)
    zero = cg_solve(lambda p: p @ h, torch.zeros(7, dtype=F64))
    assert torch.equal(zero, torch.zeros(7, dtype=F64))



def test_precomputed_h_inv_gives_the_same_step_and_gradients() -> None:
    # h_inv = (H^-1 g, H^-1 a) from cg_solve: what cpo_step computes itself from fvp.
    n = 9
    h = spd_matrix(n, seed=95)
    cases = ALL_CASES
    g, a, b, delta = make_batch(cases, n, seed=96, h_inv=torch.linalg.inv(h))
    cg = {'iters': 3 * n, 'tol': 1e-28}

    def with_fvp(g: torch.Tensor, a: torch.Tensor, b: torch.Tensor, d: torch.Tensor) -> CPOStep:
        return cpo_step(g, a, b, d, metric='fisher', fvp=lambda v: v @ h, cg_iters=3 * n,
                        cg_tol=1e-28)

    def with_h_inv(g: torch.Tensor, a: torch.Tensor, b: torch.Tensor, d: torch.Tensor) -> CPOStep:
        solves = (cg_solve(lambda v: v @ h, g, **cg), cg_solve(lambda v: v @ h, a, **cg))
        return cpo_step(g, a, b, d, metric='fisher', h_inv=solves)

    ours, ref = with_h_inv(g, a, b, delta), with_fvp(g, a, b, delta)
    assert ours.case.tolist() == ref.case.tolist() == [int(c) for c in cases]
    torch.testing.assert_close(ours.x, ref.x, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(ours.lam, ref.lam)
    torch.testing.assert_close(ours.nu, ref.nu)
    cotangents = [torch.randn(len(cases), n, generator=torch.Generator().manual_seed(97),
                              dtype=F64)]
    _, (vjp_ours,) = vjps(lambda *args: with_h_inv(*args).x, (g, a, b, delta), cotangents)
    _, (vjp_ref,) = vjps(lambda *args: with_fvp(*args).x, (g, a, b, delta), cotangents)
    torch.testing.assert_close(vjp_ours, vjp_ref, rtol=1e-10, atol=1e-12)


def test_h_inv_argument_errors() -> None:
    g, a, b, delta = make_batch((CPOCase.FEASIBLE_ACTIVE,), 4, seed=98)
    good = (g.clone(), a.clone())
    for overrides, message in (
        ({'metric': 'euclidean'}, "h_inv is only used with metric='fisher'"),
        ({'h_inv': (g,)}, 'pair of tensors'),
        ({'h_inv': (g[:, :3], a)}, 'H\\^-1 g must be a tensor of the shape of g'),
        ({'h_inv': (g, a.float())}, 'H\\^-1 a must have the dtype'),
    ):
        options = {'metric': 'fisher', 'h_inv': good, **overrides}
        with pytest.raises(ValueError, match=message):
            cpo_step(g, a, b, delta, **options)
    with pytest.raises(ValueError, match='needs fvp'):
        cpo_step(g, a, b, delta, metric='fisher')
