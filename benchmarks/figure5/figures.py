"""Figure 5 of the paper, one PNG per environment: three rows of return and cost.

Rows (as in the paper): 1. the meta-learners in training, return and cost of the training tasks
after adaptation; 2. the other algorithms in training; 3. meta-test on unseen tasks after K
few-shot adaptation steps, for every algorithm, at its checkpoints along training. x: training
environment steps; lines: mean over seeds; bands: standard error; dashed: the cost limit (the
test-time one in row 3: 5 on Car-Circle-Hazard).

Drawn with matplotlib rather than OmniSafe's ``Plotter.make_plots``: that one makes a one-row
figure per set of runs from ``progress.csv`` alone and shades +-1 standard deviation
(``errorbar='sd'`` is fixed in ``Plotter.plot_data``), while the figure needs three rows, one of
them from the meta-test caches, and the standard error.
"""

from __future__ import annotations

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt
import pandas as pd

from benchmarks.figure5.results import mean_se
from omnisafe_metacpo.adaptation_rule import META_LEARNERS

#: Legend labels; OmniSafe 0.5.0's CPO is marked as the one with the sign defect of its dual.
LABELS: dict[str, str] = {
    'MetaCPO': 'Meta-CPO',
    'MetaCPOPaper': "Meta-CPO (paper's settings)",
    'MetaTRPO': 'Meta-TRPO',
    'CPO': "CPO (OmniSafe 0.5.0's, sign defect)",
    'CPOCorrected': 'CPO (sign corrected)',
    'TRPO': 'TRPO',
}

COLORS: dict[str, str] = {
    'MetaCPO': 'tab:red',
    'MetaCPOPaper': 'tab:purple',
    'MetaTRPO': 'tab:orange',
    'CPO': 'tab:gray',
    'CPOCorrected': 'tab:blue',
    'TRPO': 'tab:green',
}


def label(algo: str) -> str:
    """The legend label of ``algo``."""
    return LABELS.get(algo, algo)


def _curve(axis: plt.Axes, frame: pd.DataFrame, value: str, algo: str) -> None:
    # Epochs without a finished episode log NaN (OmniSafe's window of episodes is empty).
    stats = mean_se(frame.dropna(subset=[value]), ['steps'], value).sort_values('steps')
    if stats.empty:
        return
    seeds = int(stats['count'].max())
    color = COLORS.get(algo)
    axis.plot(stats['steps'], stats['mean'], color=color, marker='o', markersize=3,
              label=f'{label(algo)} ({seeds} seed{"s" if seeds > 1 else ""})')
    se = stats['se'].fillna(0.0)
    axis.fill_between(stats['steps'], stats['mean'] - se, stats['mean'] + se, color=color,
                      alpha=0.2, linewidth=0)


def plot_env(  # pylint: disable=too-many-arguments
    env_id: str,
    algos: list[str],
    training: pd.DataFrame,
    meta_test: pd.DataFrame,
    train_cost_limit: float | None,
    test_cost_limit: float,
    adapt_steps: int,
    path: str,
) -> None:
    """Write the three-row figure of ``env_id`` to ``path``.

    Args:
        env_id: The environment.
        algos: Algorithms in legend order.
        training: :func:`~benchmarks.figure5.results.training_curves`.
        meta_test: :func:`~benchmarks.figure5.results.meta_test_results`.
        train_cost_limit: h in training (dashed in rows 1-2; ``None``: no line).
        test_cost_limit: h at test time (dashed in row 3).
        adapt_steps: K; row 3 shows the results after K adaptation steps.
        path: The PNG to write.
    """
    rows = [
        ('meta-training (training tasks, after adaptation)',
         [a for a in algos if a in META_LEARNERS]),
        ('training (training tasks)', [a for a in algos if a not in META_LEARNERS]),
        (f'meta-test (unseen tasks, after {adapt_steps} adaptation steps)', list(algos)),
    ]
    figure, axes = plt.subplots(3, 2, figsize=(12, 11), squeeze=False)
    train = training[training['env_id'] == env_id]
    test = meta_test[(meta_test['env_id'] == env_id) & (meta_test['adapt_step'] == adapt_steps)]
    for row, (title, row_algos) in enumerate(rows):
        source = test if row == 2 else train
        for algo in row_algos:
            frame = source[source['algo'] == algo]
            for column, value in enumerate(('return', 'cost')):
                _curve(axes[row, column], frame, value, algo)
        limit = test_cost_limit if row == 2 else train_cost_limit
        if limit is not None:
            axes[row, 1].axhline(limit, color='k', linestyle='--', linewidth=1.2,
                                 label=f'cost limit h = {limit:g}')
        axes[row, 0].set_title(f'{title}: return')
        axes[row, 1].set_title(f'{title}: cost')
        for axis in axes[row]:
            axis.set_xlabel('training environment steps')
            axis.ticklabel_format(style='sci', axis='x', scilimits=(0, 0))
            if axis.get_legend_handles_labels()[0]:
                axis.legend(fontsize=8)
    figure.suptitle(f'{env_id}: mean and standard error over seeds')
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
