"""Figure 5 of the paper on both cost scales: two PNGs per environment.

``<env>.png``, over training (x: training environment steps), three rows and three columns:

* rows (as in the paper): 1. the meta-learners in training, on the training tasks after
  adaptation; 2. the other algorithms in training; 3. the meta-test on unseen tasks after K
  few-shot adaptation steps, at each meta-tested checkpoint, solid for the stochastic adaptation
  rollouts and dashed for the deterministic evaluation (mean action) when the budget has one;
* columns: return, OmniSafe's undiscounted cost per episode (``Metrics/EpCost``), the paper's
  discounted J_C (``Metrics/EpDiscCost``).

``<env>_adaptation.png``, the final checkpoints after 0..K adaptation steps (x: the step): rows
for the stochastic adaptation rollouts and the deterministic evaluation, the same three columns.

Lines: mean over seeds; bands: standard error; dashed black: the cost limit h (in training, the
one the runs were trained with, each algorithm on the scale of its own constraint; at test, the
test-time one: 5 on Car-Circle-Hazard). Cost axes are linear up to 2h and logarithmic above, so that
h stays readable next to the unconstrained algorithms' costs of hundreds.

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
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from benchmarks.figure5.results import mean_se
from omnisafe_metacpo.evaluation.rule import META_LEARNERS

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

#: The three columns: what is plotted and its title.
COLUMNS: list[tuple[str, str]] = [
    ('return', 'return per episode'),
    ('cost', 'cost per episode (undiscounted)'),
    ('disc_cost', 'discounted cost J_C (gamma 0.99)'),
]
#: Line styles of the meta-test modes.
STYLES: dict[str, str] = {'adapt': '-', 'eval': '--'}
MODE_NAMES: dict[str, str] = {'adapt': 'stochastic adaptation rollouts',
                              'eval': 'deterministic evaluation (mean action)'}


def label(variant: str) -> str:
    """The legend label of ``variant`` (an algorithm's name, or a grid's label as it is)."""
    return LABELS.get(variant, variant)


def colors(variants: list[str]) -> dict[str, str]:
    """A color per variant: the algorithms' own, then distinct ones for labelled variants."""
    out = {name: COLORS[name] for name in variants if name in COLORS}
    spare = [color for color in plt.get_cmap('tab20').colors
             if matplotlib.colors.to_hex(color) not in
             {matplotlib.colors.to_hex(c) for c in out.values()}]
    for name in variants:
        if name not in out:
            out[name] = spare[len(out) % len(spare)]
    return out


def _curve(axis: plt.Axes, frame: pd.DataFrame, x: str, value: str, color: str,
           name: str | None, linestyle: str = '-') -> None:
    # Epochs without a finished episode log NaN (OmniSafe's window of episodes is empty), and
    # runs of older versions have no discounted cost.
    stats = mean_se(frame.dropna(subset=[value]), [x], value).sort_values(x)
    if stats.empty:
        return
    seeds = int(stats['count'].max())
    axis.plot(stats[x], stats['mean'], color=color, marker='o', markersize=3,
              linestyle=linestyle,
              label=None if name is None else f'{name} ({seeds} seed{"s" if seeds > 1 else ""})')
    se = stats['se'].fillna(0.0)
    axis.fill_between(stats[x], stats['mean'] - se, stats['mean'] + se, color=color,
                      alpha=0.15, linewidth=0)


def _cost_axes(axes: list[plt.Axes], limit: float | None, what: str) -> None:
    """h on the cost axes, linear up to 2h and logarithmic above."""
    for axis in axes:
        top = axis.get_ylim()[1]
        if limit is not None:
            axis.axhline(limit, color='k', linestyle=':', linewidth=1.4,
                         label=f'h = {limit:g} ({what})')
            axis.set_yscale('symlog', linthresh=max(2 * limit, 1.0))
            top = max(top, 1.5 * limit)  # h in view even when every cost is far below it
        # costs are >= 0 (mean - se can dip below); plain numbers, not symlog's 1.05 x 10^1
        axis.set_ylim(0, top)
        axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f'{value:g}'))


def _legends(axes: list[plt.Axes], modes: list[str] | None = None) -> None:
    """Variants on the return axis (with the line styles of ``modes``), h on the cost axes."""
    handles, labels = axes[0].get_legend_handles_labels()
    for mode in modes or ():
        handles.append(Line2D([], [], color='k', linestyle=STYLES[mode]))
        labels.append(MODE_NAMES[mode])
    if handles:
        axes[0].legend(handles, labels, fontsize=7)
    for axis in axes[1:]:
        handles, labels = axis.get_legend_handles_labels()
        if handles:
            axis.legend(handles, labels, fontsize=7)


