"""Ablations in the Figure-5 harness: variants of an algorithm as labelled grids, their report, the
step-by-step report of their adaptation steps, and an interrupted Meta-CPO run going on."""

from __future__ import annotations

import csv
import glob
import os
import signal
import subprocess
import sys
import time

import pytest

from benchmarks.figure5 import steps
from benchmarks.figure5.budget import Budget, budget_path
from omnisafe_metacpo.cost_measures import COST_ADVANTAGES
from tests.conftest import REPO

#: A budget at a test's size: MetaCPO, one labelled variant of it and the reference algorithm.
TINY_ABLATION = """
name: tiny_ablation
meta_test:
  defaults: {num_tasks: 1, adapt_steps: 1, rollout_steps: 100, eval_episodes: 1}
common: &common
  seed: [0]
  env_id: [MetaPointCircle-v0]
  train_cfgs:total_steps: [TOTAL]
  train_cfgs:torch_threads: [1]
  algo_cfgs:steps_per_epoch: [PER_EPOCH]
  algo_cfgs:update_iters: [1]
  algo_cfgs:cost_limit: [10.0]
  logger_cfgs:use_tensorboard: [False]
  logger_cfgs:save_model_freq: [1]
  model_cfgs:actor:hidden_sizes: [!!python/tuple [8, 8]]
  model_cfgs:critic:hidden_sizes: [!!python/tuple [8, 8]]
meta: &meta
  <<: *common
  algo: [MetaCPO]
  algo_cfgs:num_tasks: [2]
  algo_cfgs:inner_steps: [1]
  meta_test_cfgs:freq: [0]
  algo_cfgs:env_workers: [0]
grids:
  metacpo: {<<: *meta}
  kl_bound: {<<: *meta, label: kl_bound_0.01, algo_cfgs:kl_bound: [0.01]}
  cpo_corrected: {<<: *common, algo: [CPOCorrected]}
"""


def _budget(run_dir: str, total: int = 1000, per_epoch: int = 1000,
            text: str = TINY_ABLATION) -> str:
    path = os.path.join(run_dir, 'budget.yaml')
    with open(path, 'w', encoding='utf-8') as file:
        file.write(text.replace('PER_EPOCH', str(per_epoch)).replace('TOTAL', str(total)))
    return path


def _figure5(budget: str, run_dir: str, *options: str) -> list[str]:
    return [sys.executable, '-m', 'benchmarks.figure5', '--budget', budget, '--runs-dir',
            os.path.join(run_dir, 'runs'), '--results-dir', os.path.join(run_dir, 'results'),
            *options]


