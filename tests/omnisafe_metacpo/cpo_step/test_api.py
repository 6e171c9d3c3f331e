"""Tests of the entry point ``omnisafe_metacpo.cpo_step.cpo_step``: arguments, batching, chains.

The chain of K = 5 steps is checked against central finite differences.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from omnisafe_metacpo.cpo_step import (
    CPOCase,
    cpo_step,
)
from tests.omnisafe_metacpo.cpo_step.helpers import (
    ALL_CASES,
    F64,
    make_batch,
    spd_matrix,
)


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
