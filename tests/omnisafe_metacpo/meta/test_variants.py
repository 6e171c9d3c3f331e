"""Inner CPO steps: the diagnostics they record and the KL bound of Euclidean steps."""

from __future__ import annotations

import math

import omnisafe
import pytest
import torch

from omnisafe_metacpo.config import MetaConfigError
from omnisafe_metacpo.meta.variants import split_rollout
from tests.conftest import tiny_meta_cfgs


def _algo(run_dir: str, **algo_cfgs: object):
    custom = tiny_meta_cfgs(**algo_cfgs)
    custom['logger_cfgs']['log_dir'] = run_dir
    return omnisafe.Agent('MetaCPO', 'MetaPointCircle-v0', custom_cfgs=custom).agent


def _inner_steps(algo, count: int = 3):
    env, learner = algo._env, algo._learner
    tasks = [env.sample_task() for _ in range(count)]
    theta = algo._policy.flat_params()
    batches = env.collect_tasks(algo._policy, [theta] * count, algo._actor_critic, tasks, 400,
                                list(range(count)))
    return [learner.inner_step(theta, batch, 10.0, create_graph=False)[1] for batch in batches]


def test_euclidean_steps_move_the_policy_by_more_than_a_small_kl(run_dir: str) -> None:
    records = _inner_steps(_algo(run_dir))
    for record in records:
        assert record.fault is None and record.fraction == 1.0  # the full Euclidean step
        assert record.kl > 1e-4  # nothing in the step bounds the KL
        assert math.isfinite(record.predicted_cost_change)  # the surrogate's prediction, recorded


def test_kl_bound_shrinks_euclidean_steps(run_dir: str) -> None:
    bound = 1e-4
    records = _inner_steps(_algo(run_dir, kl_bound=bound))
    for record in records:
        assert record.fault is None
        assert 0.0 < record.fraction < 1.0 and record.backtracks > 0
        assert record.kl <= bound * (1 + 1e-6)


@pytest.mark.parametrize('value', [0.0, -1.0, float('inf'), float('nan'), 'small'])
def test_kl_bound_is_validated(run_dir: str, value: object) -> None:
    with pytest.raises(MetaConfigError, match=r'algo_cfgs\.kl_bound'):
        _algo(run_dir, kl_bound=value)


def test_replayed_steps_equal_the_searched_ones(run_dir: str) -> None:
    """The meta line search replays inner steps with the stored fractions: same parameters."""
    algo = _algo(run_dir, kl_bound=1e-4)
    env, learner = algo._env, algo._learner
    task = env.sample_task()
    theta = algo._policy.flat_params()
    (batch,) = env.collect_tasks(algo._policy, [theta], algo._actor_critic, [task], 400, [5])
    phi, record = learner.inner_step(theta, batch, 10.0, create_graph=False)
    assert torch.equal(learner.replay(theta, [record], 10.0), phi.detach())


def test_holdout_split_alternates_blocks(run_dir: str) -> None:
    algo = _algo(run_dir)
    env = algo._env
    theta = algo._policy.flat_params()
    (batch,) = env.collect_tasks(algo._policy, [theta], algo._actor_critic, [env.sample_task()],
                                 400, [3])
    fit, held = split_rollout(batch, 50)
    assert split_rollout(batch, None) == (batch, batch)
    assert fit.num_steps == held.num_steps == 200
    assert torch.equal(fit.obs[:50], batch.obs[:50])
    assert torch.equal(held.obs[:50], batch.obs[50:100])
    assert torch.equal(held.adv_c[50:100], batch.adv_c[150:200])
    assert fit.cost_rate == held.cost_rate == batch.cost_rate  # b is the whole rollout's
    with pytest.raises(ValueError, match='inner_holdout_block'):
        split_rollout(batch, 400)


