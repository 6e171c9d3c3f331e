"""The Figure-5 comparison: budgets, resumption, caching, and the whole pipeline on a tiny grid."""

from __future__ import annotations

import csv
import glob
import json
import os
import subprocess
import sys

import pytest
import torch

from benchmarks.figure5 import evaluation, runs, tables
from benchmarks.figure5.budget import Budget, Job, budget_path
from benchmarks.figure5.figures import LABELS
from tests.conftest import REPO

ALGOS = {'MetaCPO', 'MetaTRPO', 'CPO', 'CPOCorrected', 'TRPO'}
ENVS = ['MetaPointCircle-v0', 'MetaCarCircleHazard-v0', 'MetaPointButton-v0']


@pytest.mark.parametrize('name', ['quick', 'paper'])
def test_budgets_compare_alike(name: str, run_dir: str) -> None:
    budget = Budget(budget_path(name))
    jobs = budget.jobs(run_dir, write=False)
    assert not os.listdir(run_dir)  # write=False: nothing on disk
    assert len(jobs) == 45
    assert {job.algo for job in jobs} == ALGOS and budget.env_ids() == ENVS
    for env_id in ENVS:
        mine = [job for job in jobs if job.env_id == env_id]
        assert {(job.algo, job.seed) for job in mine} == {(a, s) for a in ALGOS for s in range(3)}
        # Equal environment steps and checkpoints per algorithm, the paper's policy for all.
        assert len({job.total_steps for job in mine}) == 1
        assert len({tuple(job.checkpoints) for job in mine}) == 1
        assert {tuple(job.custom_cfgs['model_cfgs']['actor']['hidden_sizes'])
                for job in mine} == {(32, 16)}
        for job in mine:
            limit = job.custom_cfgs['algo_cfgs'].get('cost_limit')
            assert limit == (None if job.algo == 'TRPO' else 10.0)
            if job.algo.startswith('Meta'):
                assert job.custom_cfgs['algo_cfgs']['num_tasks'] == 5
                assert job.custom_cfgs['algo_cfgs']['inner_steps'] == 5
        settings = budget.meta_test_cfgs(env_id)
        assert settings['cost_limit'] == (5.0 if env_id == 'MetaCarCircleHazard-v0' else 10.0)
        assert settings['adapt_steps'] == 5
    if name == 'paper':
        per_epoch = {job.env_id: job.steps_per_epoch for job in jobs}
        assert per_epoch == {'MetaPointCircle-v0': 30000, 'MetaCarCircleHazard-v0': 30000,
                             'MetaPointButton-v0': 60000}


def _fake_run(root: str, epochs: int, rows: int, saved: list[int]) -> tuple[Job, str]:
    job = Job('grid', root, {'algo': 'CPO', 'env_id': 'MetaPointCircle-v0', 'seed': 1},
              epochs, 100, 1)
    run = os.path.join(root, 'CPO-{MetaPointCircle-v0}', 'seed-001-2026-01-01-00-00-00')
    os.makedirs(os.path.join(run, 'torch_save'))
    with open(os.path.join(run, 'config.json'), 'w', encoding='utf-8') as file:
        json.dump({'train_cfgs': {'epochs': epochs}}, file)
    with open(os.path.join(run, 'progress.csv'), 'w', encoding='utf-8') as file:
        file.write('Metrics/EpRet\n' + '1.0\n' * rows)
    for epoch in saved:
        torch.save({}, os.path.join(run, 'torch_save', f'epoch-{epoch}.pt'))
    return job, run


def test_a_run_is_finished_when_its_last_epoch_is_logged_and_saved(run_dir: str) -> None:
    job, run = _fake_run(run_dir, epochs=2, rows=2, saved=[0, 1, 2])
    assert runs.is_finished(run) and runs.finished_run(job) == run
    assert runs.remove_unfinished(job) == [] and os.path.isdir(run)
    os.remove(os.path.join(run, 'torch_save', 'epoch-2.pt'))  # stopped before the last save
    assert not runs.is_finished(run) and runs.finished_run(job) is None
    assert runs.remove_unfinished(job) == [run] and not os.path.exists(run)


def test_a_run_stopped_between_row_and_save_is_unfinished(run_dir: str) -> None:
    _, run = _fake_run(run_dir, epochs=3, rows=2, saved=[0, 3])
    assert not runs.is_finished(run)


