"""The plug-in's YAML: presets that build on MetaCPO.yaml (``base:``, ``drop:``)."""

from __future__ import annotations

import omnisafe
import pytest

import task_distributions
from omnisafe_metacpo.meta.variants import StepVariants
from omnisafe_metacpo.plugin.configs import load_default_config

_ENV_IDS = sorted(task_distributions.supported_env_ids())


@pytest.mark.parametrize('env_id', _ENV_IDS)
def test_meta_trpo_is_meta_cpo_with_its_own_budget_and_no_meta_over_limit(env_id: str) -> None:
    """MetaTRPO.yaml names only what differs from MetaCPO.yaml; its effective config is what its
    full copy of MetaCPO.yaml was: 30,000 steps per iteration where MetaCPO.yaml's env section
    does not set them, and no meta_over_limit (nothing to recover from without a constraint)."""
    meta_cpo = load_default_config('MetaCPO', env_id, 'on-policy').todict()
    meta_trpo = load_default_config('MetaTRPO', env_id, 'on-policy').todict()
    expected = {**meta_cpo, 'algo_cfgs': dict(meta_cpo['algo_cfgs'])}
    del expected['algo_cfgs']['meta_over_limit']
    if meta_cpo['algo_cfgs']['steps_per_epoch'] == 15000:  # MetaCPO.yaml's default, not the env's
        expected['algo_cfgs']['steps_per_epoch'] = 30000
    assert meta_trpo == expected
    assert list(meta_trpo['algo_cfgs']) == list(expected['algo_cfgs'])  # progress/config order
    # no key is read with a default it does not have: the variants are the paper's
    assert StepVariants.from_cfgs(load_default_config('MetaTRPO', env_id, 'on-policy')
                                  .algo_cfgs) == StepVariants()


def test_a_dropped_key_is_rejected_like_any_unknown_one(run_dir: str) -> None:
    with pytest.raises(KeyError, match='Invalid key'):
        omnisafe.Agent('MetaTRPO', 'MetaPointCircle-v0', custom_cfgs={
            'algo_cfgs': {'meta_over_limit': 'recover'},
            'logger_cfgs': {'log_dir': run_dir}})
