"""The meta-test table: every algorithm after 0..K adaptation steps, final checkpoints.

``meta_test.csv`` has exactly the columns of :data:`COLUMNS`, one row per env, variant, mode and
adaptation step of the runs' final checkpoints:

* ``algo`` is the algorithm, ``variant`` what its runs go by (the grid's label, else ``algo``);
* ``mode`` is ``adapt`` (the stochastic rollouts the adaptation steps are computed from) or
  ``eval`` (the deterministic evaluation with the mean action, when the budget asks for it);
* ``cost_*`` is OmniSafe's undiscounted cost per episode, ``disc_cost_*`` the paper's discounted
  J_C (NaN for meta-tests of a version that did not report it);
* ``*_mean`` / ``*_se`` are the mean and standard error over seeds, ``seeds`` their number,
  ``cost_limit`` the test-time h.

``meta_test.md`` is the same numbers as Markdown, one table per environment and mode.
"""

from __future__ import annotations

import math

import pandas as pd

from benchmarks.figure5.figures import label
from benchmarks.figure5.results import MODES, mean_se

COLUMNS = ['env_id', 'algo', 'variant', 'mode', 'adapt_step', 'return_mean', 'return_se',
           'cost_mean', 'cost_se', 'disc_cost_mean', 'disc_cost_se', 'cost_limit', 'seeds']

#: How the modes are described in the Markdown.
MODE_TITLES = {
    'adapt': 'stochastic adaptation rollouts (the rollouts each adaptation step is computed from)',
    'eval': 'deterministic evaluation (mean action, separate seeds), as the paper\'s Figure 5',
}


def table(meta_test: pd.DataFrame, env_ids: list[str], variants: list[str]) -> pd.DataFrame:
    """Mean and standard error over seeds of the final checkpoints, in env and variant order.

    Args:
        meta_test: :func:`~benchmarks.figure5.results.meta_test_results`.
        env_ids: Env ids in table order.
        variants: Variants (labels or algorithms) in table order.
    """
    final = meta_test[meta_test['final'].astype(bool)]
    keys = ['env_id', 'algo', 'variant', 'mode', 'adapt_step']
    if final.empty:
        return pd.DataFrame(columns=COLUMNS)
    out = mean_se(final, keys, 'return').rename(
        columns={'mean': 'return_mean', 'se': 'return_se', 'count': 'seeds'})
    for value in ('cost', 'disc_cost'):
        stats = mean_se(final, keys, value).drop(columns='count')
        out = out.merge(stats.rename(columns={'mean': f'{value}_mean', 'se': f'{value}_se'}),
                        on=keys)
    limits = final.groupby(keys, sort=False)['cost_limit'].first().reset_index()
    return ordered(out.merge(limits, on=keys), env_ids, variants)


def ordered(frame: pd.DataFrame, env_ids: list[str], variants: list[str]) -> pd.DataFrame:
    """Rows of :data:`COLUMNS` in env, variant, mode and adaptation-step order."""
    out = frame
    order = {
        'env_order': out['env_id'].map({env: i for i, env in enumerate(env_ids)}),
        'variant_order': out['variant'].map({name: i for i, name in enumerate(variants)}),
        'mode_order': out['mode'].map({mode: i for i, mode in enumerate(MODES)}),
    }
    out = out.assign(**order).sort_values([*order, 'adapt_step'])
    return out[COLUMNS].reset_index(drop=True)


def cell(mean: float, se: float) -> str:
    """``mean ± se`` (``–`` for a missing mean; the mean alone for a single seed)."""
    if isinstance(mean, float) and math.isnan(mean):
        return '–'
    if isinstance(se, float) and math.isnan(se):
        return f'{mean:.2f}'
    return f'{mean:.2f} ± {se:.2f}'


def markdown(frame: pd.DataFrame, note: str) -> str:
    """``frame`` as Markdown after ``note``: one table per env and mode, variants by label."""
    lines = [note]
    for (env_id, mode), rows in frame.groupby(['env_id', 'mode'], sort=False):
        limit = rows['cost_limit'].iloc[0]
        lines += ['', f'### {env_id}: {MODE_TITLES.get(mode, mode)}, h = {limit:g}', '',
                  '| algorithm | adaptation steps | return | cost per episode | '
                  'discounted cost J_C | seeds |', '|---|---|---|---|---|---|']
        for row in rows.itertuples(index=False):
            lines.append(f'| {label(row.variant)} | {row.adapt_step} | '
                         f'{cell(row.return_mean, row.return_se)} | '
                         f'{cell(row.cost_mean, row.cost_se)} | '
                         f'{cell(row.disc_cost_mean, row.disc_cost_se)} | {row.seeds} |')
    return '\n'.join(lines) + '\n'


def write(frame: pd.DataFrame, csv_path: str, md_path: str, note: str) -> None:
    """Write ``frame`` as CSV (exactly :data:`COLUMNS`) and as Markdown."""
    frame.to_csv(csv_path, index=False, columns=COLUMNS)
    with open(md_path, 'w', encoding='utf-8') as file:
        file.write(markdown(frame, note))