def test_cached_meta_test_is_reused_only_with_the_same_settings(run_dir: str) -> None:
    settings = {'num_tasks': 3, 'adapt_steps': 5, 'rollout_steps': 1000, 'cost_limit': 5.0}
    path = evaluation.cache_path(run_dir, 4)
    os.makedirs(os.path.dirname(path))
    with open(path, 'w', encoding='utf-8') as file:
        json.dump({'settings': evaluation.cache_key(settings), 'results': {}}, file)
    assert evaluation.cached(run_dir, 4, settings) is not None
    assert evaluation.cached(run_dir, 4, {**settings, 'cost_limit': 10.0}) is None
    assert evaluation.cached(run_dir, 5, settings) is None
    with open(path, 'w', encoding='utf-8') as file:
        file.write('{"settings": ')  # cut short by a stop
    assert evaluation.cached(run_dir, 4, settings) is None


def _figure5(run_dir: str, budget: str) -> subprocess.CompletedProcess:
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
    result = subprocess.run(
        [sys.executable, '-m', 'benchmarks.figure5', '--budget', budget,
         '--runs-dir', os.path.join(run_dir, 'runs'),
         '--results-dir', os.path.join(run_dir, 'results'), '--report-every', '30'],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _mtimes(pattern: str) -> dict[str, float]:
    return {path: os.path.getmtime(path) for path in glob.glob(pattern, recursive=True)}


def test_tiny_comparison_end_to_end_then_resumed(run_dir: str) -> None:
    """Grid -> every algorithm meta-tested with adaptation -> plots and tables; then a second
    invocation trains only the run it finds unfinished and redoes only the missing meta-test."""
    budget = budget_path('tiny')
    first = _figure5(run_dir, budget)
    assert '15 runs: 0 finished (reused), 15 to train' in first.stdout
    results = os.path.join(run_dir, 'results')
    for env_id in ENVS:
        assert os.path.getsize(os.path.join(results, f'{env_id}.png')) > 20000
    with open(os.path.join(results, 'meta_test.csv'), encoding='utf-8') as file:
        rows = list(csv.DictReader(file))
    with open(os.path.join(results, 'meta_test.csv'), encoding='utf-8') as file:
        assert file.readline().strip().split(',') == tables.COLUMNS
    # Every env x algorithm, adaptation steps 0..K (K = 1 in the tiny budget), test-time h.
    assert {(r['env_id'], r['algo'], r['adapt_step']) for r in rows} == {
        (env, algo, str(k)) for env in ENVS for algo in ALGOS for k in (0, 1)}
    assert {r['cost_limit'] for r in rows if r['env_id'] == 'MetaCarCircleHazard-v0'} == {'5.0'}
    assert all(r['seeds'] == '1' for r in rows)
    with open(os.path.join(results, 'meta_test.md'), encoding='utf-8') as file:
        markdown = file.read()
    assert all(LABELS[algo] in markdown for algo in ALGOS)
    assert all(env in markdown for env in ENVS)
    root = os.path.join(run_dir, 'runs')
    caches = _mtimes(os.path.join(root, '**', 'meta_test', 'epoch-*.json'))
    assert len(caches) == 15 * 2  # every run: the initial and the final checkpoint

    # A run stopped before its last save, and a lost meta-test cache.
    (cpo_run,) = glob.glob(os.path.join(root, 'point_circle_cpo', '*', 'CPO-*', 'seed-*'))
    os.remove(os.path.join(cpo_run, 'torch_save', 'epoch-1.pt'))
    (lost,) = glob.glob(os.path.join(root, 'point_button_trpo', '**', 'meta_test',
                                     'epoch-0.json'), recursive=True)
    os.remove(lost)
    progress = _mtimes(os.path.join(root, '**', 'progress.csv'))
    second = _figure5(run_dir, budget)
    assert '15 runs: 14 finished (reused), 1 to train' in second.stdout
    assert 'meta-tests run 3, reused 27' in second.stdout  # the new run's 2 and the lost one
    assert not os.path.exists(cpo_run)  # the unfinished run was removed and trained again
    after = _mtimes(os.path.join(root, '**', 'progress.csv'))
    assert {path: t for path, t in after.items() if path in progress} == {
        path: t for path, t in progress.items() if not path.startswith(cpo_run)}
    kept = _mtimes(os.path.join(root, '**', 'meta_test', 'epoch-*.json'))
    assert all(kept[path] == t for path, t in caches.items()
               if path != lost and not path.startswith(cpo_run))
