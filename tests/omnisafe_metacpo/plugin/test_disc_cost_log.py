"""Stock algorithms on the plug-in's envs log the paper's discounted cost beside OmniSafe's."""

from __future__ import annotations

import csv
import os

import omnisafe
import pytest
import torch

from omnisafe_metacpo import cost_measures
from omnisafe_metacpo.plugin import disc_cost_log


def _agent(algo: str, env_id: str, run_dir: str, **algo_cfgs: object) -> omnisafe.Agent:
    return omnisafe.Agent(algo, env_id, custom_cfgs={
        'train_cfgs': {'total_steps': 2000, 'torch_threads': 1},
        'algo_cfgs': {'steps_per_epoch': 1000, 'update_iters': 1, **algo_cfgs},
        'logger_cfgs': {'log_dir': run_dir, 'use_tensorboard': False},
    })


def _rows(agent: omnisafe.Agent) -> list[dict[str, str]]:
    path = os.path.join(agent.agent.logger.log_dir, 'progress.csv')
    with open(path, encoding='utf-8') as file:
        return list(csv.DictReader(file))


def test_the_adapter_sums_gamma_t_c_t_from_each_episode_start(run_dir: str) -> None:
    agent = _agent('TRPO', 'MetaPointCircle-v0', run_dir)
    adapter, logger = agent.agent._env, agent.agent.logger
    costs = [0.0, 1.0, 0.0, 1.0, 1.0]
    for _episode in range(2):  # the second episode's discount starts again at gamma^0
        for cost in costs:
            adapter._log_value(torch.zeros(1), torch.tensor([cost]), {})
        adapter._log_metrics(logger, 0)
        adapter._reset_log(0)
        adapter._ep_len[0] = 0.0  # what OnPolicyAdapter.rollout does after _reset_log
    expected = cost_measures.episode_sums(costs, [len(costs) - 1], 0.99)[0]
    assert logger.get_stats(disc_cost_log.KEY)[0] == pytest.approx(expected)
    assert logger.get_stats('Metrics/EpCost')[0] == pytest.approx(3.0)


@pytest.mark.parametrize('algo', ['TRPO', 'CPO'])
def test_stock_algorithms_log_both_scales_on_the_plugin_envs(run_dir: str, algo: str) -> None:
    agent = _agent(algo, 'MetaPointCircle-v0', run_dir)
    agent.learn()
    rows = _rows(agent)
    assert len(rows) == 2
    for row in rows:
        cost, disc = float(row['Metrics/EpCost']), float(row[disc_cost_log.KEY])
        # 0 <= J_C <= the undiscounted sum, and at most 1 / (1 - gamma) = 100 per episode
        assert 0.0 <= disc <= cost and disc <= 100.0
    assert any(float(row[disc_cost_log.KEY]) > 0 for row in rows)


def test_other_envs_keep_omnisafes_columns(cpo_run: str) -> None:
    with open(os.path.join(cpo_run, 'progress.csv'), encoding='utf-8') as file:
        header = next(csv.reader(file))
    assert 'Metrics/EpCost' in header and disc_cost_log.KEY not in header
