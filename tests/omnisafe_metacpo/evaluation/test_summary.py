"""`make train` end to end (a tiny budget) and the run summary it prints."""

from __future__ import annotations

import glob
import json
import os
import shlex
import subprocess
import sys

from tests.conftest import REPO

_TINY_TRAIN = ('--custom-cfgs algo_cfgs:num_tasks --custom-cfgs 2 '
               '--custom-cfgs algo_cfgs:inner_steps --custom-cfgs 1 '
               '--custom-cfgs algo_cfgs:update_iters --custom-cfgs 1 '
               '--custom-cfgs meta_test_cfgs:freq --custom-cfgs 0 '
               '--custom-cfgs logger_cfgs:use_tensorboard --custom-cfgs False')


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    # The venv running this test (.venv, or .venv-pyX.Y under `make test-python`); -o: never
    # (re)install from a test, whatever the stamp says.
    venv = sys.prefix
    return subprocess.run(['make', '-s', f'VENV={venv}', '-o', f'{venv}/.installed', *args],
                          cwd=REPO, capture_output=True, text=True, timeout=900, check=False)


def test_make_train_trains_then_summarises(run_dir: str) -> None:
    result = _make('train', 'QUICK_TOTAL_STEPS=800', 'QUICK_STEPS_PER_EPOCH=400',
                   f'TRAIN_LOG_ROOT={run_dir}', f'TRAIN_ARGS={_TINY_TRAIN}',
                   'SUMMARY_ARGS=--num-tasks 1 --adapt-steps 1 --rollout-steps 100')
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run,) = glob.glob(os.path.join(run_dir, '*', 'train', 'MetaCPO-*', 'seed-*'))
    with open(os.path.join(run, 'config.json'), encoding='utf-8') as file:
        assert json.load(file)['train_cfgs']['total_steps'] == 800  # the quick budget's variable
    with open(os.path.join(run, 'summary.json'), encoding='utf-8') as file:
        summary = json.load(file)
    assert summary['epochs'] == [0, 2] and summary['adapt_steps'] == 1
    assert summary['cost_limit'] == 10.0
    for policy in ('untrained', 'final'):
        assert set(summary[policy]) == {
            f'{prefix}/{name}/step_{k}' for prefix in ('MetaTest', 'MetaTest/Eval')
            for name in ('EpRet', 'EpCost', 'EpDiscCost') for k in (0, 1)}
    out = result.stdout
    assert run in out
    assert 'untrained (epoch 0)' in out and 'final (epoch 2)' in out
    assert 'cost limit 10' in out
    # (narrow consoles abbreviate the column headers; the caption says what they are)
    assert 'after 1: after 1 CPO adaptation steps on each task' in out
    assert 'evaluation' in out and 'adaptation' in out  # both kinds of rollouts
    # The printed plot command works and draws the run's curves.
    (command,) = [line.strip() for line in out.splitlines() if line.strip().endswith('--plot')]
    plotted = subprocess.run(shlex.split(command), cwd=REPO, capture_output=True, text=True,
                             timeout=300, check=False)
    assert plotted.returncode == 0, plotted.stderr[-3000:]
    assert os.path.isfile(os.path.join(run, 'training_curves.png'))


def test_make_train_paper_budget_trains_the_paper_preset(run_dir: str) -> None:
    # The paper's budget itself is hours; typed options (TRAIN_ARGS) still win, as in the CLI.
    result = _make('train', 'BUDGET=paper', f'TRAIN_LOG_ROOT={run_dir}',
                   'TRAIN_ARGS=--total-steps 800 --custom-cfgs algo_cfgs:steps_per_epoch '
                   f'--custom-cfgs 400 {_TINY_TRAIN}',
                   'SUMMARY_ARGS=--num-tasks 1 --adapt-steps 1 --rollout-steps 100')
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert 'MetaCPOPaper on SafetyPointCircle1-v0, budget paper' in result.stdout
    (run,) = glob.glob(os.path.join(run_dir, '*', 'train', 'MetaCPOPaper-*', 'seed-*'))
    with open(os.path.join(run, 'config.json'), encoding='utf-8') as file:
        assert json.load(file)['algo_cfgs']['kl_bound'] is None


def test_make_train_refuses_an_unknown_budget() -> None:
    result = _make('train', 'BUDGET=huge')
    assert result.returncode != 0
    assert "BUDGET must be quick or paper, not 'huge'" in result.stderr


def test_stock_run_is_summarised_with_adaptation(cpo_run: str) -> None:
    from omnisafe_metacpo.evaluation.summary import summarize
    from omnisafe_metacpo.run_files import find_run

    # Found from the log dir above it, as `make train` passes its --log-dir.
    assert find_run(os.path.dirname(os.path.dirname(cpo_run))) == cpo_run
    summary = summarize(cpo_run, {'num_tasks': 1, 'rollout_steps': 100, 'adapt_steps': 1})
    assert summary['algo'] == 'CPO' and summary['adapt_steps'] == 1
    assert set(summary['final']) >= {'MetaTest/EpRet/step_0', 'MetaTest/EpCost/step_1'}
