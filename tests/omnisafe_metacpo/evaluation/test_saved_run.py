"""Meta-test of a saved run on other unseen tasks: ``--task-seed``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import omnisafe
import pytest

from omnisafe_metacpo.evaluation import saved_run, summary
from omnisafe_metacpo.evaluation.saved_run import main
from tests.conftest import BIN, tiny_meta_cfgs

# Stock runs are tested without adaptation (they save no critics): short and enough to tell tasks
# apart, since the reward of a Circle task depends on its radius.
_SMALL = ['--num-tasks', '2', '--adapt-steps', '0', '--rollout-steps', '200']


def _meta_test(run: str, output: str, *extra: str) -> dict[str, float]:
    main([run, *_SMALL, '--output', output, *extra])
    with open(output, encoding='utf-8') as file:
        return json.load(file)


def test_task_seed_draws_other_tasks_repeatably(cpo_run: str, run_dir: str) -> None:
    with open(os.path.join(cpo_run, 'config.json'), encoding='utf-8') as file:
        run_seed = json.load(file)['seed']
    default = _meta_test(cpo_run, os.path.join(run_dir, 'default.json'))
    other = _meta_test(cpo_run, os.path.join(run_dir, 'other.json'), '--task-seed', '5')
    again = _meta_test(cpo_run, os.path.join(run_dir, 'again.json'), '--task-seed', '5')
    assert default['task_seed'] == run_seed and other['task_seed'] == 5
    # Same policy and rollout seeds: only the tasks differ, so the returns do...
    assert other['MetaTest/EpRet/step_0'] != default['MetaTest/EpRet/step_0']
    # ...and the same task seed gives the same tasks, hence the same results.
    assert again == other


def test_task_seed_equal_to_run_seed_changes_nothing(cpo_run: str, run_dir: str) -> None:
    with open(os.path.join(cpo_run, 'config.json'), encoding='utf-8') as file:
        run_seed = json.load(file)['seed']
    default = _meta_test(cpo_run, os.path.join(run_dir, 'default.json'))
    same = _meta_test(cpo_run, os.path.join(run_dir, 'same.json'), '--task-seed', str(run_seed))
    assert same == default


def test_trace_records_each_adaptation_step_and_changes_nothing(cpo_run: str) -> None:
    from omnisafe_metacpo.evaluation.saved_run import meta_test_saved_run

    overrides = {'num_tasks': 2, 'adapt_steps': 2, 'rollout_steps': 500}
    trace: list[dict[str, float]] = []
    traced = meta_test_saved_run(cpo_run, overrides=overrides, trace=trace)
    assert traced == meta_test_saved_run(cpo_run, overrides=overrides)
    assert sorted((row['task'], row['step']) for row in trace) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for k in range(2):  # the rows' costs are the ones the means are made of
        rows = [row for row in trace if row['step'] == k]
        assert sum(row['cost_before'] for row in rows) / 2 == \
            pytest.approx(traced[f'MetaTest/EpCost/step_{k}'])
        assert sum(row['cost_after'] for row in rows) / 2 == \
            pytest.approx(traced[f'MetaTest/EpCost/step_{k + 1}'])
    assert all(row['fraction'] >= 0.0 and row['kl'] >= 0.0 for row in trace)
    assert all(row['cost_control'] >= 0.0 for row in trace)


def test_saved_critics_repeat_the_meta_test_of_training(run_dir: str) -> None:
    """``critics='saved'`` adapts as the run's own meta-test did during training: same numbers."""
    import csv

    import omnisafe

    from omnisafe_metacpo.evaluation.saved_run import meta_test_saved_run
    from tests.conftest import tiny_meta_cfgs

    custom = tiny_meta_cfgs()
    custom['logger_cfgs']['log_dir'] = run_dir
    agent = omnisafe.Agent('MetaCPO', 'MetaPointCircle-v0', custom_cfgs=custom)
    agent.learn()
    log_dir = agent.agent.logger.log_dir
    with open(os.path.join(log_dir, 'progress.csv'), encoding='utf-8') as file:
        last = list(csv.DictReader(file))[-1]
    saved = meta_test_saved_run(log_dir, critics='saved')
    assert saved == {key: pytest.approx(float(last[key]), rel=1e-6) for key in saved}
    fresh = meta_test_saved_run(log_dir)
    # tracing samples control rollouts too, with the (updating) observation normaliser restored
    assert meta_test_saved_run(log_dir, trace=[]) == fresh
    assert meta_test_saved_run(log_dir, trace=[], critics='saved') == saved
    assert fresh['MetaTest/EpCost/step_0'] == saved['MetaTest/EpCost/step_0']  # theta's rollouts
    assert fresh != saved  # adapted with other advantages
    with pytest.raises(ValueError, match='epoch 1'):
        meta_test_saved_run(log_dir, epoch=1, critics='saved')


