"""Tests of the differentiable CPO step (``omnisafe_metacpo.cpo_step``).

References used: the paper's DCO layer (backend ``cvxpylayers``), OmniSafe 0.5.0's own CPO algebra
(``CPO._determine_case`` / ``CPO._step_direction``), central finite differences, and the change of
variables ``y = L'x`` (``H = L L'``) that turns the Fisher metric into the Euclidean one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from omnisafe_metacpo import cpo_step as cpo_step_module
from omnisafe_metacpo.cpo_step import (
    CPOCase,
    CPOStep,
    CPOStepError,
    cg_solve,
    cpo_step,
    linearized_change,
)

F64 = torch.float64
ALL_CASES = tuple(CPOCase)


# ------------------------------------------------------------------------------------------------
# Instances
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# Closed form against the DCO layer (the paper's cvxpylayers formulation)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('n', [10, 200, 2000])
def test_closed_form_matches_cvxpylayers_steps_and_jacobians(n: int) -> None:
    cases = ALL_CASES * 2
    g, a, b, delta = make_batch(cases, n, seed=n)
    gen = torch.Generator().manual_seed(1)
    if n == 10:  # full Jacobian
        cotangents = [torch.eye(n, dtype=F64)[i].expand(len(cases), n) for i in range(n)]
    else:  # random vector-Jacobian products
        cotangents = [torch.randn(len(cases), n, generator=gen, dtype=F64) for _ in range(3)]
    x_cf, vjp_cf = vjps(step_x(), (g, a, b, delta), cotangents)
    x_dco, vjp_dco = vjps(step_x(backend='cvxpylayers'), (g, a, b, delta), cotangents)

    assert cpo_step(g, a, b, delta).case.tolist() == [int(c) for c in cases]
    assert cpo_step(g, a, b, delta, backend='cvxpylayers').case.tolist() == [int(c) for c in cases]
    assert rel_err(x_cf, x_dco).max() < 1e-4
    jac_cf = torch.cat(vjp_cf, dim=1)
    jac_dco = torch.cat(vjp_dco, dim=1)
    assert rel_err(jac_cf, jac_dco).max() < 1e-4


@pytest.mark.slow
def test_closed_form_matches_cvxpylayers_large() -> None:
    # n = 6,000: the layer takes ~5 s and ~1.5 GB to build.
    n = 6000
    g, a, b, delta = make_batch(ALL_CASES, n, seed=n)
    gen = torch.Generator().manual_seed(2)
    cotangents = [torch.randn(len(ALL_CASES), n, generator=gen, dtype=F64) for _ in range(2)]
    x_cf, vjp_cf = vjps(step_x(), (g, a, b, delta), cotangents)
    x_dco, vjp_dco = vjps(step_x(backend='cvxpylayers'), (g, a, b, delta), cotangents)
    assert rel_err(x_cf, x_dco).max() < 1e-4
    assert rel_err(torch.cat(vjp_cf, 1), torch.cat(vjp_dco, 1)).max() < 1e-4


def test_cvxpylayers_batched_float32_and_multipliers() -> None:
    g, a, b, delta = make_batch(ALL_CASES, 30, seed=3)
    ref = cpo_step(g, a, b, delta)
    out = cpo_step(g.float(), a.float(), b.float(), delta.float(), backend='cvxpylayers')
    assert out.x.dtype == torch.float32
    assert out.case.tolist() == ref.case.tolist()
    assert rel_err(out.x.double(), ref.x).max() < 1e-4
    torch.testing.assert_close(out.lam.double(), ref.lam, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(out.nu.double(), ref.nu, rtol=1e-3, atol=1e-5)


def test_cvxpylayers_solver_scs() -> None:
    g, a, b, delta = make_batch(ALL_CASES, 20, seed=4)
    x_scs = cpo_step(g, a, b, delta, backend='cvxpylayers', solver='SCS').x
    assert rel_err(x_scs, cpo_step(g, a, b, delta).x).max() < 1e-4


def test_cvxpylayers_layers_are_cached() -> None:
    assert cpo_step_module._dco_layer(12) is cpo_step_module._dco_layer(12)
    assert cpo_step_module._dco_layer(12) is not cpo_step_module._dco_layer(13)


def test_cvxpylayers_uncertified_solution_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    # Clarabel stopped after 2 iterations returns an unconverged point and diffcp does not raise
    # (the status is dropped by cvxpylayers): the optimality certificate must catch it.
    clarabel = dict(cpo_step_module._SOLVER_ARGS['Clarabel'], max_iter=2)
    monkeypatch.setitem(cpo_step_module._SOLVER_ARGS, 'Clarabel', clarabel)
    g, a, b, delta = make_batch((CPOCase.FEASIBLE_ACTIVE, CPOCase.FEASIBLE_INACTIVE), 20, seed=5)
    with pytest.raises(CPOStepError, match=r'uncertified .* batch rows \[0, 1\]'):
        cpo_step(g, a, b, delta, backend='cvxpylayers')


def test_cvxpylayers_solver_error_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    # SCS stopped after 2 iterations: diffcp raises its SolverError, re-raised as CPOStepError.
    scs = dict(cpo_step_module._SOLVER_ARGS['SCS'], max_iters=2)
    monkeypatch.setitem(cpo_step_module._SOLVER_ARGS, 'SCS', scs)
    g, a, b, delta = make_batch((CPOCase.FEASIBLE_ACTIVE,), 20, seed=6)
    with pytest.raises(CPOStepError, match='failed on a CPO problem of size 20'):
        cpo_step(g, a, b, delta, backend='cvxpylayers', solver='SCS')


def test_cvxpylayers_with_fisher_is_not_implemented() -> None:
    g, a, b, delta = make_batch((CPOCase.FEASIBLE_ACTIVE,), 4, seed=7)
    with pytest.raises(NotImplementedError, match='closed_form, fisher'):
        cpo_step(g, a, b, delta, backend='cvxpylayers', metric='fisher', fvp=lambda v: v)


def test_recovery_step_solves_eq4() -> None:
    import cvxpy as cp

    gen = torch.Generator().manual_seed(8)
    g, a, b, delta = make_instance(CPOCase.INFEASIBLE_RECOVERY, 10, gen)
    x = cp.Variable(10)
    problem = cp.Problem(cp.Minimize(a.numpy() @ x), [0.5 * cp.sum_squares(x) <= float(delta)])
    problem.solve(solver=cp.CLARABEL)
    step = cpo_step(g, a, b, delta)
    assert step.case == CPOCase.INFEASIBLE_RECOVERY
    torch.testing.assert_close(step.x, torch.from_numpy(x.value), rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------------------------------------
# Closed form against OmniSafe 0.5.0's CPO algebra (H = I)
# ------------------------------------------------------------------------------------------------
def omnisafe_cpo(delta: float) -> Any:
    """A bare OmniSafe ``CPO`` with just what ``_determine_case``/``_step_direction`` read."""
    from omnisafe.algorithms.on_policy.second_order.cpo import CPO

    algo = CPO.__new__(CPO)
    algo._cfgs = SimpleNamespace(algo_cfgs=SimpleNamespace(target_kl=delta))
    algo._logger = SimpleNamespace(log=lambda *args, **kwargs: None)
    return algo


def omnisafe_step(
    g: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    delta: float,
    *,
    r_sign: float,
) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]:
    """OmniSafe's case and step for H = I, i.e. ``x = H^-1 g = g`` and ``p = H^-1 a = a``.

    OmniSafe's ``_step_direction`` is Achiam et al.'s algebra (appendix 10.2, as in the
    safety-starter-agents code it was ported from), derived for *minimising* a loss with gradient
    ``g_loss = -g``; its ``r`` is ``g_loss' H^-1 a = -g' H^-1 a``. Its ``x``, and its returned step,
    use the ascent convention (``x = H^-1 g``, step added to the parameters), like ours. So
    ``r_sign=-1`` feeds the algebra its own convention. ``r_sign=+1`` is what ``_update_actor``
    passes (``r = grads.dot(p)`` with ``grads = +g``): see the disagreement tests below.
    """
    algo = omnisafe_cpo(delta)
    q, r, s = g @ g, g @ a, a @ a
    case, big_a, big_b = algo._determine_case(b_grads=a, ep_costs=b, q=q, r=r, s=s)
    step, lam, nu = algo._step_direction(
        optim_case=case,
        xHx=q,
        x=g,
        A=big_a,
        B=big_b,
        q=q,
        p=a,
        r=r_sign * r,
        s=s,
        ep_costs=b,
    )
    return case, step, lam, nu


def omnisafe_interval_is_empty(g: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether OmniSafe's projection interval for one of lambda_a / lambda_b is empty.

    With ``c = b`` and ``r_loss = -g'a``, the intervals are ``[0, r_loss/c]`` and
    ``[r_loss/c, inf)``; when ``r_loss/c < 0`` one is empty and ``torch.clamp(x, 0, r_loss/c)``
    returns the negative bound (Achiam's code projects onto 0 there).
    """
    return float(-(g @ a) / b) < 0


