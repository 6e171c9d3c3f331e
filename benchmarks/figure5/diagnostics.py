"""Training diagnostics of the finished runs: ``training.csv`` / ``.md``.

Read from each run's ``progress.csv``, the mean of its last :data:`LAST_EPOCHS` epochs, then the
mean ± standard error over seeds per env and variant: the training cost on both scales (after
adaptation for the meta-learners), the meta-learners' cost before adaptation, the KL of their
inner steps, and the cost change per episode an inner step's own surrogate predicted on its
rollout against the one the next rollout measured. What a variant of an ablation changes shows
here before it shows in the meta-test. Columns a run does not log (the ``MetaTrain/`` ones of
stock algorithms, the discounted cost of older runs) are NaN.
"""

from __future__ import annotations

import math
import os

import pandas as pd

from benchmarks.figure5.budget import Job
from benchmarks.figure5.figures import label
from benchmarks.figure5.results import mean_se
from benchmarks.figure5.tables import cell

#: Epochs at the end of a run averaged (one epoch's rollouts are few episodes: noisy).
LAST_EPOCHS = 3
#: Table column -> ``progress.csv`` column.
MEASURES: dict[str, str] = {
    'train_cost': 'Metrics/EpCost',
    'train_disc_cost': 'Metrics/EpDiscCost',
    'train_return': 'Metrics/EpRet',
    'pre_adapt_cost': 'MetaTrain/PreAdapt/EpCost',
    'inner_kl': 'MetaTrain/Inner/KL',
    'inner_kl_max': 'MetaTrain/Inner/KLMax',
    'predicted_cost_change': 'MetaTrain/Inner/PredictedCostChange',
    'measured_cost_change': 'MetaTrain/Inner/MeasuredCostChange',
    'cost_change_error': 'MetaTrain/Inner/CostChangeError',
}
KEYS = ['env_id', 'variant', 'algo']
COLUMNS = [*KEYS, 'seeds', 'total_steps',
           *[f'{name}_{stat}' for name in MEASURES for stat in ('mean', 'se')]]


def per_run(finished: list[tuple[Job, str]]) -> pd.DataFrame:
    """One row per finished run: its env, variant, seed and the last epochs' means."""
    rows = []
    for job, run_dir in finished:
        progress = pd.read_csv(os.path.join(run_dir, 'progress.csv')).tail(LAST_EPOCHS)
        row = {'env_id': job.env_id, 'variant': job.variant, 'algo': job.algo,
               'seed': job.seed, 'total_steps': job.total_steps}
        for name, column in MEASURES.items():
            row[name] = float(progress[column].mean()) if column in progress else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=[*KEYS, 'seed', 'total_steps', *MEASURES])


def table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard error over seeds per env and variant (:data:`COLUMNS`)."""
    if runs.empty:
        return pd.DataFrame(columns=COLUMNS)
    out = runs.groupby(KEYS, sort=False).agg(
        seeds=('seed', 'count'), total_steps=('total_steps', 'first')).reset_index()
    for name in MEASURES:
        stats = mean_se(runs, KEYS, name).drop(columns='count')
        out = out.merge(stats.rename(columns={'mean': f'{name}_mean', 'se': f'{name}_se'}),
                        on=KEYS)
    return out[COLUMNS]


#: The columns of the Markdown (all are in the CSV).
SHOWN = {'train_cost': 'training cost per episode', 'train_disc_cost': 'training J_C',
         'pre_adapt_cost': 'cost before adaptation', 'inner_kl': 'KL of an inner step',
         'predicted_cost_change': 'predicted inner cost change',
         'measured_cost_change': 'measured inner cost change'}


def ordered(frame: pd.DataFrame, env_ids: list[str], variants: list[str]) -> pd.DataFrame:
    """Rows in env and variant order."""
    order = {'env_order': frame['env_id'].map({env: i for i, env in enumerate(env_ids)}),
             'variant_order': frame['variant'].map({v: i for i, v in enumerate(variants)})}
    return frame.assign(**order).sort_values(list(order))[COLUMNS].reset_index(drop=True)


def write(frame: pd.DataFrame, csv_path: str, md_path: str, budget_name: str,
          extra: str = '') -> None:
    """Write ``frame`` as CSV (:data:`COLUMNS`) and as Markdown (``extra`` below the note)."""
    frame.to_csv(csv_path, index=False, columns=COLUMNS)
    lines = [f'Training diagnostics of budget `{budget_name}`: each run\'s mean over its last '
             f'{LAST_EPOCHS} epochs, then mean ± standard error over seeds. The training cost '
             'is after adaptation for the meta-learners (their post-adaptation rollouts on the '
             'training tasks); the inner columns are the meta-learners\' (a step\'s predicted '
             'cost change is its surrogate\'s on its own rollout, the measured one the next '
             'rollout\'s), costs per episode.', *(['', extra] if extra else []), '',
             '| env | variant | seeds | ' + ' | '.join(SHOWN.values()) + ' |',
             '|---|---|---|' + '---|' * len(SHOWN)]
    for row in frame.to_dict('records'):
        cells = [cell(row[f'{name}_mean'], row[f'{name}_se']) for name in SHOWN]
        lines.append(f'| {row["env_id"]} | {label(row["variant"])} | {row["seeds"]} | '
                     + ' | '.join(cells) + ' |')
    with open(md_path, 'w', encoding='utf-8') as file:
        file.write('\n'.join(lines) + '\n')
