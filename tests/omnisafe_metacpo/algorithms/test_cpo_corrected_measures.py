"""CPOCorrected's ``algo_cfgs.cost_measure``: the scale of its constraint b + a'x <= 0."""

from __future__ import annotations

import csv
import os

import omnisafe
import pytest
import torch
from omnisafe.algorithms.on_policy.second_order.cpo import CPO

from omnisafe_metacpo import cost_measures


def _algo(run_dir: str, env_id: str = 'MetaPointCircle-v0', **algo_cfgs: object):
    return omnisafe.Agent('CPOCorrected', env_id, custom_cfgs={
        'train_cfgs': {'total_steps': 2000, 'torch_threads': 1},
        'algo_cfgs': {'steps_per_epoch': 1000, 'update_iters': 1, **algo_cfgs},
        'logger_cfgs': {'log_dir': run_dir, 'use_tensorboard': False},
    })


def _data(algo) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    obs = torch.randn((1000, algo._env.observation_space.shape[0]), generator=generator)
    act = torch.randn((1000, 2), generator=generator)
    with torch.no_grad():
        algo._actor_critic.actor(obs)
        logp = algo._actor_critic.actor.log_prob(act) + 0.1 * torch.randn(1000, generator=generator)
    adv_c = torch.randn(1000, generator=generator)
    return obs, act, logp, adv_c


def test_episode_scales_the_stock_surrogate_by_t(run_dir: str) -> None:
    algo = _algo(run_dir, cost_measure='episode').agent
    data = _data(algo)
    stock = CPO._loss_pi_cost(algo, *data)
    assert float(algo._loss_pi_cost(*data)) == pytest.approx(500 * float(stock), rel=1e-6)


def test_omnisafe_keeps_the_stock_surrogate(run_dir: str) -> None:
    algo = _algo(run_dir).agent
    data = _data(algo)
    assert float(algo._loss_pi_cost(*data)) == float(CPO._loss_pi_cost(algo, *data))


def test_discounted_weights_steps_by_gamma_t_per_episode(run_dir: str) -> None:
    algo = _algo(run_dir, cost_measure='discounted').agent
    obs, act, logp, adv_c = _data(algo)
    weights = torch.from_numpy(cost_measures.discount_weights(1000, [499, 999], 0.99)).float()
    algo._cost_weights = weights
    with torch.no_grad():
        algo._actor_critic.actor(obs)
        ratio = torch.exp(algo._actor_critic.actor.log_prob(act) - logp)
    expected = cost_measures.episode_weight(0.99, 500) * float((weights * ratio * adv_c).sum()
                                                               / weights.sum())
    assert float(algo._loss_pi_cost(obs, act, logp, adv_c)) == pytest.approx(expected, rel=1e-5)


def test_discounted_run_takes_b_from_the_discounted_cost(run_dir: str) -> None:
    agent = _algo(run_dir, cost_measure='discounted', cost_limit=1.0)
    agent.learn()
    algo = agent.agent
    # the positions of the last epoch's steps were taken and cleared by the update
    assert algo._env._metacpo_steps == []
    with open(os.path.join(algo.logger.log_dir, 'progress.csv'), encoding='utf-8') as file:
        rows = list(csv.DictReader(file))
    assert all(float(row['Metrics/EpDiscCost']) <= float(row['Metrics/EpCost']) for row in rows)
    assert algo._cost_value() == algo.logger.get_stats('Metrics/EpDiscCost')[0]


def test_bad_values_name_the_field(run_dir: str) -> None:
    with pytest.raises(ValueError, match=r"cost_measure = 'per_step'.*omnisafe, episode, discount"):
        _algo(run_dir, cost_measure='per_step')
    with pytest.raises(ValueError, match='task distribution'):
        _algo(run_dir, env_id='SafetyPointCircle1-v0', cost_measure='discounted')
