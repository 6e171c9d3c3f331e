"""The meta-test table: every algorithm after 0..K adaptation steps, final checkpoints.

``meta_test.csv`` has exactly the columns of :data:`COLUMNS`, one row per env, algorithm and
adaptation step of the runs' final checkpoints; ``meta_test.md`` is the same as Markdown.
"""

from __future__ import annotations

import math

import pandas as pd

from benchmarks.figure5.figures import label
from benchmarks.figure5.results import mean_se

COLUMNS = ['env_id', 'algo', 'adapt_step', 'return_mean', 'return_se', 'cost_mean', 'cost_se',
           'cost_limit', 'seeds']


def table(meta_test: pd.DataFrame, env_ids: list[str], algos: list[str]) -> pd.DataFrame:
    """Mean and standard error over seeds of the final checkpoints, in env and algo order."""
    final = meta_test[meta_test['final']]
    keys = ['env_id', 'algo', 'adapt_step']
    returns = mean_se(final, keys, 'return')
    costs = mean_se(final, keys, 'cost')
    limits = final.groupby(keys, sort=False)['cost_limit'].first().reset_index()
    out = returns.rename(columns={'mean': 'return_mean', 'se': 'return_se', 'count': 'seeds'})
    out = out.merge(costs.rename(columns={'mean': 'cost_mean', 'se': 'cost_se'})
                    .drop(columns='count'), on=keys)
    out = out.merge(limits, on=keys)
    out['env_order'] = out['env_id'].map({env: i for i, env in enumerate(env_ids)})
    out['algo_order'] = out['algo'].map({algo: i for i, algo in enumerate(algos)})
    out = out.sort_values(['env_order', 'algo_order', 'adapt_step'])
    return out[COLUMNS].reset_index(drop=True)


def _cell(value: float) -> str:
    return '–' if isinstance(value, float) and math.isnan(value) else f'{value:.2f}'


def markdown(frame: pd.DataFrame, note: str) -> str:
    """``frame`` as a Markdown table, algorithms by their labels, after ``note``."""
    lines = [note, '', '| ' + ' | '.join(COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
    for row in frame.itertuples(index=False):
        cells = [row.env_id, label(row.algo), str(row.adapt_step), _cell(row.return_mean),
                 _cell(row.return_se), _cell(row.cost_mean), _cell(row.cost_se),
                 f'{row.cost_limit:g}', str(row.seeds)]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def write(frame: pd.DataFrame, csv_path: str, md_path: str, note: str) -> None:
    """Write ``frame`` as CSV (exactly :data:`COLUMNS`) and as Markdown."""
    frame.to_csv(csv_path, index=False, columns=COLUMNS)
    with open(md_path, 'w', encoding='utf-8') as file:
        file.write(markdown(frame, note))