def plot_env(  # pylint: disable=too-many-arguments,too-many-locals
    env_id: str,
    variants: list[str],
    algo_of: dict[str, str],
    training: pd.DataFrame,
    meta_test: pd.DataFrame,
    train_cost_limit: float | None,
    test_cost_limit: float,
    adapt_steps: int,
    path: str,
) -> None:
    """Write the over-training figure of ``env_id`` to ``path``.

    Args:
        env_id: The environment.
        variants: Variants (algorithms or grid labels) in legend order.
        algo_of: The algorithm of each variant (which row its training curves go to).
        training: :func:`~benchmarks.figure5.results.training_curves`.
        meta_test: :func:`~benchmarks.figure5.results.meta_test_results`.
        train_cost_limit: h in training (rows 1-2; ``None``: no line).
        test_cost_limit: h at test time (row 3).
        adapt_steps: K; row 3 shows the results after K adaptation steps.
        path: The PNG to write.
    """
    palette = colors(variants)
    rows = [
        ('meta-training (training tasks, after adaptation)',
         [v for v in variants if algo_of.get(v, v) in META_LEARNERS]),
        ('training (training tasks)', [v for v in variants if algo_of.get(v, v) not in
                                       META_LEARNERS]),
        (f'meta-test (unseen tasks, after {adapt_steps} adaptation steps)', list(variants)),
    ]
    figure, axes = plt.subplots(3, 3, figsize=(17, 12), squeeze=False)
    train = training[training['env_id'] == env_id]
    test = meta_test[(meta_test['env_id'] == env_id) & (meta_test['adapt_step'] == adapt_steps)]
    modes = [mode for mode in STYLES if mode in set(test['mode'])]
    for row, (title, row_variants) in enumerate(rows):
        for variant in row_variants:
            for column, (value, _) in enumerate(COLUMNS):
                # one legend entry per variant, on the return axis
                name = label(variant) if column == 0 else None
                if row < 2:
                    _curve(axes[row, column], train[train['variant'] == variant], 'steps', value,
                           palette[variant], name)
                    continue
                for mode in modes:
                    frame = test[(test['variant'] == variant) & (test['mode'] == mode)]
                    _curve(axes[row, column], frame, 'steps', value, palette[variant],
                           name if mode == modes[0] else None, STYLES[mode])
        if row < 2:
            _cost_axes(list(axes[row, 1:]), train_cost_limit,
                       "training; on each algorithm's own constraint scale")
        else:
            _cost_axes(list(axes[row, 1:]), test_cost_limit, 'test time')
        for column, (_, what) in enumerate(COLUMNS):
            axes[row, column].set_title(f'{title}:\n{what}', fontsize=9)
            axes[row, column].set_xlabel('training environment steps')
            axes[row, column].ticklabel_format(style='sci', axis='x', scilimits=(0, 0))
        _legends(list(axes[row]), modes if row == 2 and len(modes) > 1 else None)
    figure.suptitle(f'{env_id}: mean and standard error over seeds')
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_adaptation(  # pylint: disable=too-many-arguments
    env_id: str,
    variants: list[str],
    table: pd.DataFrame,
    test_cost_limit: float,
    adapt_steps: int,
    path: str,
) -> bool:
    """Write the meta-test of the final checkpoints after 0..K adaptation steps to ``path``.

    Args:
        env_id: The environment.
        variants: Variants in legend order.
        table: :func:`~benchmarks.figure5.tables.table` (means and standard errors over seeds).
        test_cost_limit: h at test time.
        adapt_steps: K.
        path: The PNG to write.

    Returns:
        Whether a figure was written (not when no final checkpoint of the env is meta-tested).
    """
    mine = table[table['env_id'] == env_id]
    modes = [mode for mode in STYLES if mode in set(mine['mode'])]
    if not modes:
        return False
    palette = colors(variants)
    figure, axes = plt.subplots(len(modes), 3, figsize=(17, 4.2 * len(modes) + 0.6),
                                squeeze=False)
    for row, mode in enumerate(modes):
        for variant in variants:
            stats = mine[(mine['variant'] == variant) & (mine['mode'] == mode)]
            for column, (value, _) in enumerate(COLUMNS):
                points = stats.dropna(subset=[f'{value}_mean']).sort_values('adapt_step')
                if points.empty:
                    continue
                seeds = int(points['seeds'].max())
                axis = axes[row, column]
                axis.plot(points['adapt_step'], points[f'{value}_mean'], marker='o',
                          markersize=4, color=palette[variant],
                          label=(f'{label(variant)} ({seeds} seed{"s" if seeds > 1 else ""})'
                                 if column == 0 else None))
                se = points[f'{value}_se'].fillna(0.0)
                axis.fill_between(points['adapt_step'], points[f'{value}_mean'] - se,
                                  points[f'{value}_mean'] + se, color=palette[variant],
                                  alpha=0.15, linewidth=0)
        _cost_axes(list(axes[row, 1:]), test_cost_limit, 'test time')
        for column, (_, what) in enumerate(COLUMNS):
            axes[row, column].set_title(f'{MODE_NAMES[mode]}:\n{what}', fontsize=9)
            axes[row, column].set_xlabel('adaptation steps on the unseen task')
            axes[row, column].set_xticks(range(adapt_steps + 1))
        _legends(list(axes[row]))
    figure.suptitle(f'{env_id}: meta-test of the final policies on unseen tasks, mean and '
                    'standard error over seeds')
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True