def test_holdout_line_search_judges_the_step_on_held_out_steps(run_dir: str) -> None:
    """The held-out half decides the fraction: Euclidean steps judged on their own rollout are
    always accepted whole (first test), judged on held-out steps some are shrunk or rejected; the
    recorded prediction is the held-out one, and the replay reproduces the step."""
    algo = _algo(run_dir, inner_holdout_block=25)
    env, learner = algo._env, algo._learner
    theta = algo._policy.flat_params()
    tasks = [env.sample_task() for _ in range(4)]
    batches = env.collect_tasks(algo._policy, [theta] * 4, algo._actor_critic, tasks, 400,
                                list(range(4)))
    fractions = []
    for batch in batches:
        phi, record = learner.inner_step(theta, batch, 10.0, create_graph=False)
        assert record.fault is None
        fractions.append(record.fraction)
        assert torch.equal(learner.replay(theta, [record], 10.0), phi.detach())
        _, held = split_rollout(batch, 25)
        with torch.no_grad():
            predicted = (learner.surrogates(phi.detach(), held)[1]
                         - learner.surrogates(theta, held)[1])
        assert math.isclose(record.predicted_cost_change, float(predicted), rel_tol=1e-5,
                            abs_tol=1e-6)
    assert min(fractions) < 1.0, fractions


@pytest.mark.parametrize('value', [0, -5, 2.5, 'x', 1000])
def test_holdout_block_is_validated(run_dir: str, value: object) -> None:
    with pytest.raises(MetaConfigError, match=r'algo_cfgs\.inner_holdout_block'):
        _algo(run_dir, inner_holdout_block=value)


def test_head_mask_marks_log_std_and_the_last_layer(run_dir: str) -> None:
    policy = _algo(run_dir)._policy
    mask = policy.head_mask()
    sizes = {name: param.numel() for name, param in policy.actor.named_parameters()}
    assert mask.shape == (policy.num_params,)
    assert set(mask.tolist()) == {0.0, 1.0}
    last = sorted(name.rsplit('.', 1)[0] for name in sizes if name != 'log_std')[-1]
    head = sizes['log_std'] + sizes[f'{last}.weight'] + sizes[f'{last}.bias']
    assert int(mask.sum()) == head < policy.num_params
    flat = torch.arange(policy.num_params, dtype=torch.float32)
    policy.load(flat)  # the mask's layout is the flat vector's
    marked = {float(v) for v in flat[mask.bool()]}
    params = dict(policy.actor.named_parameters())
    expected = {float(v) for name in ('log_std', f'{last}.weight', f'{last}.bias')
                for v in params[name].detach().flatten()}
    assert marked == expected


@pytest.mark.parametrize('metric', ['euclidean', 'fisher'])
def test_head_only_inner_steps_move_the_head_alone(run_dir: str, metric: str) -> None:
    algo = _algo(run_dir, inner_params='head', metric=metric)
    env, learner = algo._env, algo._learner
    theta = algo._policy.flat_params()
    (batch,) = env.collect_tasks(algo._policy, [theta], algo._actor_critic, [env.sample_task()],
                                 400, [4])
    phi, record = learner.inner_step(theta, batch, 10.0, create_graph=False)
    assert record.fault is None and record.fraction > 0.0
    moved = (phi.detach() - theta) != 0
    head = algo._policy.head_mask().bool()
    assert moved[head].any() and not moved[~head].any()
    if metric == 'euclidean':  # the whole trust region spent on the head: 0.5 |x|^2 = delta
        step = (phi.detach() - theta) / record.fraction
        assert float(0.5 * step.pow(2).sum()) == pytest.approx(learner.cfgs.inner_delta, rel=1e-4)
    # second order: the head's adapted values depend on the body's theta through g and a
    theta_grad = theta.clone().requires_grad_(True)
    phi_g, _ = learner.inner_step(theta_grad, batch, 10.0, create_graph=True,
                                  fraction=record.fraction)
    (grad,) = torch.autograd.grad(phi_g[head].sum(), theta_grad)
    assert (grad[~head] != 0).any()


def test_inner_params_is_validated(run_dir: str) -> None:
    with pytest.raises(MetaConfigError, match=r'algo_cfgs\.inner_params.*all or head'):
        _algo(run_dir, inner_params='last')
