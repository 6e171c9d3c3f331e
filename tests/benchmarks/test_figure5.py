"""The Figure-5 comparison: budgets, resumption, caching, tables on both cost scales, the verdict,
and the whole pipeline on a tiny grid, in parts and as a report of existing runs."""

from __future__ import annotations

import csv
import glob
import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import torch

from benchmarks.figure5 import carried, evaluation, results, runs, tables, verdict
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
    # Without labels, every run goes by its algorithm's name.
    assert budget.variants() == budget.algos() and all(job.variant == job.algo for job in jobs)


def test_the_540k_budget_adds_the_paper_preset_and_the_deterministic_evaluation(
        run_dir: str) -> None:
    budget = Budget(budget_path('540k'))
    jobs = budget.jobs(run_dir, write=False)
    assert len(jobs) == 63 and {job.algo for job in jobs} == ALGOS | {'MetaCPOPaper'}
    assert len({job.total_steps for job in jobs}) == 1
    # the labelled variant: MetaCPO with unbiased cost advantages, on every env
    measure = [job for job in jobs if job.variant == 'MetaCPO-measure-adv']
    assert len(measure) == 9 and {job.algo for job in measure} == {'MetaCPO'}
    assert {job.custom_cfgs['algo_cfgs']['cost_advantage'] for job in measure} == {'measure'}
    assert all('cost_advantage' not in job.custom_cfgs['algo_cfgs']
               for job in jobs if job.variant != 'MetaCPO-measure-adv')
    assert all(budget.meta_test_cfgs(env)['eval_episodes'] == 2 for env in ENVS)
    # A part of it: the meta-learners of one env, by algorithm.
    part = budget.select(['MetaCarCircleHazard-v0'], ['MetaCPO', 'MetaCPOPaper'])
    assert {(job.algo, job.env_id) for job in part.jobs(run_dir, write=False)} == {
        ('MetaCPO', 'MetaCarCircleHazard-v0'), ('MetaCPOPaper', 'MetaCarCircleHazard-v0')}
    assert set(budget.env_ids()) == set(ENVS)  # the selection is a copy
    with pytest.raises(SystemExit, match='MetaSAC'):
        budget.select(None, ['MetaSAC'])


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


def test_an_interrupted_run_with_a_resume_checkpoint_is_kept_to_go_on(run_dir: str) -> None:
    job, run = _fake_run(run_dir, epochs=3, rows=1, saved=[0])
    assert runs.resumable_run(job) is None  # a stock run: nothing to resume from
    os.makedirs(os.path.join(run, 'checkpoints'))
    torch.save({}, os.path.join(run, 'checkpoints', 'last.pt'))  # what MetaCPO writes
    assert runs.resumable_run(job) == run
    assert runs.remove_unfinished(job, keep=run) == [] and os.path.isdir(run)


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


def test_old_caches_give_adapt_rows_only_and_nan_discounted_costs() -> None:
    """Meta-tests cached before the deterministic evaluation or the discounted cost existed."""
    old = {f'MetaTest/{m}/step_{k}': float(k) for m in ('EpRet', 'EpCost') for k in range(3)}
    rows = results.record_rows(old, adapt_steps=2)
    assert [(r['mode'], r['adapt_step']) for r in rows] == [('adapt', 0), ('adapt', 1),
                                                            ('adapt', 2)]
    assert all(pd.isna(r['disc_cost']) for r in rows) and rows[2]['cost'] == 2.0
    new = {f'{prefix}/{m}/step_{k}': 10.0 * k + (prefix == 'MetaTest/Eval')
           for prefix in ('MetaTest', 'MetaTest/Eval')
           for m in ('EpRet', 'EpCost', 'EpDiscCost') for k in range(3)}
    rows = results.record_rows(new, adapt_steps=2)
    assert [(r['mode'], r['adapt_step']) for r in rows] == [
        (mode, k) for mode in ('adapt', 'eval') for k in range(3)]
    assert rows[5] == {'mode': 'eval', 'adapt_step': 2, 'return': 21.0, 'cost': 21.0,
                       'disc_cost': 21.0}


