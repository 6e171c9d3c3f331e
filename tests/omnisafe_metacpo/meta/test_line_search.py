"""Tests of the backtracking line search (``omnisafe_metacpo.meta.line_search``)."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from omnisafe_metacpo.cpo_step import CPOCase
from omnisafe_metacpo.meta.line_search import LineSearchResult, Rejection, backtracking_line_search

STEP = torch.ones(3)


class Recorder:
    """An ``evaluate`` that records the fractions it is asked about."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.fractions: list[float] = []

    def __call__(self, fraction: float) -> Any:
        self.fractions.append(fraction)
        return self.fn(fraction)


def search(evaluate: Any, case: Any = CPOCase.FEASIBLE_ACTIVE, **kwargs: Any) -> LineSearchResult:
    options = {'b': -0.5, 'max_kl': 0.01, 'decay': 0.8, 'max_steps': 15, **kwargs}
    return backtracking_line_search(STEP, evaluate, case, **options)


def test_full_step_accepted() -> None:
    evaluate = Recorder(lambda f: (0.1, 0.0, 0.001))
    result = search(evaluate)
    assert result == LineSearchResult(True, 1.0, 0, None, 0.1, 0.0, 0.001)
    assert evaluate.fractions == [1.0]


def test_fraction_sequence_when_nothing_is_accepted() -> None:
    evaluate = Recorder(lambda f: (0.1, 0.0, 1.0))  # KL always too large
    result = search(evaluate, decay=0.5, max_steps=6)
    assert evaluate.fractions == [0.5**j for j in range(6)]
    assert not result.accepted
    assert result.fraction == 0.0  # parameters unchanged
    assert result.num_backtracks == 6
    assert result.reason == Rejection.KL


def test_backtracks_until_kl_fits() -> None:
    # KL grows as fraction^2: 0.05 f^2 <= 0.01 first at f = 0.8^4.
    evaluate = Recorder(lambda f: (0.1 * f, 0.0, 0.05 * f * f))
    result = search(evaluate)
    assert result.accepted and result.num_backtracks == 4
    assert result.fraction == pytest.approx(0.8**4)
    assert result.reason == Rejection.KL
    assert result.kl == pytest.approx(0.05 * 0.8**8)


def test_reward_checked_only_when_feasible() -> None:
    worse = lambda f: (-0.1, 0.0, 0.001)  # noqa: E731
    feasible = search(worse, b=-0.5, max_steps=3)
    assert not feasible.accepted and feasible.reason == Rejection.REWARD
    # x = 0 violates the constraint (OmniSafe's cases 0 and 1): only cost and KL count.
    assert search(worse, b=0.2, case=CPOCase.FEASIBLE_ACTIVE).accepted
    assert search(worse, b=0.2, case=CPOCase.INFEASIBLE_RECOVERY).accepted
    assert search(worse, b=-0.5, case=CPOCase.INFEASIBLE_RECOVERY).accepted
    # A zero improvement is not a decrease (OmniSafe rejects only < 0).
    assert search(lambda f: (0.0, 0.0, 0.001)).accepted


def test_cost_slack() -> None:
    # Feasible with slack 0.5: the surrogate cost may rise by up to 0.5.
    assert search(lambda f: (0.1, 0.4, 0.001), b=-0.5).accepted
    rejected = search(lambda f: (0.1, 0.6, 0.001), b=-0.5, max_steps=2)
    assert not rejected.accepted and rejected.reason == Rejection.COST
    # Infeasible: the cost must not rise at all.
    assert search(lambda f: (0.1, -1e-9, 0.001), b=0.3).accepted
    assert not search(lambda f: (0.1, 1e-9, 0.001), b=0.3).accepted
    # Cost rising with the fraction: accepted once the rise fits.
    result = search(lambda f: (0.1, f, 0.001), b=-0.5)
    assert result.accepted and result.fraction == pytest.approx(0.8**4)  # 0.8^3 = 0.512 > 0.5