def _run(command: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=timeout, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _csv(path: str) -> list[dict[str, str]]:
    with open(path, encoding='utf-8') as file:
        return list(csv.DictReader(file))


def _changes(base: dict, other: dict, prefix: str = '') -> dict[str, object]:
    """The keys (joined by ':') whose values differ between two nested configs."""
    out: dict[str, object] = {}
    for key in sorted(set(base) | set(other)):
        a, b = base.get(key), other.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(_changes(a, b, f'{prefix}{key}:'))
        elif a != b:
            out[f'{prefix}{key}'] = b
    return out


def test_the_car_ablation_changes_one_setting_of_metacpo_per_variant(run_dir: str) -> None:
    budget = Budget(budget_path('ablation_car'))
    jobs = budget.jobs(run_dir, write=False)
    assert budget.variants()[:2] == ['MetaCPO', 'CPOCorrected'] and len(budget.variants()) == 11
    assert {job.seed for job in jobs} == {0, 1, 2} and len(jobs) == 33
    base = next(job for job in jobs if job.variant == 'MetaCPO' and job.seed == 0)
    changes = {}
    for job in jobs:
        if job.seed == 0 and job.algo == 'MetaCPO' and job.label is not None:
            changes[job.label] = _changes(base.custom_cfgs, job.custom_cfgs)
            changes[job.label].pop('logger_cfgs:log_dir')
    assert changes['inner_delta_0.001'] == {'algo_cfgs:inner_delta': 0.001}
    assert changes['recover_h5'] == {'algo_cfgs:meta_over_limit': 'recover',
                                     'algo_cfgs:cost_limit': 5.0}
    assert all(len(change) in (1, 2) for change in changes.values())
    # A part by label, or by algorithm for the grids without a label.
    part = budget.select(None, ['CPOCorrected', 'kl_bound_0.01'])
    assert part.variants() == ['CPOCorrected', 'kl_bound_0.01']
    assert budget.select(None, ['MetaCPO']).variants() == ['MetaCPO']


def test_two_configurations_under_one_name_are_refused(run_dir: str) -> None:
    # The labelled variant without its label: two MetaCPO configurations on one env.
    unlabelled = _budget(run_dir, text=TINY_ABLATION.replace('label: kl_bound_0.01, ', ''))
    with pytest.raises(ValueError, match='2 configurations of MetaCPO on MetaPointCircle-v0'):
        Budget(unlabelled).jobs(run_dir, write=False)
    listed = _budget(run_dir, text=TINY_ABLATION.replace('label: kl_bound_0.01',
                                                         'label: [kl_bound_0.01]'))
    with pytest.raises(ValueError, match='is not a string'):
        Budget(listed)


def test_returns_as_cost_advantages_need_fresh_critics(run_dir: str) -> None:
    assert set(steps.ADVANTAGES) == set(COST_ADVANTAGES)  # every meta-test rule, described
    refused = subprocess.run(_figure5('tiny', run_dir, '--report-only', '--steps',
                                      '--steps-critics', 'saved', '--steps-cost-advantages',
                                      'returns'),
                             cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode == 2
    assert '--steps-cost-advantages returns replaces the fresh critics' in refused.stderr
    assert not os.path.exists(os.path.join(run_dir, 'results'))
    budget = Budget(budget_path('tiny'))
    with pytest.raises(ValueError, match="cost_advantages = 'gae': allowed fresh_critic or "
                                         'returns'):
        steps.write_steps(budget, run_dir, run_dir, cost_advantages='gae')
    with pytest.raises(ValueError, match="with critics = 'saved' leave it at fresh_critic"):
        steps.write_steps(budget, run_dir, run_dir, critics='saved', cost_advantages='returns')


@pytest.mark.slow  # about 2 minutes: three tiny runs, their meta-tests, then the traces
def test_an_ablation_trains_reports_and_traces_its_steps(run_dir: str) -> None:
    budget = _budget(run_dir)
    _run(_figure5(budget, run_dir))
    results = os.path.join(run_dir, 'results')
    rows = _csv(os.path.join(results, 'meta_test.csv'))
    assert {(r['variant'], r['algo']) for r in rows} == {
        ('MetaCPO', 'MetaCPO'), ('kl_bound_0.01', 'MetaCPO'), ('CPOCorrected', 'CPOCorrected')}
    with open(os.path.join(results, 'meta_test.md'), encoding='utf-8') as file:
        assert '| kl_bound_0.01 | 1 |' in file.read()
    # Inner-step diagnostics exist for Meta-CPO only.
    training = {r['variant']: r for r in _csv(os.path.join(results, 'training.csv'))}
    assert float(training['kl_bound_0.01']['inner_kl_mean']) > 0.0
    assert training['CPOCorrected']['inner_kl_mean'] == ''
    judged = [r for r in _csv(os.path.join(results, 'verdict.csv'))
              if r['variant'] == 'kl_bound_0.01']
    assert len(judged) == 4 and {r['reference'] for r in judged} == {'CPOCorrected'}

    # The step-by-step report repeats the cached meta-tests (it fails if they differ) with a
    # trace: one row per task and adaptation step, here 1 x 1 per run.
    traced = _run(_figure5(budget, run_dir, '--report-only', '--steps'))
    assert 'trained' not in traced.stdout
    steps = _csv(os.path.join(results, 'steps.csv'))
    assert [(r['variant'], r['step']) for r in steps] == [
        ('MetaCPO', '0'), ('kl_bound_0.01', '0'), ('CPOCorrected', '0')]
    assert all(r['group'] in ('no cost seen', 'cost seen, at most h', 'cost above h')
               for r in steps)
    with open(os.path.join(results, 'steps.md'), encoding='utf-8') as file:
        assert '| kl_bound_0.01 |' in file.read()
    # With the meta-learners' own critics: the stock run saves none and is left out.
    saved = _run(_figure5(budget, run_dir, '--report-only', '--steps', '--steps-critics',
                          'saved'))
    assert 'CPOCorrected/MetaPointCircle-v0/seed 0 left out' in saved.stdout
    assert [r['variant'] for r in _csv(os.path.join(results, 'steps_saved_critics.csv'))] == [
        'MetaCPO', 'kl_bound_0.01']
    # With returns-to-go as cost advantages: every run, the same tasks, its own files; the cached
    # meta-tests (fresh critics) are neither compared with nor overwritten.
    cache = glob.glob(os.path.join(run_dir, 'runs', '**', 'meta_test', '*.json'), recursive=True)
    before = {path: os.path.getmtime(path) for path in cache}
    _run(_figure5(budget, run_dir, '--report-only', '--steps', '--steps-cost-advantages',
                  'returns'))
    assert before and {path: os.path.getmtime(path) for path in cache} == before
    returns = _csv(os.path.join(results, 'steps_returns.csv'))
    assert [(r['variant'], r['task'], r['step']) for r in returns] == [
        (r['variant'], r['task'], r['step']) for r in steps]
    with open(os.path.join(results, 'steps_returns.md'), encoding='utf-8') as file:
        text = file.read()
    assert 'returns-to-go' in text and 'J_C evaluation, step 1' in text


@pytest.mark.slow  # about a minute: a Meta-CPO run stopped after its first epochs, then resumed
def test_an_interrupted_meta_cpo_run_goes_on_from_its_checkpoint(run_dir: str) -> None:
    budget = _budget(run_dir, total=40000, per_epoch=4000)
    command = _figure5(budget, run_dir, '--algos', 'MetaCPO', '--workers', '1')
    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    runs_dir = os.path.join(run_dir, 'runs', 'metacpo')
    found: list[str] = []
    deadline = time.time() + 600
    while time.time() < deadline and first.poll() is None and not found:
        found = [d for d, _, files in os.walk(runs_dir) if 'last.pt' in files]
        time.sleep(0.2)
    assert found, 'no checkpoint after the first meta-iteration'
    os.killpg(first.pid, signal.SIGKILL)  # the benchmark and its worker
    first.wait()
    run = os.path.dirname(found[0])
    with open(os.path.join(run, 'progress.csv'), encoding='utf-8') as file:
        assert sum(1 for _ in file) - 1 < 10, 'the run finished before it was stopped'
    result = _run(command)
    assert f'resuming {run}' in result.stdout
    assert '1 runs: 0 finished (reused), 1 to train' in result.stdout
    progress = [os.path.join(d, 'progress.csv') for d, _, files in os.walk(runs_dir)
                if 'progress.csv' in files]
    assert progress == [os.path.join(run, 'progress.csv')]  # the same run, not a new one
    with open(progress[0], encoding='utf-8') as file:
        epochs = [float(row['Train/Epoch']) for row in csv.DictReader(file)]
    assert epochs == [float(epoch) for epoch in range(10)]  # none lost or repeated
    assert os.path.isfile(os.path.join(run, 'meta_test', 'epoch-10.json'))