def _row(variant: str, algo: str, mode: str, costs: list[float], returns: list[float],
         disc: list[float] | None = None, seeds: int = 3) -> list[dict]:
    """Rows of meta_test.csv for one variant and mode (adaptation steps 0..K)."""
    disc = disc or [float('nan')] * len(costs)
    return [{'env_id': 'E', 'algo': algo, 'variant': variant, 'mode': mode, 'adapt_step': k,
             'return_mean': returns[k], 'return_se': 0.5, 'cost_mean': costs[k],
             'cost_se': 1.0, 'disc_cost_mean': disc[k], 'disc_cost_se': 0.1,
             'cost_limit': 5.0, 'seeds': seeds} for k in range(len(costs))]


def test_verdict_on_a_hand_made_table() -> None:
    """K = 2, h = 5: the cost after step K, at every step 1..K, and the return against
    CPOCorrected's, on both scales; variants not run, not meta-tested, without evaluation."""
    rows = (_row('MetaCPO', 'MetaCPO', 'adapt', [8, 4, 3], [0, 5, 10], [9, 2, 1])
            + _row('MetaCPO', 'MetaCPO', 'eval', [9, 9, 9], [0, 5, 10], [2, 6, 4])
            + _row('MetaCPOPaper', 'MetaCPOPaper', 'adapt', [1, 2, 7], [0, 5, 12])
            + _row('MetaCPOPaper', 'MetaCPOPaper', 'eval', [0, 0, 0], [0, 5, 12], [0, 1, 1])
            + _row('CPOCorrected', 'CPOCorrected', 'adapt', [0, 0, 0], [0, 5, 9], [0, 0, 0])
            + _row('CPOCorrected', 'CPOCorrected', 'eval', [0, 0, 0], [0, 5, 11], [0, 0, 0])
            + _row('TRPO', 'TRPO', 'adapt', [50, 60, 70], [0, 5, 20], [9, 9, 9], seeds=2))
    table = pd.DataFrame(rows, columns=tables.COLUMNS)
    entries = pd.DataFrame(
        [('E', name, name, 3, finished) for name, finished in (
            ('MetaCPO', 3), ('MetaCPOPaper', 3), ('MetaTRPO', 3), ('CPO', 0),
            ('CPOCorrected', 3), ('TRPO', 2))],
        columns=['env_id', 'variant', 'algo', 'seeds_planned', 'runs_finished'])
    frame = verdict.verdict(table, entries, {'E': {'adapt_steps': 2, 'cost_limit': 5.0}})
    assert list(frame.columns) == verdict.COLUMNS
    assert len(frame) == 6 * 4  # every variant on every (scale, mode)
    by = {(r['variant'], r['scale'], r['mode']): r for r in frame.to_dict('records')}

    # OmniSafe's scale: MetaCPO at most h after steps 1 and 2 (not judged at 0), return 10 >= 9.
    row = by[('MetaCPO', 'episode', 'adapt')]
    assert (row['cost_mean'], row['cost_se'], row['cost_before_mean']) == (3, 1.0, 8)
    assert row['at_most_h_after_K'] and row['at_most_h_every_step']
    assert (row['worst_step'], row['worst_cost_mean']) == (1, 4)
    assert row['return_at_least_reference'] and row['passes']
    assert row['reference'] == 'CPOCorrected' and row['reference_return_mean'] == 9
    # The paper's scale: at most h after step K = 2 but above it after step 1; return 10 < 11.
    row = by[('MetaCPO', 'discounted', 'eval')]
    assert row['at_most_h_after_K'] and not row['at_most_h_every_step']
    assert row['worst_step'] == 1 and not row['return_at_least_reference'] and not row['passes']
    assert 'above it after step 1' in row['verdict']
    row = by[('MetaCPOPaper', 'episode', 'adapt')]
    assert not row['at_most_h_after_K'] and row['return_at_least_reference'] and not row['passes']
    assert row['verdict'].startswith('cost above h = 5 after 2 steps')
    assert by[('MetaCPOPaper', 'discounted', 'eval')]['passes']
    # An old cache: no discounted cost of the adaptation rollouts.
    assert 'no discounted cost' in by[('MetaCPOPaper', 'discounted', 'adapt')]['verdict']
    # The reference is not compared with itself; TRPO's 2 of 3 seeds are said.
    row = by[('CPOCorrected', 'episode', 'adapt')]
    assert pd.isna(row['return_at_least_reference']) and pd.isna(row['passes'])
    row = by[('TRPO', 'episode', 'adapt')]
    assert (row['seeds'], row['seeds_planned']) == (2, 3) and not row['at_most_h_after_K']
    assert 'no deterministic evaluation' in by[('TRPO', 'discounted', 'eval')]['verdict']
    assert by[('MetaTRPO', 'episode', 'adapt')]['verdict'] == 'not meta-tested'
    assert by[('CPO', 'discounted', 'eval')]['verdict'] == 'not run'

    text = verdict.markdown(frame)
    assert text.index("OmniSafe's scale") < text.index("The paper's Figure 5")
    assert "| **Meta-CPO** | 3/3 | 8.00 ± 1.00 | 3.00 ± 1.00 | 1: 4.00 | yes |" in text
    assert '| TRPO | 2/3 |' in text and 'not run' in text


