"""The critic rule of meta-testing: fresh critics fitted on each rollout, A = G - V."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import gymnasium
import numpy as np
import pytest
import torch
from omnisafe.utils.config import Config

from omnisafe_metacpo import cost_measures
from omnisafe_metacpo.evaluation.fresh_critics import FreshCritics, ZeroCritic
from omnisafe_metacpo.evaluation.rule import SAMPLER_CFGS, cost_returns_gamma, metacpo_defaults
from omnisafe_metacpo.policy import FunctionalPolicy
from omnisafe_metacpo.sampling.adapter import TaskRolloutAdapter
from omnisafe_metacpo.sampling.batch import Batch

OBS_DIM = 6


def _critics(**kwargs: object) -> FreshCritics:
    space = gymnasium.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    act = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)
    cfgs = Config.dict2config({'hidden_sizes': [64, 64], 'activation': 'tanh', 'lr': 1e-3})
    return FreshCritics(space, act, cfgs, **kwargs)


def _batch(returns_r: torch.Tensor, returns_c: torch.Tensor, obs: torch.Tensor) -> Batch:
    size = obs.shape[0]
    return Batch(obs=obs, act=torch.zeros(size, 2), logp=torch.zeros(size),
                 adv_r=torch.zeros(size), adv_c=torch.zeros(size), target_value_r=returns_r,
                 target_value_c=returns_c, cost_rate=0.0, reward_rate=0.0)


def test_fit_learns_the_returns_and_leaves_the_random_stream_alone() -> None:
    generator = torch.Generator().manual_seed(0)
    obs = torch.randn(800, OBS_DIM, generator=generator)
    # A return that depends on the state (what a baseline can learn), on a large scale.
    returns = 200.0 + 80.0 * torch.tanh(obs[:, 0] - 0.5 * obs[:, 1])
    state = torch.get_rng_state()
    values = _critics().fit(obs, returns)
    assert torch.equal(torch.get_rng_state(), state)
    explained = 1.0 - float((returns - values).var() / returns.var())
    assert explained > 0.8, explained
    # Same initial weights every time: the rule is deterministic.
    assert torch.equal(values, _critics().fit(obs, returns))


def test_advantages_are_returns_minus_values_standardised_and_centred() -> None:
    generator = torch.Generator().manual_seed(1)
    obs = torch.randn(500, OBS_DIM, generator=generator)
    returns_r = 3.0 * obs[:, 2] + torch.randn(500, generator=generator)
    returns_c = 50.0 * (obs[:, 3] > 0).float()
    batch = _batch(returns_r, returns_c, obs)
    critics = _critics()
    out = critics.advantages(batch)
    assert torch.equal(out.target_value_r, returns_r) and torch.equal(out.obs, obs)
    assert abs(float(out.adv_r.mean())) < 1e-5
    assert float(out.adv_r.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
    assert abs(float(out.adv_c.mean())) < 1e-3
    # Cost advantages keep their scale (cost per step), only centred: A_C = G_C - V_C - mean.
    raw_c = returns_c - critics.fit(obs, returns_c)
    assert torch.allclose(out.adv_c, raw_c - raw_c.mean(), atol=1e-4)
    # The advantage is the part of the return the state does not explain: far smaller.
    assert float(raw_c.var()) < 0.3 * float(returns_c.var())


def test_constant_returns_give_zero_advantages() -> None:
    obs = torch.randn(100, OBS_DIM)
    batch = _batch(torch.randn(100), torch.zeros(100), obs)
    out = _critics().advantages(batch)
    assert torch.count_nonzero(out.adv_c) == 0


def test_zero_critic_answers_like_omnisafe_critics() -> None:
    (values,) = ZeroCritic()(torch.ones(7, OBS_DIM))
    assert values.shape == (7,) and torch.count_nonzero(values) == 0
    (value,) = ZeroCritic()(torch.ones(1, OBS_DIM))
    assert value.shape == (1,)


@pytest.mark.parametrize('batched', [True, False])
def test_sampled_targets_are_returns_to_go_without_bootstrap(batched: bool) -> None:
    """What the rule builds on: with ZeroCritic and the rule's sampler settings (and gamma = 1
    here, so that the sum is plain), the target at an episode's first step is the episode's
    return, for both samplers."""
    cfgs = metacpo_defaults('MetaPointCircle-v0')
    cfgs.algo_cfgs.recurisve_update({**SAMPLER_CFGS, 'gamma': 1.0})
    adapter = TaskRolloutAdapter('MetaPointCircle-v0', 0, cfgs, split='test')
    try:
        policy = FunctionalPolicy(_actor(adapter))
        collectors = SimpleNamespace(reward_critic=ZeroCritic(), cost_critic=ZeroCritic())
        collect = adapter.collect_batched if batched else adapter.collect_sequential
        (batch,) = collect(policy, [policy.flat_params()], collectors, [adapter.sample_task()],
                           1000, [3])
    finally:
        adapter.close()
    assert batch.ep_lengths == [500.0, 500.0]
    for episode, start in enumerate((0, 500)):
        assert float(batch.target_value_r[start]) == pytest.approx(batch.ep_returns[episode],
                                                                   rel=1e-4, abs=1e-3)
        assert float(batch.target_value_c[start]) == pytest.approx(batch.ep_costs[episode],
                                                                   abs=1e-3)
    # Reward-to-go decreases by the step's reward: G_t - G_{t+1} = r_t (~ one step's reward).
    steps = batch.target_value_r[:499] - batch.target_value_r[1:500]
    assert float(steps.abs().max()) < 1.0
    # The step costs and episode ends the ``returns`` rule builds on, from both samplers alike.
    assert batch.ends == [499, 999] and batch.step_costs.dtype == torch.float64
    assert [float(batch.step_costs[:500].sum()), float(batch.step_costs[500:].sum())] == \
        batch.ep_costs
    np.testing.assert_allclose(cost_measures.returns_to_go(batch.step_costs.numpy(), batch.ends,
                                                           1.0),
                               batch.target_value_c.numpy(), atol=1e-3)


def _actor(adapter: TaskRolloutAdapter) -> torch.nn.Module:
    from omnisafe.models.actor.actor_builder import ActorBuilder

    torch.manual_seed(0)
    return ActorBuilder(adapter.observation_space, adapter.action_space, [32, 16],
                        'tanh').build_actor('gaussian_learning')


def test_replace_keeps_batch_fields() -> None:
    obs = torch.randn(50, OBS_DIM)
    batch = dataclasses.replace(_batch(torch.randn(50), torch.rand(50), obs), cost_rate=0.25,
                                ep_returns=[1.0])
    out = _critics(fit_iters=5).advantages(batch)
    assert out.cost_rate == 0.25 and out.ep_returns == [1.0]


def test_returns_cost_advantages_are_the_returns_to_go_without_a_baseline() -> None:
    """``cost_advantages: returns``: A_C = the cost-to-go on the step's discount, not centred (a
    baseline fitted to, or averaged over, the rollout itself would remove part of the gradient);
    the reward advantages keep the fresh-critic rule."""
    generator = torch.Generator().manual_seed(2)
    obs = torch.randn(6, OBS_DIM, generator=generator)
    costs = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    batch = dataclasses.replace(_batch(torch.randn(6, generator=generator), torch.zeros(6), obs),
                                step_costs=costs, ends=[2, 4])
    out = _critics(cost_advantages='returns', cost_returns_gamma=0.5).advantages(batch)
    assert torch.equal(out.adv_c, torch.tensor([1.25, 0.5, 1.0, 0.5, 1.0, 1.0]))
    assert torch.equal(out.adv_r, _critics().advantages(batch).adv_r)
    undiscounted = _critics(cost_advantages='returns').advantages(batch).adv_c
    assert torch.equal(undiscounted, torch.tensor([2.0, 1.0, 1.0, 1.0, 1.0, 1.0]))


def test_returns_rule_needs_step_costs_and_names_are_checked() -> None:
    batch = _batch(torch.randn(4), torch.zeros(4), torch.randn(4, OBS_DIM))
    with pytest.raises(ValueError, match='step costs'):
        _critics(cost_advantages='returns').advantages(batch)
    with pytest.raises(ValueError, match=r'meta_test_cfgs\.cost_advantages.*fresh_critic, returns'):
        _critics(cost_advantages='baseline')


def test_the_returns_discount_is_the_step_measure_s() -> None:
    cfgs = metacpo_defaults('MetaPointCircle-v0').algo_cfgs
    assert cfgs.cost_measure == 'episode' and cost_returns_gamma(cfgs) == 1.0
    cfgs['cost_measure'] = 'discounted'
    assert cost_returns_gamma(cfgs) == cfgs.cost_gamma == 0.99
    del cfgs['cost_measure']  # a run saved before the key existed constrained the episode's cost
    assert cost_returns_gamma(cfgs) == 1.0
