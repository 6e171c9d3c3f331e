"""Resume checks of :mod:`omnisafe_metacpo.checkpoint` (which saved runs continue which configs)."""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch
from omnisafe.utils.config import Config

from omnisafe_metacpo import checkpoint, run_files
from omnisafe_metacpo.algorithms.meta_cpo import ADDED_KEYS
from omnisafe_metacpo.config import MetaConfigError
from omnisafe_metacpo.meta.variants import StepVariants
from omnisafe_metacpo.plugin.configs import load_default_config


def _cfgs(**algo_cfgs: object) -> dict:
    return {
        'algo': 'MetaCPO', 'env_id': 'MetaPointCircle-v0', 'seed': 0,
        'algo_cfgs': {'inner_delta': 0.01, 'inner_holdout_block': None, 'inner_params': 'all',
                      'meta_over_limit': 'cpo', 'cost_measure': 'episode', 'cost_advantage': 'gae',
                      **algo_cfgs},
        'model_cfgs': {}, 'meta_test_cfgs': {'eval_episodes': 2}, 'env_cfgs': {},
        'train_cfgs': {'total_steps': 1000}, 'logger_cfgs': {'use_wandb': False},
    }


def _saved_run(run_dir: str, config: dict) -> str:
    os.makedirs(os.path.join(run_dir, 'checkpoints'))
    with open(os.path.join(run_dir, 'config.json'), 'w', encoding='utf-8') as file:
        json.dump(config, file)
    torch.save({'iteration': 3}, run_files.checkpoint_path(run_dir))
    return run_dir


def _older_version(config: dict) -> dict:
    """The config as a version before ``inner_holdout_block`` and later keys existed saved it."""
    older = copy.deepcopy(config)
    for key in ('inner_holdout_block', 'inner_params', 'meta_over_limit', 'cost_measure',
                'cost_advantage'):
        del older['algo_cfgs'][key]
    del older['meta_test_cfgs']['eval_episodes']
    return older


def test_a_run_saved_before_a_key_existed_resumes_at_its_neutral_value(run_dir: str) -> None:
    run = _saved_run(run_dir, _older_version(_cfgs()))
    longer = _cfgs()
    longer['train_cfgs']['total_steps'] = 3000  # extending a run: train_cfgs may change
    assert checkpoint.load(run, Config.dict2config(longer), ADDED_KEYS)['iteration'] == 3


@pytest.mark.parametrize('change', [{'inner_holdout_block': 500}, {'inner_params': 'head'},
                                    {'meta_over_limit': 'recover'},
                                    {'cost_measure': 'discounted'},
                                    {'cost_advantage': 'measure'}])
def test_a_run_saved_before_a_key_existed_refuses_another_value_of_it(
        run_dir: str, change: dict) -> None:
    run = _saved_run(run_dir, _older_version(_cfgs()))
    with pytest.raises(MetaConfigError, match='other algo_cfgs'):
        checkpoint.load(run, Config.dict2config(_cfgs(**change)), ADDED_KEYS)


def test_a_changed_setting_refuses_to_resume(run_dir: str) -> None:
    run = _saved_run(run_dir, _cfgs())
    with pytest.raises(MetaConfigError, match='other algo_cfgs'):
        checkpoint.load(run, Config.dict2config(_cfgs(inner_delta=0.001)), ADDED_KEYS)


def test_a_key_absent_from_both_configs_is_no_difference(run_dir: str) -> None:
    # MetaTRPO's config has no meta_over_limit, neither saved nor current
    config = _cfgs()
    del config['algo_cfgs']['meta_over_limit']
    run = _saved_run(run_dir, config)
    assert checkpoint.load(run, Config.dict2config(config), ADDED_KEYS)['iteration'] == 3


def test_the_neutral_values_are_the_papers_defaults() -> None:
    """Resuming a run saved before a variant's key existed keeps it off: StepVariants() is the
    paper's step, and MetaCPO.yaml's defaults are StepVariants()."""
    defaults = load_default_config('MetaCPO', 'MetaPointCircle-v0', 'on-policy').algo_cfgs
    assert StepVariants.from_cfgs(defaults) == StepVariants()
    for (section, key), value in StepVariants.neutral_keys().items():
        assert section == 'algo_cfgs' and defaults[key] == value, key
    assert ADDED_KEYS[('algo_cfgs', 'cost_measure')] == 'episode'
    assert ADDED_KEYS[('algo_cfgs', 'cost_advantage')] == defaults.cost_advantage == 'gae'


def test_tuple_hidden_sizes_resume_a_run_saved_with_lists(run_dir: str) -> None:
    # ExperimentGrid needs hashable values, so grids pass tuples; config.json holds lists
    config = _cfgs()
    config['model_cfgs'] = {'actor': {'hidden_sizes': [32, 16]}}
    run = _saved_run(run_dir, config)
    given = _cfgs()
    given['model_cfgs'] = {'actor': {'hidden_sizes': (32, 16)}}
    assert checkpoint.load(run, Config.dict2config(given))['iteration'] == 3
