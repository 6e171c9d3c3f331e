"""MetaCPOPaper: the paper's settings as a named preset of MetaCPO (``base: MetaCPO``)."""

from __future__ import annotations

import json
import os

import pytest
import yaml
from omnisafe.algorithms import ALGORITHMS

from omnisafe_metacpo.algorithms import MetaCPO, MetaCPOPaper
from omnisafe_metacpo.plugin import configs as integration
from tests.omnisafe_metacpo.test_install import _omnisafe_train

ENV_IDS = ['MetaPointCircle-v0', 'MetaCarCircleHazard-v0', 'MetaPointButton-v0',
           'SafetyPointCircle1-v0']


def _flat(config: dict, prefix: str = '') -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f'{prefix}{key}:'))
        else:
            flat[f'{prefix}{key}'] = value
    return flat


@pytest.mark.parametrize('env_id', ENV_IDS)
def test_preset_is_metacpo_with_the_papers_values(env_id: str) -> None:
    paper = _flat(integration.load_default_config('MetaCPOPaper', env_id, 'on-policy').todict())
    ours = _flat(integration.load_default_config('MetaCPO', env_id, 'on-policy').todict())
    assert set(paper) == set(ours)  # the same keys: every MetaCPO option applies to the preset
    # The preset's file lists exactly what it sets back; everything else is MetaCPO's, env
    # sections included (e.g. h = 5 at meta-test on Car-Circle-Hazard).
    with open(os.path.join(integration.configs_dir(), 'MetaCPOPaper.yaml'),
              encoding='utf-8') as file:
        own = _flat(yaml.safe_load(file)['defaults'])
    assert own == {'algo_cfgs:kl_bound': None, 'algo_cfgs:steps_per_epoch': 30000,
                   'algo_cfgs:cost_measure': 'discounted'}
    button = 'Button' in env_id  # the env section (60,000: 2,000-step rollouts) wins for both
    for key, value in paper.items():
        expected = ours[key] if button and key == 'algo_cfgs:steps_per_epoch' else own.get(
            key, ours[key])
        assert value == expected, key
    assert paper['algo_cfgs:steps_per_epoch'] == (60000 if button else 30000)
    assert ours['algo_cfgs:steps_per_epoch'] == (60000 if button else 15000)
    assert paper['model_cfgs:actor:hidden_sizes'] == [32, 16]
    assert paper['algo_cfgs:metric'] == 'euclidean'
    assert paper['algo_cfgs:inner_delta'] == paper['algo_cfgs:meta_delta'] == 0.01
    assert paper['algo_cfgs:num_tasks'] == paper['algo_cfgs:inner_steps'] == 5


def test_preset_is_registered_as_an_algorithm() -> None:
    assert 'MetaCPOPaper' in ALGORITHMS['on-policy'] and 'MetaCPOPaper' in ALGORITHMS['all']
    assert issubclass(MetaCPOPaper, MetaCPO)


def test_a_base_that_is_not_a_plugin_algorithm_is_rejected(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / 'MetaCPO.yaml').write_text('base: CPO\ndefaults: {}\n', encoding='utf-8')
    monkeypatch.setattr(integration, 'configs_dir', lambda: str(tmp_path))
    with pytest.raises(ValueError, match=r'MetaCPO.yaml: base: CPO is not an algorithm'):
        integration.load_default_config('MetaCPO', 'MetaPointCircle-v0', 'on-policy')


def test_preset_trains_through_the_stock_cli(run_dir: str) -> None:
    run = _omnisafe_train(run_dir, 'MetaCPOPaper', 'MetaPointCircle-v0',
                          'algo_cfgs:num_tasks', '2', 'algo_cfgs:inner_steps', '1',
                          'meta_test_cfgs:freq', '0', steps=800)
    with open(os.path.join(run, 'config.json'), encoding='utf-8') as file:
        config = json.load(file)
    assert config['algo'] == 'MetaCPOPaper' and config['algo_cfgs']['kl_bound'] is None
    with open(os.path.join(run, 'progress.csv'), encoding='utf-8') as file:
        assert len(file.readlines()) == 1 + 2  # header and two meta-iterations of 400 steps
    assert os.listdir(os.path.join(run, 'torch_save'))
