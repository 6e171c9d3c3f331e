"""The batched sampler against OmniSafe's buffer and the sequential (per-task) reference path."""

from __future__ import annotations

import os

import numpy as np
import omnisafe
import pytest
import torch
from gymnasium.spaces import Box
from omnisafe.common.buffer import OnPolicyBuffer

from omnisafe_metacpo import policy as policy_module
from omnisafe_metacpo.config import MetaConfigError
from omnisafe_metacpo.policy import FunctionalPolicy
from omnisafe_metacpo.sampling.batched import gae
from tests.conftest import tiny_meta_cfgs


def _algo(run_dir: str, **algo_cfgs: object):
    custom = tiny_meta_cfgs(**algo_cfgs)
    custom['logger_cfgs']['log_dir'] = run_dir
    custom['model_cfgs'] = {'actor': {'hidden_sizes': [32, 16]}}
    return omnisafe.Agent('MetaCPO', 'SafetyPointCircle1-v0', custom_cfgs=custom).agent


def _thetas(algo, count: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    theta = algo._policy.flat_params()
    return [theta + 0.3 * torch.randn(theta.shape, generator=generator) for _ in range(count)]


def test_gae_equals_omnisafe_buffer_bit_for_bit() -> None:
    """Episodes ending by termination, truncation and the rollout's end, two rollouts at once."""
    steps, gamma, lam = 50, 0.99, 0.95
    generator = torch.Generator().manual_seed(0)
    rewards = torch.randn((steps, 2), generator=generator)
    values = torch.randn((steps, 2), generator=generator)
    after = torch.randn((steps, 2), generator=generator)  # V(s_{t+1}) / bootstrap values
    # rollout 0: terminated at 9, truncated at 29, cut at 49; rollout 1: truncated at 49.
    ends = [[(9, True), (29, False), (49, False)], [(49, False)]]
    next_values = torch.empty_like(values)
    next_values[:-1] = values[1:]
    continues = torch.ones((steps, 2), dtype=torch.float64)
    for index, task_ends in enumerate(ends):
        for step, terminated in task_ends:
            continues[step, index] = 0.0
            next_values[step, index] = 0.0 if terminated else after[step, index]
    adv, target = gae(rewards, values, next_values, continues, gamma, lam)
    space = Box(-1.0, 1.0, (3,))
    for index, task_ends in enumerate(ends):
        buffer = OnPolicyBuffer(space, Box(-1.0, 1.0, (2,)), steps, gamma, lam, lam, 'gae')
        buffer.data['reward'][:] = rewards[:, index]
        buffer.data['value_r'][:] = values[:, index]
        buffer.data['cost'][:] = rewards[:, index]
        buffer.data['value_c'][:] = values[:, index]
        for step, terminated in task_ends:
            buffer.ptr = step + 1
            last = torch.zeros(1) if terminated else after[step, index].reshape(1)
            buffer.finish_path(last, last)
        assert torch.equal(buffer.data['adv_r'], adv[:, index])
        assert torch.equal(buffer.data['target_value_r'], target[:, index])


def test_stacked_actor_equals_each_policy(run_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    algo = _algo(run_dir)
    policy: FunctionalPolicy = algo._policy
    thetas = torch.stack(_thetas(algo, 3))
    obs = torch.randn(3, algo._env.observation_space.shape[0])
    expected = [policy.distribution(theta, row.unsqueeze(0)) for theta, row in zip(thetas, obs,
                                                                                strict=True)]
    fast = policy.stacked(thetas)
    assert fast._layers is not None  # OmniSafe's Gaussian MLP actor takes the batched-matmul path
    monkeypatch.setattr(policy_module, '_is_plain_mlp', lambda module: False)
    general = policy.stacked(thetas)
    assert general._layers is None  # any other actor: vmap over functional_call
    for stacked in (fast, general):
        means = stacked.mean(obs)
        for index, dist in enumerate(expected):
            assert torch.allclose(means[index], dist.loc[0], atol=1e-6)
            assert torch.allclose(stacked.std[index], dist.scale[0], atol=0)


def _compare(batched, sequential) -> None:
    for fast, slow in zip(batched, sequential, strict=True):
        assert fast.ep_lengths == slow.ep_lengths == [500.0]  # one truncation, then a cut
        assert fast.cost_rate == slow.cost_rate
        assert fast.reward_rate == pytest.approx(slow.reward_rate, rel=1e-6)
        for name in ('obs', 'act', 'logp', 'adv_r', 'adv_c', 'target_value_r', 'target_value_c'):
            a, b = getattr(fast, name), getattr(slow, name)
            if name in ('obs', 'act'):
                assert torch.equal(a, b), name
            else:  # logp: one forward pass vs one per step; advantages: see the docstring
                assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), name


def test_batched_equals_sequential_without_normaliser(run_dir: str) -> None:
    """Same policies, tasks and seeds: the same rollouts, and the same advantages up to rounding.

    (OmniSafe's ``VectorOnPolicyBuffer`` standardises the advantages twice, in each buffer and
    over the concatenation; the batched sampler once, as a single buffer does.)"""
    algo = _algo(run_dir, obs_normalize=False)
    env, actor_critic = algo._env, algo._actor_critic
    tasks = [env.sample_task() for _ in range(3)]
    thetas, seeds = _thetas(algo, 3), [11, 12, 13]
    batched = env.collect_tasks(algo._policy, thetas, actor_critic, tasks, 700, seeds)
    sequential = env.collect_sequential(algo._policy, thetas, actor_critic, tasks, 700, seeds)
    _compare(batched, sequential)
    # A rollout does not depend on the rollouts sampled beside it (issue: tasks over ranks).
    (alone,) = env.collect_tasks(algo._policy, thetas[1:2], actor_critic, tasks[1:2], 700,
                                 seeds[1:2])
    for name in ('obs', 'act', 'adv_r', 'adv_c'):
        assert torch.equal(getattr(alone, name), getattr(batched[1], name)), name


def test_batched_with_normaliser_gives_the_same_kind_of_rollouts(run_dir: str) -> None:
    """With the shared normaliser the two paths push observations in another order (step-
    interleaved instead of task after task), so normalised observations differ in the first
    steps and the trajectories part (the dynamics amplify any difference). What must agree: the
    normaliser's statistics afterwards, and the rollouts' statistics over tasks."""
    algo = _algo(run_dir)
    env, actor_critic = algo._env, algo._actor_critic
    normalizer = env.obs_normalizer
    start = {key: value.clone() for key, value in normalizer.state_dict().items()}
    count = 8
    tasks = [env.sample_task() for _ in range(count)]
    thetas, seeds = _thetas(algo, count), list(range(30, 30 + count))
    batched = env.collect_tasks(algo._policy, thetas, actor_critic, tasks, 700, seeds)
    after_batched = {key: value.clone() for key, value in normalizer.state_dict().items()}
    normalizer.load_state_dict(start)
    sequential = env.collect_sequential(algo._policy, thetas, actor_critic, tasks, 700, seeds)
    assert after_batched['_count'] == normalizer.state_dict()['_count']
    # Means of other trajectories of the same policies: within half a standard deviation.
    gap = (after_batched['_mean'] - normalizer.mean).abs()
    assert bool((gap <= 0.5 * normalizer.std + 1e-6).all()), gap / normalizer.std
    for name in ('reward_rate', 'cost_rate'):
        fast = np.array([getattr(batch, name) for batch in batched])
        slow = np.array([getattr(batch, name) for batch in sequential])
        error = np.sqrt((fast.var(ddof=1) + slow.var(ddof=1)) / count)
        assert abs(fast.mean() - slow.mean()) <= 3 * error + 1e-3, (name, fast, slow)
    for fast, slow in zip(batched, sequential, strict=True):
        assert fast.ep_lengths == slow.ep_lengths
        assert abs(fast.adv_r.mean()) < 1e-5 and abs(slow.adv_r.mean()) < 1e-5
        assert float(fast.adv_r.std()) == pytest.approx(float(slow.adv_r.std()), rel=1e-3)


def test_sampler_config_is_validated(run_dir: str) -> None:
    with pytest.raises(MetaConfigError, match=r'algo_cfgs\.sampler'):
        _algo(run_dir, sampler='vectorised')
    with pytest.raises(MetaConfigError, match=r'algo_cfgs\.reward_normalize'):
        _algo(run_dir, reward_normalize=True)
    with pytest.raises(MetaConfigError, match=r'algo_cfgs\.adv_estimation_method'):
        _algo(run_dir, adv_estimation_method='gae-rtg')
    _algo(run_dir, reward_normalize=True, sampler='sequential')  # the reference path takes it


def test_progress_is_reported_per_lockstep(run_dir: str) -> None:
    algo = _algo(run_dir)
    seen: list[tuple[int, str]] = []
    tasks = [algo._env.sample_task() for _ in range(2)]
    algo._env.collect_tasks(algo._policy, _thetas(algo, 2), algo._actor_critic, tasks, 30,
                            [1, 2], progress=lambda n, text: seen.append((n, text)),
                            description='step 1')
    assert seen == [(2, 'step 1')] * 30
    assert np.sum([n for n, _ in seen]) == 60



def test_environments_in_a_helper_process_give_the_same_rollouts(run_dir: str) -> None:
    """``env_workers``: where an environment steps changes nothing, normaliser included."""
    batches = {}
    for workers in (0, 1):
        algo = _algo(os.path.join(run_dir, str(workers)), env_workers=workers)
        env = algo._env
        tasks = [env.sample_task() for _ in range(3)]
        batches[workers] = env.collect_tasks(algo._policy, _thetas(algo, 3), algo._actor_critic,
                                             tasks, 600, [41, 42, 43])
        groups = env._batched._envs.groups
        assert [type(group).__name__ for group in groups] == (
            ['EnvGroup'] if workers == 0 else ['WorkerEnvGroup', 'EnvGroup'])
        env.close()
    for alone, helped in zip(batches[0], batches[1], strict=True):
        for name in ('obs', 'act', 'logp', 'adv_r', 'adv_c', 'target_value_r'):
            assert torch.equal(getattr(alone, name), getattr(helped, name)), name
        assert alone.ep_costs == helped.ep_costs and alone.cost_rate == helped.cost_rate


@pytest.mark.parametrize('value', [-1, 1.5, 'two'])
def test_env_workers_is_validated(run_dir: str, value: object) -> None:
    with pytest.raises(MetaConfigError, match=r'algo_cfgs\.env_workers'):
        _algo(run_dir, env_workers=value)


def test_both_samplers_give_the_same_discounted_costs(run_dir: str) -> None:
    """J_C (the paper's discounted cost per episode) and its weights, equal from either sampler;
    with whole episodes it is the mean of the episodes' discounted sums."""
    from omnisafe_metacpo import cost_measures

    algo = _algo(run_dir, obs_normalize=False)
    env, actor_critic = algo._env, algo._actor_critic
    tasks = [env.sample_task() for _ in range(2)]
    thetas, seeds = _thetas(algo, 2), [21, 22]
    batched = env.collect_tasks(algo._policy, thetas, actor_critic, tasks, 1000, seeds)
    sequential = env.collect_sequential(algo._policy, thetas, actor_critic, tasks, 1000, seeds)
    gamma = algo._cfgs.algo_cfgs.cost_gamma
    weights = cost_measures.discount_weights(1000, [499, 999], gamma).astype(np.float32)
    for fast, slow in zip(batched, sequential, strict=True):
        assert fast.disc_cost == pytest.approx(slow.disc_cost, rel=1e-12)
        assert fast.ep_disc_costs == pytest.approx(slow.ep_disc_costs, rel=1e-12)
        assert torch.equal(fast.disc_weights, slow.disc_weights)
        assert torch.equal(fast.disc_weights, torch.from_numpy(weights))
        assert len(fast.ep_disc_costs) == 2  # two whole episodes of 500 steps
        assert fast.disc_cost == pytest.approx(np.mean(fast.ep_disc_costs))
        # each episode's discounted sum is at most its undiscounted one
        assert all(d <= c + 1e-9 for d, c in zip(fast.ep_disc_costs, fast.ep_costs, strict=True))
    assert any(batch.disc_cost > 0 for batch in batched)  # the policies do leave the circle


@pytest.mark.parametrize('batched', [True, False])
def test_a_deterministic_rollout_takes_the_mean_action(run_dir: str, batched: bool) -> None:
    algo = _algo(run_dir, obs_normalize=False)
    env, actor_critic = algo._env, algo._actor_critic
    tasks = [env.sample_task()]
    thetas = _thetas(algo, 1)
    collect = env.collect_batched if batched else env.collect_sequential
    (batch,) = collect(algo._policy, thetas, actor_critic, tasks, 300, [5], deterministic=True)
    # the sampler evaluates the stack of one policy on one observation per step
    actor = algo._policy.stacked(thetas[0].unsqueeze(0))
    mean = torch.cat([actor.mean(row.unsqueeze(0)) for row in batch.obs])
    assert torch.equal(batch.act, mean.reshape(batch.act.shape))
    (noisy,) = collect(algo._policy, thetas, actor_critic, tasks, 300, [5])
    assert not torch.equal(noisy.act, batch.act)


@pytest.mark.parametrize('measure', ['episode', 'discounted'])
def test_measure_cost_advantages_are_the_cost_to_the_episode_end_minus_the_critic(
        run_dir: str, measure: str) -> None:
    """``cost_advantage: measure``: target G_t, the cost to the end of t's episode discounted as
    the measure is (no bootstrap at the time limit at step 499; the episode cut by the rollout's
    end at step 699 is bootstrapped with the critic), advantage G_t - V(s_t), not centred; both
    samplers alike."""
    from omnisafe_metacpo import cost_measures

    algo = _algo(run_dir, obs_normalize=False, cost_advantage='measure', cost_measure=measure)
    env, actor_critic = algo._env, algo._actor_critic
    tasks = [env.sample_task() for _ in range(2)]
    thetas, seeds = _thetas(algo, 2), [31, 32]
    batched = env.collect_tasks(algo._policy, thetas, actor_critic, tasks, 700, seeds)
    sequential = env.collect_sequential(algo._policy, thetas, actor_critic, tasks, 700, seeds)
    _compare(batched, sequential)
    gamma = 1.0 if measure == 'episode' else algo._cfgs.algo_cfgs.cost_gamma
    for batch in batched:
        assert batch.ends == [499]
        costs = batch.step_costs.numpy()
        values = actor_critic.cost_critic(batch.obs)[0].detach().double().numpy()
        expected = cost_measures.returns_to_go(costs, batch.ends, gamma)
        # the cut episode: its costs to step 699, then gamma^(700 - t) V(s_700), V(s_700) read
        # off the last target (c_699 + gamma V(s_700))
        np.testing.assert_allclose(batch.target_value_c[:500].double().numpy(), expected[:500],
                                   rtol=1e-5, atol=1e-4)
        assert batch.target_value_c[600:].double().numpy() == pytest.approx(
            expected[600:] + gamma ** (700 - np.arange(600, 700)) * float(
                batch.target_value_c[-1] - costs[-1]) / gamma, abs=1e-4)
        # not centred (the config's standardized_cost_adv is True): the critic is the baseline
        assert algo._cfgs.algo_cfgs.standardized_cost_adv
        np.testing.assert_allclose(batch.adv_c.double().numpy(),
                                   batch.target_value_c.double().numpy() - values,
                                   rtol=1e-4, atol=1e-4)
    assert any(batch.step_costs.sum() > 0 for batch in batched)  # there are costs to predict