def test_verdict_plan_counts_planned_and_finished_runs(run_dir: str) -> None:
    job, run = _fake_run(run_dir, epochs=2, rows=2, saved=[0, 2])
    other = Job('grid', run_dir, {'algo': 'CPO', 'env_id': 'MetaPointCircle-v0', 'seed': 2},
                2, 100, 1)
    plan = verdict.plan([job, other], results.finished([job, other]))
    assert plan.to_dict('records') == [{'env_id': 'MetaPointCircle-v0', 'variant': 'CPO',
                                        'algo': 'CPO', 'seeds_planned': 2, 'runs_finished': 1}]
    assert results.finished([job, other]) == [(job, run)]


def _figure5(run_dir: str, budget: str, *options: str) -> subprocess.CompletedProcess:
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
    result = subprocess.run(
        [sys.executable, '-m', 'benchmarks.figure5', '--budget', budget,
         '--runs-dir', os.path.join(run_dir, 'runs'),
         '--results-dir', os.path.join(run_dir, 'results'), '--report-every', '30', *options],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _mtimes(pattern: str) -> dict[str, float]:
    return {path: os.path.getmtime(path) for path in glob.glob(pattern, recursive=True)}


def _csv(path: str) -> list[dict[str, str]]:
    with open(path, encoding='utf-8') as file:
        return list(csv.DictReader(file))


def test_tiny_comparison_in_parts_then_resumed_then_reported(run_dir: str) -> None:
    """The stock algorithms first, then the rest (each report covers all finished runs): every
    algorithm meta-tested with adaptation on both scales and modes -> plots and tables; a third
    call trains only the run it finds unfinished and redoes only the missing meta-test; a
    report of the existing runs trains and meta-tests nothing."""
    budget = budget_path('tiny')
    first = _figure5(run_dir, budget, '--algos', 'CPO', 'CPOCorrected', 'TRPO')
    assert '9 runs: 0 finished (reused), 9 to train' in first.stdout
    results_dir = os.path.join(run_dir, 'results')
    assert {r['algo'] for r in _csv(os.path.join(results_dir, 'meta_test.csv'))} == {
        'CPO', 'CPOCorrected', 'TRPO'}
    judged = _csv(os.path.join(results_dir, 'verdict.csv'))
    assert {r['verdict'] for r in judged if r['algo'] in ('MetaCPO', 'MetaTRPO')} == {'not run'}

    second = _figure5(run_dir, budget)
    assert '15 runs: 9 finished (reused), 6 to train' in second.stdout
    for env_id in ENVS:
        assert os.path.getsize(os.path.join(results_dir, f'{env_id}.png')) > 20000
        assert os.path.getsize(os.path.join(results_dir, f'{env_id}_adaptation.png')) > 20000
    rows = _csv(os.path.join(results_dir, 'meta_test.csv'))
    with open(os.path.join(results_dir, 'meta_test.csv'), encoding='utf-8') as file:
        assert file.readline().strip().split(',') == tables.COLUMNS
    # Every env x algorithm x mode, adaptation steps 0..K (K = 1 in the tiny budget, which
    # evaluates deterministically too), test-time h, both cost scales.
    assert {(r['env_id'], r['algo'], r['mode'], r['adapt_step']) for r in rows} == {
        (env, algo, mode, str(k)) for env in ENVS for algo in ALGOS
        for mode in ('adapt', 'eval') for k in (0, 1)}
    assert all(r['variant'] == r['algo'] for r in rows)
    assert {r['cost_limit'] for r in rows if r['env_id'] == 'MetaCarCircleHazard-v0'} == {'5.0'}
    assert all(r['seeds'] == '1' for r in rows)
    assert all(float(r['disc_cost_mean']) >= 0.0 and float(r['cost_mean']) >= 0.0 for r in rows)
    # A discounted cost is at most the undiscounted one of the same episodes.
    assert all(float(r['disc_cost_mean']) <= float(r['cost_mean']) + 1e-9
               for r in rows if r['mode'] == 'eval')
    with open(os.path.join(results_dir, 'meta_test.md'), encoding='utf-8') as file:
        markdown = file.read()
    assert all(LABELS[algo] in markdown for algo in ALGOS)
    assert all(env in markdown for env in ENVS) and 'deterministic evaluation' in markdown
    judged = _csv(os.path.join(results_dir, 'verdict.csv'))
    assert len(judged) == len(ENVS) * len(ALGOS) * len(verdict.SCALES)
    assert not any(r['verdict'] in ('not run', 'not meta-tested') for r in judged)
    assert {r['passes'] for r in judged if r['algo'] == 'MetaCPO'} <= {'True', 'False'}
    training = _csv(os.path.join(results_dir, 'training.csv'))
    assert {(r['env_id'], r['algo']) for r in training} == {(e, a) for e in ENVS for a in ALGOS}
    root = os.path.join(run_dir, 'runs')
    caches = _mtimes(os.path.join(root, '**', 'meta_test', 'epoch-*.json'))
    assert len(caches) == 15 * 2  # every run: the initial and the final checkpoint
    for path in caches:  # each names the CPU model it was computed on (rollouts differ across them)
        with open(path, encoding='utf-8') as file:
            assert json.load(file)['cpu'] == evaluation.cpu_model() != 'unknown CPU'

    # A run stopped before its last save, and a lost meta-test cache.
    (cpo_run,) = glob.glob(os.path.join(root, 'point_circle_cpo', '*', 'CPO-*', 'seed-*'))
    os.remove(os.path.join(cpo_run, 'torch_save', 'epoch-1.pt'))
    (lost,) = glob.glob(os.path.join(root, 'point_button_trpo', '**', 'meta_test',
                                     'epoch-0.json'), recursive=True)
    os.remove(lost)
    progress = _mtimes(os.path.join(root, '**', 'progress.csv'))
    third = _figure5(run_dir, budget)
    assert '15 runs: 14 finished (reused), 1 to train' in third.stdout
    assert 'meta-tests run 3, reused 27' in third.stdout  # the new run's 2 and the lost one
    assert not os.path.exists(cpo_run)  # the unfinished run was removed and trained again
    after = _mtimes(os.path.join(root, '**', 'progress.csv'))
    assert {path: t for path, t in after.items() if path in progress} == {
        path: t for path, t in progress.items() if not path.startswith(cpo_run)}
    kept = _mtimes(os.path.join(root, '**', 'meta_test', 'epoch-*.json'))
    assert all(kept[path] == t for path, t in caches.items()
               if path != lost and not path.startswith(cpo_run))

    # The report alone, from the runs as they are: the same table, nothing in the runs touched.
    with open(os.path.join(results_dir, 'meta_test.csv'), encoding='utf-8') as file:
        table = file.read()
    everything = _mtimes(os.path.join(root, '**', '*'))
    for name in os.listdir(results_dir):
        os.remove(os.path.join(results_dir, name))
    report = _figure5(run_dir, budget, '--report-only')
    assert 'trained' not in report.stdout and 'report of 15/15 finished runs' in report.stdout
    with open(os.path.join(results_dir, 'meta_test.csv'), encoding='utf-8') as file:
        assert file.read() == table
    assert _mtimes(os.path.join(root, '**', '*')) == everything
    assert os.path.exists(os.path.join(results_dir, 'verdict.md'))

    # The runs of a variant lost after their report (a new machine): the next report carries its
    # rows over unchanged and says so, instead of calling the variant "not run".
    def trpo(path: str) -> list[dict[str, str]]:
        return [r for r in _csv(path) if (r['env_id'], r['algo']) == ('MetaPointCircle-v0', 'TRPO')]

    before = {name: trpo(os.path.join(results_dir, f'{name}.csv'))
              for name in ('meta_test', 'training')}
    shutil.rmtree(os.path.join(root, 'point_circle_trpo'))
    lost_report = _figure5(run_dir, budget, '--report-only')
    assert 'report of 14/15 finished runs' in lost_report.stdout
    assert '1 variant carried over from the previous report' in lost_report.stdout
    for name, rows in before.items():
        assert rows and trpo(os.path.join(results_dir, f'{name}.csv')) == rows
    judged = trpo(os.path.join(results_dir, 'verdict.csv'))
    assert len(judged) == len(verdict.SCALES)
    assert {r['seeds'] for r in judged} == {'1'} and 'not run' not in {r['verdict'] for r in judged}
    for name in ('meta_test', 'verdict', 'training'):
        with open(os.path.join(results_dir, f'{name}.md'), encoding='utf-8') as file:
            assert 'Carried over from the previous report' in file.read()


def test_only_variants_without_runs_are_carried_over() -> None:
    """A variant with a finished run is recomputed from it, never mixed with carried rows."""
    old = pd.DataFrame(
        _row('MetaCPO', 'MetaCPO', 'adapt', [1, 2], [0, 3]) + _row('TRPO', 'TRPO', 'adapt',
                                                                   [5, 6], [0, 3]),
        columns=tables.COLUMNS)
    current = pd.DataFrame(_row('MetaCPO', 'MetaCPO', 'adapt', [7, 8], [0, 4]),
                           columns=tables.COLUMNS)
    entries = pd.DataFrame([('E', 'MetaCPO', 'MetaCPO', 3, 1), ('E', 'TRPO', 'TRPO', 3, 0),
                            ('E', 'CPO', 'CPO', 3, 0)],
                           columns=['env_id', 'variant', 'algo', 'seeds_planned',
                                    'runs_finished'])
    missing = carried.absent(entries)
    assert missing == {('E', 'TRPO'), ('E', 'CPO')}
    combined, moved = carried.carry(current, old, missing)
    assert moved == [('E', 'TRPO')]
    assert list(combined.loc[combined['variant'] == 'MetaCPO', 'cost_mean']) == [7, 8]
    assert list(combined.loc[combined['variant'] == 'TRPO', 'cost_mean']) == [5, 6]
    marked = carried.mark_finished(entries, combined, moved)
    assert list(marked['runs_finished']) == [1, 3, 0]
    assert 'E: TRPO' in carried.note(moved, lambda variant: variant)
    assert carried.note([], str) == ''
