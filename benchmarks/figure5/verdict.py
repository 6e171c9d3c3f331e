"""The verdict on the paper's claim, per environment and cost scale: ``verdict.csv`` / ``.md``.

The claim (Cho & Sun, Figure 5): after a few adaptation steps on an unseen task, Meta-CPO's cost
stays at or below h while its return is at least that of the constrained baseline. It is judged
on each environment's final checkpoints (the table of :mod:`benchmarks.figure5.tables`) on

* the ``episode`` scale, mode ``adapt``: OmniSafe's undiscounted cost per episode of the
  stochastic rollouts the adaptation steps are computed from, as OmniSafe reports it;
* the ``discounted`` scale, mode ``eval``: the paper's discounted J_C of the deterministic
  evaluation (mean action), as the paper's Figure 5;

and, as cross-checks, on the two other pairings (``episode``/``eval``, ``discounted``/``adapt``).
With K the budget's adaptation steps and h the test-time cost limit, for each variant:

* ``cost_mean`` ± ``cost_se``: the mean and standard error over seeds of the cost after K steps;
* ``at_most_h_after_K``: ``cost_mean`` <= h;
* ``at_most_h_every_step``: the mean over seeds is <= h after every step k = 1..K (the policy
  before adaptation, k = 0, is not judged); ``worst_step`` / ``worst_cost_mean``: the step with
  the highest mean over seeds among 1..K;
* ``return_at_least_reference``: the mean return over seeds after K steps (same mode) >= that of
  the reference, ``CPOCorrected`` (OmniSafe's CPO with the sign of its dual corrected);
* ``passes``: both of ``at_most_h_every_step`` and ``return_at_least_reference``.

The judgement uses the means; the standard errors are there to say how far to trust it. Every
variant of the budget gets its rows, Meta-CPO's (``MetaCPO``, ``MetaCPOPaper``) and the others'
(CPO, TRPO, Meta-TRPO, ...) alike; one without finished runs says ``not run``, one whose final
checkpoints are not meta-tested yet ``not meta-tested``.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from benchmarks.figure5.budget import Job
from benchmarks.figure5.figures import label
from benchmarks.figure5.tables import cell

#: (scale, mode) pairs, the two the verdict is about first.
SCALES: list[tuple[str, str]] = [('episode', 'adapt'), ('discounted', 'eval'),
                                 ('episode', 'eval'), ('discounted', 'adapt')]
#: The table's columns of each scale.
SCALE_COLUMN = {'episode': 'cost', 'discounted': 'disc_cost'}
SCALE_TITLES = {
    ('episode', 'adapt'): "OmniSafe's scale: undiscounted cost per episode of the stochastic "
                          'adaptation rollouts',
    ('discounted', 'eval'): "The paper's Figure 5: discounted J_C of the deterministic "
                            'evaluation',
    ('episode', 'eval'): 'Cross-check: undiscounted cost per episode of the deterministic '
                         'evaluation',
    ('discounted', 'adapt'): 'Cross-check: discounted J_C of the stochastic adaptation rollouts',
}
#: The algorithms whose rows the claim is about, and the reference algorithm.
META_CPO = ('MetaCPO', 'MetaCPOPaper')
REFERENCE = 'CPOCorrected'

COLUMNS = ['env_id', 'variant', 'algo', 'scale', 'mode', 'cost_limit', 'adapt_steps', 'seeds',
           'seeds_planned', 'cost_before_mean', 'cost_before_se', 'cost_mean', 'cost_se',
           'worst_step', 'worst_cost_mean', 'at_most_h_after_K', 'at_most_h_every_step',
           'return_mean', 'return_se', 'reference', 'reference_return_mean',
           'return_at_least_reference', 'passes', 'verdict']


def plan(jobs: list[Job], finished: list[tuple[Job, str]]) -> pd.DataFrame:
    """Every (env id, variant) of the budget: its algorithm, runs planned and runs finished."""
    done = {(job.env_id, job.variant, job.seed) for job, _ in finished}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for job in jobs:
        row = rows.setdefault((job.env_id, job.variant), {
            'env_id': job.env_id, 'variant': job.variant, 'algo': job.algo,
            'seeds_planned': 0, 'runs_finished': 0})
        row['seeds_planned'] += 1
        row['runs_finished'] += (job.env_id, job.variant, job.seed) in done
    return pd.DataFrame(list(rows.values()),
                        columns=['env_id', 'variant', 'algo', 'seeds_planned', 'runs_finished'])


def _reference(entries: pd.DataFrame) -> str | None:
    """The variant of one env that the returns are compared with (CPOCorrected's)."""
    names = list(entries.loc[entries['algo'] == REFERENCE, 'variant'])
    if not names:
        return None
    return REFERENCE if REFERENCE in names else names[0]


def _judge(rows: pd.DataFrame, column: str, limit: float, adapt_steps: int) -> dict[str, Any]:
    """Cost and return of one variant's rows of one mode (adaptation steps 0..K)."""
    by_step = rows.set_index('adapt_step')
    final = by_step.loc[adapt_steps] if adapt_steps in by_step.index else None
    adapted = by_step.loc[[k for k in range(1, adapt_steps + 1) if k in by_step.index]]
    out: dict[str, Any] = {
        'seeds': int(by_step['seeds'].max()),
        'cost_before_mean': by_step[f'{column}_mean'].get(0, math.nan),
        'cost_before_se': by_step[f'{column}_se'].get(0, math.nan),
        'cost_mean': math.nan if final is None else float(final[f'{column}_mean']),
        'cost_se': math.nan if final is None else float(final[f'{column}_se']),
        'return_mean': math.nan if final is None else float(final['return_mean']),
        'return_se': math.nan if final is None else float(final['return_se']),
    }
    costs = adapted[f'{column}_mean']
    if final is None or math.isnan(out['cost_mean']) or costs.isna().any():
        return out
    out['worst_step'] = int(costs.idxmax()) if len(costs) else None
    out['worst_cost_mean'] = float(costs.max()) if len(costs) else math.nan
    out['at_most_h_after_K'] = bool(out['cost_mean'] <= limit)
    out['at_most_h_every_step'] = bool((costs <= limit).all())
    return out


def _steps(count: int) -> str:
    return f'{count} step{"s" if count != 1 else ""}'


def _words(row: dict[str, Any], limit: float, adapt_steps: int) -> str:
    """The verdict of a judged row in words."""
    if row['at_most_h_every_step']:
        cost = f'cost <= h = {limit:g} after every step 1..{adapt_steps}'
    elif row['at_most_h_after_K']:
        cost = (f'cost <= h = {limit:g} after {_steps(adapt_steps)}, above it after step '
                f'{row["worst_step"]}')
    else:
        cost = f'cost above h = {limit:g} after {_steps(adapt_steps)}'
    reference = row.get('reference')
    if reference is None:
        return f'{cost}; no {REFERENCE} to compare the return with'
    if reference == row['variant']:
        return cost
    better = row.get('return_at_least_reference')
    if better is None:
        return cost
    return f'{cost}; return {">=" if better else "below"} {label(reference)}\'s'


def verdict(table: pd.DataFrame, entries: pd.DataFrame,
            settings: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """The verdict rows (:data:`COLUMNS`) of every env, variant and (scale, mode) pair.

    Args:
        table: :func:`~benchmarks.figure5.tables.table` (final checkpoints).
        entries: :func:`plan` of the budget.
        settings: Each env's meta-test settings (``adapt_steps``, ``cost_limit``).
    """
    out = []
    for env_id, env_entries in entries.groupby('env_id', sort=False):
        adapt_steps = int(settings[env_id]['adapt_steps'])
        limit = float(settings[env_id]['cost_limit'])
        reference = _reference(env_entries)
        env_table = table[table['env_id'] == env_id]
        for scale, mode in SCALES:
            column = SCALE_COLUMN[scale]
            judged: dict[str, dict[str, Any]] = {}
            for entry in env_entries.itertuples(index=False):
                row: dict[str, Any] = {
                    'env_id': env_id, 'variant': entry.variant, 'algo': entry.algo,
                    'scale': scale, 'mode': mode, 'cost_limit': limit,
                    'adapt_steps': adapt_steps, 'seeds': 0,
                    'seeds_planned': int(entry.seeds_planned), 'reference': reference}
                mine = env_table[env_table['variant'] == entry.variant]
                rows = mine[mine['mode'] == mode]
                if entry.runs_finished == 0:
                    row['verdict'] = 'not run'
                elif mine.empty:
                    row['verdict'] = 'not meta-tested'
                elif rows.empty:
                    row['verdict'] = ('no deterministic evaluation (meta_test eval_episodes = 0)'
                                      if mode == 'eval' else 'no adaptation rollouts')
                else:
                    row.update(_judge(rows, column, limit, adapt_steps))
                    if 'at_most_h_after_K' not in row:
                        row['verdict'] = f'no {scale} cost in the meta-test (an older cache)'
                judged[entry.variant] = row
            reference_return = (judged[reference].get('return_mean', math.nan)
                                if reference is not None else math.nan)
            for row in judged.values():
                row['reference_return_mean'] = reference_return
                if 'verdict' in row:
                    out.append(row)
                    continue
                if reference is not None and reference != row['variant'] \
                        and not math.isnan(reference_return):
                    row['return_at_least_reference'] = bool(
                        row['return_mean'] >= reference_return)
                    row['passes'] = bool(row['at_most_h_every_step']
                                         and row['return_at_least_reference'])
                row['verdict'] = _words(row, limit, adapt_steps)
                if reference is not None and reference != row['variant'] \
                        and math.isnan(reference_return):
                    row['verdict'] += (f'; no {label(reference)} results to compare the '
                                       'return with')
                out.append(row)
    return pd.DataFrame(out, columns=COLUMNS)


def _yes(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '–'
    return 'yes' if value else 'no'


NOTE = """Verdict on Figure 5's claim, per environment, on the final checkpoints: after K adaptation
steps on the unseen test tasks, does the cost stay at or below the test-time h, and is the return at
least that of CPOCorrected (OmniSafe's CPO with the sign of its dual corrected)? Costs and returns
are the mean ± standard error over seeds. **cost after K**: after the last adaptation step.
**<= h at every step**: the mean over seeds is <= h after each of the steps 1..K (k = 0, the policy
before adaptation, is not judged); **worst step**: the step of 1..K with the highest mean cost.
**return >= CPOCorrected**: the mean return after K steps (same rollouts) is at least
CPOCorrected's. **passes**: both. The judgement is on the means; the standard errors say how much
to trust it. Meta-CPO's rows (the claim's) are in bold; the others are reported alike."""


def markdown(frame: pd.DataFrame, note: str = NOTE) -> str:
    """``frame`` as Markdown: one table per (scale, mode), the paper's two first."""
    lines = [note]
    for scale, mode in SCALES:
        rows = frame[(frame['scale'] == scale) & (frame['mode'] == mode)]
        if rows.empty:
            continue
        lines += ['', f'### {SCALE_TITLES[(scale, mode)]}', '',
                  '| env (h) | algorithm | seeds | cost before adaptation | cost after K | '
                  'worst step: cost | <= h at every step | return after K | '
                  'return >= CPOCorrected | passes | verdict |',
                  '|---|---|---|---|---|---|---|---|---|---|---|']
        for row in rows.itertuples(index=False):
            name = label(row.variant)
            if row.algo in META_CPO:
                name = f'**{name}**'
            worst = ('–' if pd.isna(row.worst_step)
                     else f'{int(row.worst_step)}: {row.worst_cost_mean:.2f}')
            lines.append(
                f'| {row.env_id} ({row.cost_limit:g}) | {name} | {row.seeds}/{row.seeds_planned}'
                f' | {cell(row.cost_before_mean, row.cost_before_se)} | '
                f'{cell(row.cost_mean, row.cost_se)} | {worst} | '
                f'{_yes(row.at_most_h_every_step)} | {cell(row.return_mean, row.return_se)} | '
                f'{_yes(row.return_at_least_reference)} | {_yes(row.passes)} | {row.verdict} |')
    return '\n'.join(lines) + '\n'


def write(frame: pd.DataFrame, csv_path: str, md_path: str, extra: str = '') -> None:
    """Write ``frame`` as CSV (:data:`COLUMNS`) and as Markdown (``extra`` below the note)."""
    frame.to_csv(csv_path, index=False, columns=COLUMNS)
    with open(md_path, 'w', encoding='utf-8') as file:
        file.write(markdown(frame, NOTE + (f'\n\n{extra}' if extra else '')))
