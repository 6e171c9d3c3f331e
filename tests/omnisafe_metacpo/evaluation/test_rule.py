"""Every algorithm's saved run is meta-tested with its own step and the same critic rule."""

from __future__ import annotations

import glob
import os

import omnisafe
import pytest
import torch
from omnisafe.algorithms import ALGORITHM2TYPE
from omnisafe.utils.config import Config

from omnisafe_metacpo import run_files
from omnisafe_metacpo.evaluation import rule
from omnisafe_metacpo.evaluation.saved_run import meta_test_saved_run
from omnisafe_metacpo.plugin.configs import load_default_config
from tests.conftest import tiny_meta_cfgs


def _run_cfgs(algo: str, env_id: str, **algo_cfgs: object) -> Config:
    """The config a run of ``algo`` on ``env_id`` would save (defaults plus ``algo_cfgs``)."""
    cfgs = load_default_config(algo, env_id, ALGORITHM2TYPE[algo])
    cfgs.recurisve_update({'algo': algo, 'env_id': env_id, 'algo_cfgs': algo_cfgs})
    return cfgs


@pytest.mark.parametrize(('algo', 'constrained', 'metric'), [
    ('MetaCPO', True, 'euclidean'),   # its own inner learner and settings
    ('MetaTRPO', False, 'euclidean'),
    ('CPO', True, 'fisher'),           # stock: CPO step in the KL metric, MetaCPO.yaml's delta
    ('CPOCorrected', True, 'fisher'),
    ('TRPO', False, 'fisher'),         # stock, no cost limit: TRPO step
])
def test_each_algorithm_adapts_with_its_own_step(algo: str, constrained: bool,
                                                  metric: str) -> None:
    cfgs = _run_cfgs(algo, 'MetaCarCircleHazard-v0')
    assert rule.is_constrained(cfgs) is constrained
    step = rule.step_cfgs(cfgs)
    assert step.metric == metric
    assert step.inner_delta == 0.01 and step.backtrack_steps == 15


@pytest.mark.parametrize('algo', ['MetaCPO', 'MetaTRPO', 'CPO', 'CPOCorrected', 'TRPO'])
def test_test_time_cost_limit_is_metacpo_yaml_s(algo: str) -> None:
    # Car-Circle-Hazard: h = 10 in training, 5 at test time (MetaCPO.yaml), for everyone.
    car = _run_cfgs(algo, 'MetaCarCircleHazard-v0')
    assert rule.resolve_meta_test_cfgs(car).cost_limit == 5.0
    # Elsewhere the run's own training limit (CPO's default is 25), or MetaCPO's 10 for TRPO.
    circle = _run_cfgs(algo, 'MetaPointCircle-v0')
    own = circle.algo_cfgs.get('cost_limit')
    expected = 10.0 if own is None else float(own)
    assert rule.resolve_meta_test_cfgs(circle).cost_limit == expected
    assert rule.resolve_meta_test_cfgs(circle, {'cost_limit': 3.0}).cost_limit == 3.0


def test_stock_run_is_adapted(cpo_run: str) -> None:
    overrides = {'num_tasks': 1, 'adapt_steps': 2, 'rollout_steps': 500}
    results = meta_test_saved_run(cpo_run, overrides=overrides)
    # both cost scales, for the adaptation rollouts and the deterministic evaluation
    assert set(results) == {f'{prefix}/{name}/step_{k}' for prefix in ('MetaTest', 'MetaTest/Eval')
                            for name in ('EpRet', 'EpCost', 'EpDiscCost') for k in range(3)}
    assert all(torch.isfinite(torch.tensor(value)) for value in results.values())
    # Deterministic: same tasks, rollout seeds, fresh critics.
    assert meta_test_saved_run(cpo_run, overrides=overrides) == results


def test_saved_critics_are_not_used(run_dir: str) -> None:
    """A MetaCPO run's saved critics play no part: spoiling them changes no result."""
    cfgs = tiny_meta_cfgs()
    cfgs['logger_cfgs']['log_dir'] = run_dir
    omnisafe.Agent('MetaCPO', 'MetaPointCircle-v0', custom_cfgs=cfgs).learn()
    (run,) = glob.glob(os.path.join(run_dir, 'MetaCPO-*', 'seed-*'))
    overrides = {'num_tasks': 1, 'adapt_steps': 2, 'rollout_steps': 500}
    last = run_files.saved_epochs(run)[-1]
    before = meta_test_saved_run(run, epoch=last, overrides=overrides)
    path = os.path.join(run, 'torch_save', f'epoch-{last}.pt')
    params = torch.load(path, weights_only=True)
    for name in ('reward_critic', 'cost_critic'):
        params[name] = {key: value * 100.0 + 1.0 for key, value in params[name].items()}
    torch.save(params, path)
    assert meta_test_saved_run(run, epoch=last, overrides=overrides) == before
    # ...while the policy matters (the same test on the untrained policy differs).
    assert meta_test_saved_run(run, epoch=0, overrides=overrides) != before
