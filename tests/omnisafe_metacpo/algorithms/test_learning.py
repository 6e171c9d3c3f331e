"""Learning check (slow, out of CI's default run): ``pytest -m slow``.

On Point-Circle, after a modest number of meta-iterations, the meta-test return (after few-shot
adaptation on unseen test tasks) rises above the untrained policy's and the cost stays near h.
"""

from __future__ import annotations

import json
import os

import omnisafe
import pytest

from omnisafe_metacpo.evaluation.saved_run import meta_test_saved_run

ITERATIONS = int(os.environ.get('METACPO_LEARNING_ITERATIONS', '30'))
COST_LIMIT = 10.0


@pytest.mark.slow
def test_meta_test_return_rises_and_cost_stays_near_limit(run_dir: str) -> None:
    steps_per_epoch = 5 * 6 * 500  # 5 tasks x (K=5 + 1) rollouts of one 500-step episode
    agent = omnisafe.Agent('MetaCPO', 'MetaPointCircle-v0', custom_cfgs={
        'seed': 0,
        'train_cfgs': {'total_steps': ITERATIONS * steps_per_epoch, 'torch_threads': 1},
        'algo_cfgs': {'steps_per_epoch': steps_per_epoch, 'cost_limit': COST_LIMIT},
        'meta_test_cfgs': {'freq': 0},
        'logger_cfgs': {'log_dir': run_dir, 'use_tensorboard': False,
                        'save_model_freq': ITERATIONS},
    })
    agent.learn()
    log_dir = agent.agent.logger.log_dir
    overrides = {'num_tasks': 5, 'adapt_steps': 3, 'rollout_steps': 1000}
    before = meta_test_saved_run(log_dir, epoch=0, overrides=overrides)
    after = meta_test_saved_run(log_dir, epoch=ITERATIONS, overrides=overrides)
    report = {'iterations': ITERATIONS, 'before': before, 'after': after}
    with open(os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks', 'results',
                           'learning_check.json'), 'w', encoding='utf-8') as file:
        json.dump(report, file, indent=2)
    print(json.dumps(report, indent=2))
    last = overrides['adapt_steps']
    assert after[f'MetaTest/EpRet/step_{last}'] > before[f'MetaTest/EpRet/step_{last}'] + 5.0
    assert after['MetaTest/EpRet/step_0'] > before['MetaTest/EpRet/step_0']
    assert after[f'MetaTest/EpCost/step_{last}'] <= 2 * COST_LIMIT
