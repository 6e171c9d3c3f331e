"""Tests of the paper's DCO layer (``omnisafe_metacpo.cpo_step.dco_layer``, cvxpylayers).

The closed form and the layer solve the same problem: steps and Jacobians must agree.
"""

from __future__ import annotations

import pytest
import torch

from omnisafe_metacpo.cpo_step import (
    CPOCase,
    CPOStepError,
    cpo_step,
    dco_layer,
)
from tests.omnisafe_metacpo.cpo_step.helpers import (
    ALL_CASES,
    F64,
    make_batch,
    make_instance,
    rel_err,
    step_x,
    vjps,
)


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
    assert dco_layer._dco_layer(12) is dco_layer._dco_layer(12)
    assert dco_layer._dco_layer(12) is not dco_layer._dco_layer(13)


def test_cvxpylayers_uncertified_solution_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    # Clarabel stopped after 2 iterations returns an unconverged point and diffcp does not raise
    # (the status is dropped by cvxpylayers): the optimality certificate must catch it.
    clarabel = dict(dco_layer._SOLVER_ARGS['Clarabel'], max_iter=2)
    monkeypatch.setitem(dco_layer._SOLVER_ARGS, 'Clarabel', clarabel)
    g, a, b, delta = make_batch((CPOCase.FEASIBLE_ACTIVE, CPOCase.FEASIBLE_INACTIVE), 20, seed=5)
    with pytest.raises(CPOStepError, match=r'uncertified .* batch rows \[0, 1\]'):
        cpo_step(g, a, b, delta, backend='cvxpylayers')


def test_cvxpylayers_solver_error_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    # SCS stopped after 2 iterations: diffcp raises its SolverError, re-raised as CPOStepError.
    scs = dict(dco_layer._SOLVER_ARGS['SCS'], max_iters=2)
    monkeypatch.setitem(dco_layer._SOLVER_ARGS, 'SCS', scs)
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
