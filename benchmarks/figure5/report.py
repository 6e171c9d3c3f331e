"""The report of a budget: plots and tables from every finished run and cached meta-test.

Written from the whole budget whatever a call trained (a budget is often run in several calls,
``--envs`` / ``--algos`` a part each): ``<env>.png`` and ``<env>_adaptation.png`` per env
(:mod:`benchmarks.figure5.figures`), ``meta_test.csv`` / ``.md``
(:mod:`benchmarks.figure5.tables`), ``verdict.csv`` / ``.md`` (:mod:`benchmarks.figure5.verdict`)
and ``training.csv`` / ``.md`` (:mod:`benchmarks.figure5.diagnostics`). It reads the runs and
writes nothing there, so it can report on runs another process is still adding to.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from benchmarks.figure5 import carried, diagnostics, figures, results, tables, verdict
from benchmarks.figure5.budget import Budget

NOTE = ('Meta-test of the final checkpoints, budget `{name}`: mean ± standard error over seeds of '
        'the return and cost per episode on the same unseen test tasks, after `adapt_step` '
        'adaptation steps (CPO steps for Meta-CPO and the CPO variants, TRPO steps for Meta-TRPO '
        'and TRPO; advantages from fresh critics fitted on each test rollout). Two cost scales: '
        "OmniSafe's undiscounted cost per episode and the paper's discounted J_C "
        '(sum_t 0.99^t c_t per episode); two modes: the stochastic rollouts the adaptation steps '
        'are computed from, and the deterministic evaluation (mean action, separate seeds) when '
        "the budget has one. `CPO` is OmniSafe 0.5.0's CPO, with the sign defect of its dual "
        'solution; `CPOCorrected` is the same with the sign corrected. `meta_test.csv` has the '
        'same numbers, one row per env, variant, mode and step.')


def write_report(budget: Budget, runs_dir: str, results_dir: str,
                 log: Callable[[str], None] = print) -> list[str]:
    """Write the plots and tables of every finished run of ``budget``; returns the paths.

    Args:
        budget: The whole budget (not a selection of it: the report covers all its runs).
        runs_dir: Root of the grid directories (only read).
        results_dir: Where the PNGs and tables go (created if missing).
        log: Where the lines saying what was written go.
    """
    jobs = budget.jobs(runs_dir, write=False)
    done = results.finished(jobs)
    env_ids, variants, algo_of = budget.env_ids(), budget.variants(), budget.algo_of()
    training = results.training_curves(jobs)
    meta_test = results.meta_test_results(budget, jobs)
    entries = verdict.plan(jobs, done)
    missing = carried.absent(entries)
    os.makedirs(results_dir, exist_ok=True)
    stems = {name: os.path.join(results_dir, name) for name in ('meta_test', 'verdict', 'training')}
    table, carried_rows = carried.carry(
        tables.table(meta_test, env_ids, variants),
        carried.previous(stems['meta_test'] + '.csv', tables.COLUMNS), missing)
    table = tables.ordered(table, env_ids, variants)
    entries = carried.mark_finished(entries, table, carried_rows)
    diagnosed, _ = carried.carry(
        diagnostics.table(diagnostics.per_run(done)),
        carried.previous(stems['training'] + '.csv', diagnostics.COLUMNS), missing)
    carried_note = carried.note(carried_rows, figures.label)
    written = []
    for env_id in env_ids:
        settings = budget.meta_test_cfgs(env_id)
        env_variants = list(dict.fromkeys(job.variant for job in jobs if job.env_id == env_id))
        path = os.path.join(results_dir, f'{env_id}.png')
        if any(env == env_id for env, _ in carried_rows) and os.path.exists(path):
            # Its carried variants' training curves are gone with their runs: a new plot would
            # drop them, so the previous one stays.
            log(f'[figure5 {budget.name}] {path} kept: variants carried over on {env_id}')
        else:
            figures.plot_env(env_id, env_variants, algo_of, training, meta_test,
                             results.training_cost_limit(jobs, env_id), settings['cost_limit'],
                             settings['adapt_steps'], path)
            written.append(path)
        path = os.path.join(results_dir, f'{env_id}_adaptation.png')
        if figures.plot_adaptation(env_id, env_variants, table, settings['cost_limit'],
                                   settings['adapt_steps'], path):
            written.append(path)
    notes = [NOTE.format(name=budget.name), carried_note]
    stem = stems['meta_test']
    tables.write(table, stem + '.csv', stem + '.md', '\n\n'.join(filter(None, notes)))
    written += [stem + '.csv', stem + '.md']
    judged = verdict.verdict(table, entries,
                             {env_id: budget.meta_test_cfgs(env_id) for env_id in env_ids})
    stem = stems['verdict']
    verdict.write(judged, stem + '.csv', stem + '.md', carried_note)
    written += [stem + '.csv', stem + '.md']
    stem = stems['training']
    diagnostics.write(diagnostics.ordered(diagnosed, env_ids, variants), stem + '.csv',
                      stem + '.md', budget.name, carried_note)
    written += [stem + '.csv', stem + '.md']
    final = meta_test[meta_test['final'].astype(bool)]
    tested = final.groupby(['env_id', 'variant', 'seed']).ngroups if len(final) else 0
    log(f'[figure5 {budget.name}] report of {len(done)}/{len(jobs)} finished runs, {tested} '
        f'with their final checkpoint meta-tested'
        + (f', {len(carried_rows)} variant{"s" if len(carried_rows) != 1 else ""} carried over '
           'from the previous report'
           if carried_rows else '')
        + f': {len(written)} files in {results_dir}')
    return written