@pytest.mark.parametrize('case', ALL_CASES)
def test_closed_form_matches_omnisafe_cpo_algebra(case: CPOCase) -> None:
    gen = torch.Generator().manual_seed(10 + int(case))
    delta = 0.01
    checked = 0
    while checked < 5:
        g, a, b, _ = make_instance(case, 8, gen, delta=delta)
        omni_case, omni_x, omni_lam, omni_nu = omnisafe_step(g, a, b, delta, r_sign=-1.0)
        if omni_case in (1, 2) and omnisafe_interval_is_empty(g, a, b):
            continue  # OmniSafe's torch.clamp defect, see test_omnisafe_empty_interval_...
        checked += 1
        ours = cpo_step(g, a, b, torch.tensor(delta, dtype=F64))
        assert ours.case == case
        expected_omni_case = {
            CPOCase.INFEASIBLE_RECOVERY: {0},
            CPOCase.FEASIBLE_ACTIVE: {1, 2},
            CPOCase.FEASIBLE_INACTIVE: {1, 2},
            CPOCase.WHOLE_REGION_FEASIBLE: {3},
        }[case]
        assert omni_case in expected_omni_case
        assert omni_case != 1 or b >= 0  # OmniSafe 1 / 2: x = 0 infeasible / feasible
        if omni_case in (1, 2):  # OmniSafe picks lambda_b (nu = 0) iff the constraint is inactive
            assert (float(omni_nu) > 0) == (case == CPOCase.FEASIBLE_ACTIVE)
        # OmniSafe adds 1e-8 to several denominators: agreement to ~1e-8 relative.
        torch.testing.assert_close(ours.x, omni_x.to(F64), rtol=1e-6, atol=1e-9)
        if case != CPOCase.INFEASIBLE_RECOVERY:
            torch.testing.assert_close(ours.lam, omni_lam.to(F64).reshape(()), rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(ours.nu, omni_nu.to(F64).reshape(()), rtol=1e-6, atol=1e-9)


def test_closed_form_matches_omnisafe_case_4_tiny_cost_gradient() -> None:
    # OmniSafe case 4: a'a <= 1e-6 and b < 0 -> plain TRPO step.
    gen = torch.Generator().manual_seed(20)
    g = torch.randn(8, generator=gen, dtype=F64)
    a = 1e-4 * torch.randn(8, generator=gen, dtype=F64)
    b = torch.tensor(-0.1, dtype=F64)
    omni_case, omni_x, _, _ = omnisafe_step(g, a, b, 0.01, r_sign=-1.0)
    ours = cpo_step(g, a, b, 0.01)
    assert omni_case == 4
    assert ours.case == CPOCase.WHOLE_REGION_FEASIBLE
    torch.testing.assert_close(ours.x, omni_x.to(F64), rtol=1e-6, atol=1e-9)


def test_omnisafe_empty_interval_disagreement() -> None:
    """Documents a defect of OmniSafe 0.5.0's ``_step_direction``, not of this package.

    Feasible point (b < 0) and reward and cost gradients opposed (g'a < 0): the TRPO step lowers the
    cost, so it is the optimum. OmniSafe projects ``lambda_a`` onto ``[0, r/c]`` with
    ``torch.clamp``; here ``r/c < 0``, clamp returns the negative bound, ``f_a`` of a negative
    lambda wins, and the step points backwards (the reward surrogate decreases).
    """
    g = torch.tensor([1.0, 0.2, 0.0], dtype=F64)
    a = torch.tensor([-0.3, 0.0, 1.0], dtype=F64)
    b = torch.tensor(-0.05, dtype=F64)
    delta = 0.01
    omni_case, omni_x, omni_lam, _ = omnisafe_step(g, a, b, delta, r_sign=-1.0)
    ours = cpo_step(g, a, b, delta)
    reference = cpo_step(g, a, b, delta, backend='cvxpylayers')
    assert omni_case == 2 and omnisafe_interval_is_empty(g, a, b)
    assert ours.case == CPOCase.FEASIBLE_INACTIVE
    torch.testing.assert_close(ours.x, reference.x, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(ours.x, math.sqrt(2 * delta / float(g @ g)) * g)
    assert float(omni_lam) < 0 and float(g @ omni_x) < 0 < float(g @ ours.x)


def test_omnisafe_update_actor_r_sign_disagreement() -> None:
    """Documents a defect of OmniSafe 0.5.0's ``CPO._update_actor``, not of this package.

    ``_update_actor`` passes ``r = grads.dot(p) = +g'H^-1a`` to ``_step_direction``, whose algebra
    needs ``-g'H^-1a`` (see :func:`omnisafe_step`). With its own sign, OmniSafe's step on a
    both-constraints-active instance is not the optimum: it is infeasible for the linearised cost
    constraint or gives less reward than the certified solution.
    """
    gen = torch.Generator().manual_seed(30)
    delta = 0.01
    disagreements = 0
    for _ in range(10):
        g, a, b, _ = make_instance(CPOCase.FEASIBLE_ACTIVE, 8, gen, delta=delta)
        if omnisafe_interval_is_empty(g, a, b):
            continue
        reference = cpo_step(g, a, b, delta, backend='cvxpylayers')
        ours = cpo_step(g, a, b, delta)
        torch.testing.assert_close(ours.x, reference.x, rtol=1e-5, atol=1e-8)
        _, omni_x, _, _ = omnisafe_step(g, a, b, delta, r_sign=+1.0)
        infeasible = float(b + a @ omni_x) > 1e-6 or float(omni_x @ omni_x) > 2 * delta * 1.000001
        worse = float(g @ omni_x) < float(g @ ours.x) - 1e-6
        disagreements += infeasible or worse
    assert disagreements >= 5


# ------------------------------------------------------------------------------------------------
# Gradients against finite differences
# ------------------------------------------------------------------------------------------------
def spd_matrix(n: int, seed: int, dtype: torch.dtype = F64) -> torch.Tensor:
    """A random SPD matrix with eigenvalues in [0.5, 5]."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64))
    eig = 0.5 + 4.5 * torch.rand(n, generator=gen, dtype=F64)
    return ((q * eig) @ q.T).to(dtype)


@pytest.mark.parametrize('case', ALL_CASES)
def test_gradcheck_euclidean(case: CPOCase) -> None:
    inputs = make_batch((case, case), 5, seed=40 + int(case))
    assert cpo_step(*inputs).case.tolist() == [int(case)] * 2
    inputs = tuple(t.requires_grad_(True) for t in inputs)
    assert torch.autograd.gradcheck(step_x(), inputs)


@pytest.mark.parametrize('case', ALL_CASES)
def test_gradcheck_fisher(case: CPOCase) -> None:
    n = 5
    h = spd_matrix(n, seed=50)
    inputs = make_batch((case,), n, seed=51 + int(case), h_inv=torch.linalg.inv(h))
    options = {'metric': 'fisher', 'fvp': lambda v: v @ h, 'cg_iters': 4 * n, 'cg_tol': 1e-28}
    assert cpo_step(*inputs, **options).case.tolist() == [int(case)]
    inputs = tuple(t.requires_grad_(True) for t in inputs)
    assert torch.autograd.gradcheck(step_x(**options), inputs)


def test_gradcheck_boundary_b_zero() -> None:
    # b = 0 exactly: the current point is on the constraint; with g'a > 0 both constraints bind.
    gen = torch.Generator().manual_seed(60)
    g = torch.randn(5, generator=gen, dtype=F64)
    a = g + 0.5 * torch.randn(5, generator=gen, dtype=F64)
    b, delta = torch.tensor(0.0, dtype=F64), torch.tensor(0.02, dtype=F64)
    assert cpo_step(g, a, b, delta).case == CPOCase.FEASIBLE_ACTIVE
    inputs = tuple(t.requires_grad_(True) for t in (g, a, b, delta))
    assert torch.autograd.gradcheck(step_x(), inputs)


def test_first_derivatives_only() -> None:
    g, a, b, delta = (t.requires_grad_(True) for t in make_batch((CPOCase.FEASIBLE_ACTIVE,), 5, 61))
    step = cpo_step(g, a, b, delta)
    assert step.x.requires_grad
    assert not (step.lam.requires_grad or step.nu.requires_grad or step.case.requires_grad)
    with pytest.raises(RuntimeError, match='first derivatives only'):
        torch.autograd.grad(step.x.sum(), g, create_graph=True)


# ------------------------------------------------------------------------------------------------
# Fisher metric
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# A chain of K = 5 steps (the inner loop of eq. 9-11)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('metric', ['euclidean', 'fisher'])
def test_chain_of_five_steps_matches_finite_differences(metric: str) -> None:
    n, num_steps, delta, limit = 6, 5, 0.05, 0.9
    gen = torch.Generator().manual_seed(100)
    w = torch.randn(8, n, generator=gen, dtype=F64)
    shift = torch.randn(8, generator=gen, dtype=F64)
    center = torch.randn(n, generator=gen, dtype=F64)
    h = spd_matrix(n, seed=101)
    options: dict[str, Any] = {}
    if metric == 'fisher':
        options = {'metric': 'fisher', 'fvp': lambda v: v @ h, 'cg_iters': 3 * n, 'cg_tol': 1e-28}

    def reward(phi: torch.Tensor) -> torch.Tensor:
        return torch.sin(w @ phi + shift).sum()

    def cost(phi: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((phi - center) ** 2).sum() + 0.1 * torch.cos(phi).sum()

    def adapt(theta: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        phi, cases = theta, []
        for _ in range(num_steps):
            g = torch.autograd.grad(reward(phi), phi, create_graph=True)[0]
            a = torch.autograd.grad(cost(phi), phi, create_graph=True)[0]
            step = cpo_step(g, a, cost(phi) - limit, torch.tensor(delta, dtype=F64), **options)
            phi = phi + step.x
            cases.append(int(step.case))
        return reward(phi) - 0.5 * cost(phi), cases

    theta = torch.randn(n, generator=gen, dtype=F64) * 0.3 + center
    theta.requires_grad_(True)
    loss, cases = adapt(theta)
    (grad,) = torch.autograd.grad(loss, theta)
    assert len(set(cases)) >= 2, cases  # the chain crosses cases

    eps = 1e-6
    numeric = torch.zeros(n, dtype=F64)
    for i in range(n):
        e = torch.zeros(n, dtype=F64)
        e[i] = eps
        plus, cases_plus = adapt((theta.detach() + e).requires_grad_(True))
        minus, cases_minus = adapt((theta.detach() - e).requires_grad_(True))
        assert cases_plus == cases_minus == cases  # same smooth piece
        numeric[i] = (plus - minus).item() / (2 * eps)
    torch.testing.assert_close(grad, numeric, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------------
# Robust numerics
# ------------------------------------------------------------------------------------------------
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


@pytest.mark.parametrize('dtype', DTYPES)
def test_zero_cost_gradient(dtype: torch.dtype) -> None:
    g = torch.randn(10, generator=torch.Generator().manual_seed(110), dtype=dtype)
    a = torch.zeros(10, dtype=dtype)
    trpo = math.sqrt(2 * 0.01 / float(g @ g)) * g
    delta = torch.tensor(0.01, dtype=dtype)
    for b, case, expected in (
        (-0.1, CPOCase.WHOLE_REGION_FEASIBLE, trpo),
        (0.0, CPOCase.FEASIBLE_INACTIVE, trpo),
        (0.1, CPOCase.INFEASIBLE_RECOVERY, torch.zeros_like(g)),  # no descent direction at all
    ):
        step = assert_finite_step_and_grads(g, a, torch.tensor(b, dtype=dtype), delta)
        assert step.case == case
        torch.testing.assert_close(step.x, expected)


@pytest.mark.parametrize('dtype', DTYPES)
def test_tiny_and_huge_scales(dtype: torch.dtype) -> None:
    base = make_batch(ALL_CASES, 16, seed=120)
    ref = cpo_step(*base)
    g, a, b, delta = (t.to(dtype) for t in base)
    scales = [(1e-30, 1.0), (1e30, 1.0), (1.0, 1e-30), (1.0, 1e30), (1e-20, 1e25)]
    if dtype == torch.float64:  # squares beyond float64's range: the rescaled path
        scales += [(1e-160, 1.0), (1e160, 1e-100), (1e200, 1e200)]
    for sg, sa in scales:
        step = assert_finite_step_and_grads(g * sg, a * sa, b * sa, delta)
        assert step.case.tolist() == ref.case.tolist()
        assert rel_err(step.x.double(), ref.x).max() < 1e-5
        single = assert_finite_step_and_grads(g[1] * sg, a[1] * sa, b[1] * sa, delta[1])
        assert rel_err(single.x.double()[None], ref.x[1:2]).max() < 1e-5
    for scale in (1e-12, 1e6):  # x scales as sqrt(delta) when b scales with it
        step = assert_finite_step_and_grads(g, a, b * math.sqrt(scale), delta * scale)
        assert rel_err(step.x.double() / math.sqrt(scale), ref.x).max() < 1e-5


@pytest.mark.parametrize('dtype', DTYPES)
def test_huge_constraint_values(dtype: torch.dtype) -> None:
    g, a, _, delta = (t.to(dtype) for t in make_batch((CPOCase.FEASIBLE_ACTIVE,), 8, seed=130))
    for b, case in ((3e37, CPOCase.INFEASIBLE_RECOVERY), (-3e37, CPOCase.WHOLE_REGION_FEASIBLE)):
        step = assert_finite_step_and_grads(g, a, torch.tensor([b], dtype=dtype), delta)
        assert step.case.tolist() == [int(case)]


@pytest.mark.parametrize('dtype', DTYPES)
def test_g_parallel_to_a(dtype: torch.dtype) -> None:
    a = torch.randn(10, generator=torch.Generator().manual_seed(140), dtype=dtype)
    delta = torch.tensor(0.01, dtype=dtype)
    reach = math.sqrt(2 * 0.01 * float(a @ a))
    b = torch.tensor(0.5 * reach, dtype=dtype)
    # Reward along the cost: the optimum is the face a'x = -b; the minimum-norm point is returned.
    step = assert_finite_step_and_grads(2.0 * a, a, b, delta)
    assert step.case == CPOCase.FEASIBLE_ACTIVE
    torch.testing.assert_close(step.x, -(b / (a @ a)) * a)
    # Reward against the cost: the TRPO step lowers the cost, constraint inactive.
    step = assert_finite_step_and_grads(-2.0 * a, a, -b, delta)
    assert step.case == CPOCase.FEASIBLE_INACTIVE
    torch.testing.assert_close(step.x, -math.sqrt(2 * 0.01 / float(a @ a)) * a)
    # Almost parallel: still finite.
    noise = torch.randn(10, generator=torch.Generator().manual_seed(141), dtype=dtype)
    assert_finite_step_and_grads(2.0 * a + 1e-6 * noise, a, b, delta)


@pytest.mark.parametrize('dtype', DTYPES)
def test_zero_reward_gradient(dtype: torch.dtype) -> None:
    a = torch.randn(10, generator=torch.Generator().manual_seed(150), dtype=dtype)
    g = torch.zeros_like(a)
    delta = torch.tensor(0.01, dtype=dtype)
    reach = math.sqrt(2 * 0.01 * float(a @ a))
    step = assert_finite_step_and_grads(g, a, torch.tensor(-0.5 * reach, dtype=dtype), delta)
    assert step.case == CPOCase.FEASIBLE_INACTIVE
    assert torch.equal(step.x, torch.zeros_like(a))
    b = torch.tensor(0.5 * reach, dtype=dtype)
    step = assert_finite_step_and_grads(g, a, b, delta)  # feasible only by moving
    assert step.case == CPOCase.FEASIBLE_ACTIVE
    torch.testing.assert_close(step.x, -(b / (a @ a)) * a)


@pytest.mark.parametrize('dtype', DTYPES)
def test_constraint_tangent_to_trust_region(dtype: torch.dtype) -> None:
    # b = +-sqrt(2 delta s) exactly: a single feasible point, or a plane touching the region.
    g, a, _, delta = (t.to(dtype) for t in make_batch((CPOCase.FEASIBLE_ACTIVE,), 10, seed=160))
    reach = torch.sqrt(2 * delta * (a * a).sum(-1))
    for b in (reach, -reach, torch.zeros_like(reach)):
        step = assert_finite_step_and_grads(g, a, b, delta)
        assert (0.5 * (step.x * step.x).sum() <= delta * 1.0001).all()
    step = cpo_step(g, a, reach, delta)
    torch.testing.assert_close(step.x, -torch.sqrt(2 * delta / (a * a).sum(-1))[:, None] * a)


def test_float32_matches_float64() -> None:
    g, a, b, delta = make_batch(ALL_CASES * 3, 500, seed=170)
    ref = cpo_step(g, a, b, delta)
    single = cpo_step(g.float(), a.float(), b.float(), delta.float())
    assert single.case.tolist() == ref.case.tolist()
    assert rel_err(single.x.double(), ref.x).max() < 1e-5


def test_batch_dims_match_single_calls() -> None:
    g, a, b, delta = make_batch(ALL_CASES * 3, 9, seed=180)
    shape = (3, 4)
    batched = cpo_step(g.reshape(*shape, 9), a.reshape(*shape, 9), b.reshape(shape), 0.01)
    assert batched.x.shape == (*shape, 9) and batched.case.shape == shape
    for i in range(12):
        single = cpo_step(g[i], a[i], b[i], delta[i])
        torch.testing.assert_close(batched.x.reshape(12, 9)[i], single.x)
        assert int(batched.case.reshape(12)[i]) == int(single.case)
        torch.testing.assert_close(batched.lam.reshape(12)[i], single.lam)
        torch.testing.assert_close(batched.nu.reshape(12)[i], single.nu)


@pytest.mark.parametrize('dtype', DTYPES)
def test_single_problem_path_matches_batched_path(dtype: torch.dtype) -> None:
    # One unbatched Euclidean problem takes a shorter code path than a batch: same results.
    cases = ALL_CASES
    g, a, b, delta = (t.to(dtype) for t in make_batch(cases, 7, seed=185))
    gen = torch.Generator().manual_seed(186)
    v = torch.randn(len(cases), 7, generator=gen, dtype=F64).to(dtype)
    batched, (vjp_batched,) = vjps(step_x(), (g, a, b, delta), [v])
    steps = [cpo_step(g[i], a[i], b[i], delta[i]) for i in range(len(cases))]
    batched_step = cpo_step(g, a, b, delta)
    tol = {'rtol': 1e-12, 'atol': 1e-14} if dtype == F64 else {'rtol': 1e-5, 'atol': 1e-7}
    for i, step in enumerate(steps):
        assert int(step.case) == int(batched_step.case[i]) == int(cases[i])
        torch.testing.assert_close(step.x, batched[i], **tol)
        torch.testing.assert_close(step.lam, batched_step.lam[i], **tol)
        torch.testing.assert_close(step.nu, batched_step.nu[i], **tol)
        _, (vjp_single,) = vjps(
            lambda *args: cpo_step(*args).x[None], (g[i], a[i], b[i], delta[i]), [v[i : i + 1]],
        )
        torch.testing.assert_close(vjp_single[0], vjp_batched[i], **tol)


def test_kkt_conditions_hold() -> None:
    g, a, b, delta = make_batch(ALL_CASES[1:] * 3, 40, seed=190)
    step = cpo_step(g, a, b, delta)
    x, lam, nu = step.x, step.lam, step.nu
    torch.testing.assert_close(g, lam[:, None] * x + nu[:, None] * a)  # stationarity
    assert (lam >= 0).all() and (nu >= 0).all()
    torch.testing.assert_close(0.5 * (x * x).sum(-1), delta)  # trust region binds
    reward, cost = linearized_change(g, a, b, x)
    assert (cost <= 1e-12).all()
    torch.testing.assert_close(nu * cost, torch.zeros_like(nu), atol=1e-12, rtol=0)
    torch.testing.assert_close(reward, (g * x).sum(-1))


def test_one_parameter_and_python_numbers() -> None:
    step = cpo_step(torch.tensor([3.0]), torch.tensor([1.0]), -2.0, 0.5)
    torch.testing.assert_close(step.x, torch.tensor([1.0]))
    assert step.case == CPOCase.WHOLE_REGION_FEASIBLE


# ------------------------------------------------------------------------------------------------
# Argument errors
# ------------------------------------------------------------------------------------------------
def test_value_errors() -> None:
    g = torch.randn(2, 5, dtype=F64)
    a = torch.randn(2, 5, dtype=F64)
    b = torch.zeros(2, dtype=F64)
    d = torch.tensor(0.01, dtype=F64)
    cases: list[tuple[dict[str, Any], str]] = [
        ({'a': a[:, :4]}, 'a must have the shape'),
        ({'a': a.float()}, 'a must have the dtype'),
        ({'g': g.half(), 'a': a.half()}, 'g must be float32 or float64'),
        ({'g': torch.ones(2, 5, dtype=torch.int64)}, 'g must be float32 or float64'),
        ({'g': [1.0, 2.0]}, 'g must be a torch.Tensor'),
        ({'b': torch.zeros(3, dtype=F64)}, r'b must have shape \(2,\)'),
        ({'b': b.float()}, 'b must have the dtype'),
        ({'delta': torch.full((2, 1), 0.1, dtype=F64)}, 'delta must have shape'),
        ({'delta': torch.tensor(0.0, dtype=F64)}, 'delta .* must be > 0'),
        ({'delta': torch.tensor([0.1, -0.1], dtype=F64)}, 'delta .* must be > 0'),
        ({'delta': -1.0}, 'delta .* must be > 0'),
        ({'b': torch.tensor([0.0, math.nan], dtype=F64)}, 'b must be finite'),
        ({'g': g.clone().fill_(math.inf)}, 'g must be finite'),
        ({'backend': 'cvxpy'}, "backend must be one of \\('closed_form', 'cvxpylayers'\\)"),
        ({'metric': 'kl'}, "metric must be one of \\('euclidean', 'fisher'\\)"),
        ({'metric': 'fisher'}, 'needs fvp'),
        ({'fvp': lambda v: v}, 'fvp is only used'),
        ({'backend': 'cvxpylayers', 'solver': 'ECOS'}, 'solver must be one of'),
    ]
    for overrides, message in cases:
        args = {'g': g, 'a': a, 'b': b, 'delta': d, **overrides}
        with pytest.raises(ValueError, match=message):
            cpo_step(**args)