def test_saved_critics_are_refused_for_stock_runs(cpo_run: str) -> None:
    from omnisafe_metacpo.evaluation.saved_run import meta_test_saved_run

    with pytest.raises(ValueError, match='CPO runs save no critics'):
        meta_test_saved_run(cpo_run, critics='saved')
    with pytest.raises(ValueError, match="'fresh' or 'saved'"):
        meta_test_saved_run(cpo_run, critics='trained')


@pytest.mark.parametrize(('module', 'command'), [('meta_test', 'omnisafe-metacpo-meta-test'),
                                                 ('summary', 'omnisafe-metacpo-summary')])
def test_console_scripts_and_their_deprecated_module_aliases(module: str, command: str) -> None:
    script = subprocess.run([os.path.join(BIN, command), '--help'], capture_output=True,
                            text=True, timeout=300, check=False)
    assert script.returncode == 0, script.stderr[-3000:]
    assert f'usage: {command}' in script.stdout and 'Warning' not in script.stderr
    alias = subprocess.run([sys.executable, '-m', f'omnisafe_metacpo.{module}', '--help'],
                           capture_output=True, text=True, timeout=300, check=False)
    assert alias.returncode == 0, alias.stderr[-3000:]
    assert alias.stdout == script.stdout
    assert 'DeprecationWarning' in alias.stderr and command in alias.stderr
    assert 'RuntimeWarning' not in alias.stderr


@pytest.mark.parametrize('module', [saved_run, summary])
def test_every_option_has_help(module) -> None:
    actions = module.parser()._actions  # pylint: disable=protected-access
    assert len(actions) > 5 and all(action.help for action in actions)


def test_deterministic_evaluation_leaves_the_adaptation_unchanged(cpo_run: str) -> None:
    overrides = {'num_tasks': 2, 'adapt_steps': 2, 'rollout_steps': 500}
    without = saved_run.meta_test_saved_run(cpo_run, overrides={**overrides, 'eval_episodes': 0})
    evaluated = saved_run.meta_test_saved_run(cpo_run, overrides={**overrides,
                                                                  'eval_episodes': 1})
    assert not any(key.startswith('MetaTest/Eval/') for key in without)
    adaptation = {key: value for key, value in evaluated.items()
                  if not key.startswith('MetaTest/Eval/')}
    assert adaptation == without  # the same adaptation numbers, bit for bit, with the evaluation
    for k in range(3):
        for name in ('EpRet', 'EpCost', 'EpDiscCost'):
            assert f'MetaTest/Eval/{name}/step_{k}' in evaluated
        # J_C <= the undiscounted cost of the same evaluated episodes
        assert evaluated[f'MetaTest/Eval/EpDiscCost/step_{k}'] <= \
            evaluated[f'MetaTest/Eval/EpCost/step_{k}'] + 1e-9
    # the mean action is not the adaptation rollouts' noisy one: other returns
    assert evaluated['MetaTest/Eval/EpRet/step_0'] != evaluated['MetaTest/EpRet/step_0']


def test_returns_cost_advantages_change_the_steps_not_the_step_0_rollout(run_dir: str) -> None:
    # an untrained Car leaves the circle within its first rollout: the cost gradient is not 0
    custom = tiny_meta_cfgs()
    custom['logger_cfgs']['log_dir'] = run_dir
    agent = omnisafe.Agent('MetaCPO', 'MetaCarCircleHazard-v0', custom_cfgs=custom)
    agent.learn()
    run = agent.agent.logger.log_dir
    overrides = {'num_tasks': 1, 'adapt_steps': 1, 'rollout_steps': 500, 'eval_episodes': 0}
    fresh = saved_run.meta_test_saved_run(run, overrides=overrides)
    returns = saved_run.meta_test_saved_run(run, overrides={**overrides,
                                                            'cost_advantages': 'returns'})
    # the same task and the same first rollout, with cost; the adaptation step differs
    assert returns['MetaTest/EpRet/step_0'] == fresh['MetaTest/EpRet/step_0']
    assert fresh['MetaTest/EpCost/step_0'] > 0
    assert returns['MetaTest/EpRet/step_1'] != fresh['MetaTest/EpRet/step_1']
    args = saved_run.parser().parse_args([run, '--cost-advantages', 'returns'])
    assert saved_run.overrides_from(args) == {'cost_advantages': 'returns'}
    with pytest.raises(ValueError, match="critics = 'fresh' only"):
        saved_run.meta_test_saved_run(run, overrides={'cost_advantages': 'returns'},
                                      critics='saved')
