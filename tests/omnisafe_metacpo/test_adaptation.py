"""Inner CPO steps: the diagnostics they record and the KL bound of Euclidean steps."""

from __future__ import annotations

import math

import omnisafe
import pytest
import torch

from omnisafe_metacpo.config import MetaConfigError
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
