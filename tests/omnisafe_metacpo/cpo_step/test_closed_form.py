"""Tests of the closed-form CPO step (``omnisafe_metacpo.cpo_step.closed_form``).

References used: OmniSafe 0.5.0's own CPO algebra (``CPO._determine_case`` /
``CPO._step_direction``), the paper's DCO layer (backend ``cvxpylayers``), central finite
differences, and the KKT conditions.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from omnisafe_metacpo.cpo_step import (
    CPOCase,
    cpo_step,
    linearized_change,
)
from tests.omnisafe_metacpo.cpo_step.helpers import (
    ALL_CASES,
    DTYPES,
    F64,
    assert_finite_step_and_grads,
    make_batch,
    make_instance,
    rel_err,
    step_x,
    vjps,
)


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
@pytest.mark.parametrize('case', ALL_CASES)
def test_gradcheck_euclidean(case: CPOCase) -> None:
    inputs = make_batch((case, case), 5, seed=40 + int(case))
    assert cpo_step(*inputs).case.tolist() == [int(case)] * 2
    inputs = tuple(t.requires_grad_(True) for t in inputs)
    assert torch.autograd.gradcheck(step_x(), inputs)



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
# Robust numerics
# ------------------------------------------------------------------------------------------------
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