@pytest.mark.parametrize('bad', [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_rejections(bad: float) -> None:
    for position in range(3):

        def evaluate(fraction: float, position: int = position) -> tuple[float, ...]:
            values = [0.1, 0.0, 0.001]
            if fraction > 0.7:  # the first two trials
                values[position] = bad
            return tuple(values)

        result = search(evaluate)
        assert result.accepted and result.num_backtracks == 2
        assert result.reason == Rejection.NOT_FINITE


def test_tensor_values_and_nan_tensors() -> None:
    def evaluate(fraction: float) -> tuple[torch.Tensor, ...]:
        kl = torch.tensor(math.nan if fraction == 1.0 else 0.001, requires_grad=True)
        return torch.tensor(0.1), torch.tensor(0.0), kl

    case = torch.tensor(int(CPOCase.FEASIBLE_INACTIVE))
    result = search(evaluate, case=case, b=torch.tensor(-0.2))
    assert result.accepted and result.num_backtracks == 1 and result.reason == Rejection.NOT_FINITE


def test_value_error_from_evaluate_is_a_rejection() -> None:
    # torch.distributions raise ValueError for NaN parameters (OmniSafe catches it the same way).
    def evaluate(fraction: float) -> tuple[float, ...]:
        if fraction == 1.0:
            torch.distributions.Normal(torch.tensor(math.nan), 1.0, validate_args=True)
        return 0.1, 0.0, 0.001

    result = search(evaluate)
    assert result.accepted and result.num_backtracks == 1 and result.reason == Rejection.NOT_FINITE


def test_other_errors_propagate() -> None:
    def evaluate(fraction: float) -> tuple[float, ...]:
        raise RuntimeError('bug in evaluate')

    with pytest.raises(RuntimeError, match='bug in evaluate'):
        search(evaluate)


def test_non_finite_step_is_not_evaluated() -> None:
    evaluate = Recorder(lambda f: (0.1, 0.0, 0.001))
    step = torch.tensor([1.0, math.nan])
    result = backtracking_line_search(step, evaluate, CPOCase.FEASIBLE_ACTIVE, b=-1.0, max_kl=0.1)
    # Field by field: since Python 3.13 a dataclass's == compares NaN fields with ==, never equal.
    assert (result.accepted, result.fraction, result.num_backtracks, result.reason) == (
        False, 0.0, 0, Rejection.STEP_NOT_FINITE)
    assert all(math.isnan(v) for v in (result.reward_improvement, result.cost_increase, result.kl))
    assert evaluate.fractions == []


def test_argument_errors() -> None:
    ok = lambda f: (0.1, 0.0, 0.001)  # noqa: E731
    for kwargs, message in (
        ({'decay': 1.0}, 'decay must be in'),
        ({'decay': 0.0}, 'decay must be in'),
        ({'max_steps': 0}, 'max_steps must be an integer >= 1'),
        ({'max_steps': 2.5}, 'max_steps must be an integer >= 1'),
        ({'max_kl': 0.0}, 'max_kl must be > 0'),
        ({'b': math.nan}, 'b must not be NaN'),
        ({'case': 7}, 'case must be a CPOCase'),
        ({'case': torch.tensor([1, 2])}, 'single CPOCase'),
    ):
        with pytest.raises(ValueError, match=message):
            search(ok, **kwargs)


# ------------------------------------------------------------------------------------------------
# Same decisions as OmniSafe 0.5.0's CPO._cpo_search_step
# ------------------------------------------------------------------------------------------------
class _GaussianActor(torch.nn.Module):
    """Mean-only Gaussian policy: what ``_cpo_search_step`` needs from ``actor_critic.actor``."""

    def __init__(self, mean: torch.Tensor) -> None:
        super().__init__()
        self.mean = torch.nn.Parameter(mean.clone())

    def forward(self, obs: torch.Tensor) -> torch.distributions.Normal:
        # A new tensor, as a network's output would be (OmniSafe swaps param.data in place).
        return torch.distributions.Normal(self.mean * 1.0, torch.ones_like(self.mean))


def _omnisafe_search(
    theta: torch.Tensor,
    step: torch.Tensor,
    reward: Any,
    cost: Any,
    *,
    b: float,
    optim_case: int,
    max_kl: float,
    total_steps: int,
    decay: float,
) -> tuple[torch.Tensor, int]:
    from omnisafe.algorithms.on_policy.second_order.cpo import CPO

    actor = _GaussianActor(theta)
    algo = CPO.__new__(CPO)
    algo._actor_critic = SimpleNamespace(actor=actor)
    algo._cfgs = SimpleNamespace(algo_cfgs=SimpleNamespace(target_kl=max_kl))
    algo._logger = SimpleNamespace(log=lambda *args, **kwargs: None, store=lambda *a, **k: None)
    # OmniSafe's losses: loss_pi = -(reward surrogate), loss_pi_cost = cost surrogate.
    algo._loss_pi = lambda obs, act, logp, adv: -reward(actor.mean)
    algo._loss_pi_cost = lambda obs, act, logp, adv_c: cost(actor.mean)
    with torch.no_grad():
        p_dist = actor(None)
        loss_reward_before, loss_cost_before = -reward(theta), cost(theta)
    none = torch.zeros(1)
    return algo._cpo_search_step(
        step_direction=step,
        grads=torch.zeros_like(step),
        p_dist=p_dist,
        obs=none,
        act=none,
        logp=none,
        adv_r=none,
        adv_c=none,
        loss_reward_before=loss_reward_before,
        loss_cost_before=loss_cost_before,
        total_steps=total_steps,
        decay=decay,
        violation_c=b,
        optim_case=optim_case,
    )


def _scenario(seed: int) -> dict[str, Any]:
    """A random smooth problem: parameters, step, reward and cost surrogates, b, max_kl."""
    gen = torch.Generator().manual_seed(seed)
    n = 4
    theta = torch.randn(n, generator=gen)
    step = (0.05, 0.3, 1.0)[seed % 3] * torch.randn(n, generator=gen)
    w_r, w_c = torch.randn(n, generator=gen), torch.randn(n, generator=gen)

    def reward(t: torch.Tensor) -> torch.Tensor:
        return torch.sin(w_r @ t) + 0.1 * (t @ t)

    def cost(t: torch.Tensor) -> torch.Tensor:
        return torch.cos(w_c @ t)

    def evaluate(fraction: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        new = theta + fraction * step
        kl = torch.distributions.kl_divergence(
            torch.distributions.Normal(theta, torch.ones(n)),
            torch.distributions.Normal(new, torch.ones(n)),
        ).mean()
        return reward(new) - reward(theta), cost(new) - cost(theta), kl

    return {
        'theta': theta,
        'step': step,
        'reward': reward,
        'cost': cost,
        'evaluate': evaluate,
        'b': float(torch.randn((), generator=gen)) * 0.3,
        'max_kl': float(torch.rand((), generator=gen)) * 0.05 + 0.005,
    }


SEEDS = range(15)


@pytest.mark.parametrize('seed', SEEDS)
def test_same_decisions_as_omnisafe_cpo_search_step(seed: int) -> None:
    sc = _scenario(seed)
    b, step = sc['b'], sc['step']
    # OmniSafe's optim_case > 1 exactly when x = 0 is feasible (b < 0).
    case, optim_case = (CPOCase.FEASIBLE_INACTIVE, 2) if b < 0 else (CPOCase.FEASIBLE_ACTIVE, 1)
    ours = backtracking_line_search(
        step, sc['evaluate'], case, b=b, max_kl=sc['max_kl'], decay=0.8, max_steps=10,
    )
    omni_step, acceptance_step = _omnisafe_search(
        sc['theta'], step, sc['reward'], sc['cost'], b=b, optim_case=optim_case,
        max_kl=sc['max_kl'], total_steps=10, decay=0.8,
    )
    # OmniSafe: acceptance_step = j + 1 for the accepted j, 0 if none; the step is returned scaled.
    assert ours.accepted == (acceptance_step > 0)
    if ours.accepted:
        assert ours.num_backtracks == acceptance_step - 1
    torch.testing.assert_close(ours.fraction * step, omni_step)


def test_omnisafe_comparison_covers_every_outcome() -> None:
    """The scenarios above include accepted full steps, backtracking, and no accepted step."""
    outcomes = set()
    for seed in SEEDS:
        sc = _scenario(seed)
        case = CPOCase.FEASIBLE_INACTIVE if sc['b'] < 0 else CPOCase.FEASIBLE_ACTIVE
        result = backtracking_line_search(
            sc['step'], sc['evaluate'], case, b=sc['b'], max_kl=sc['max_kl'], max_steps=10,
        )
        outcomes.add(min(result.num_backtracks, 1) if result.accepted else 'none')
    assert outcomes == {0, 1, 'none'}
