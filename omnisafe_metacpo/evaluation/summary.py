"""A short summary of a finished run: where it is, and its final policy meta-tested on unseen tasks.

``make train`` calls it after training::

    omnisafe-metacpo-summary PATH [--num-tasks N] [--adapt-steps K] [--plot]

``PATH`` is a run directory (``.../seed-XXX-<time>/``, with ``config.json``) or any directory
above runs (the ``--log-dir`` given to ``omnisafe train``), in which case the newest run under it
is summarised. The final policy (the highest ``torch_save/epoch-N.pt``) and the untrained one
(``epoch-0.pt``, saved at the start of every run) are meta-tested on the same unseen tasks of the
``test`` split (:func:`~omnisafe_metacpo.evaluation.saved_run.meta_test_saved_run`): return and
cost per episode before adaptation and after the run's ``meta_test_cfgs.adapt_steps`` CPO steps,
against the cost limit, with the cost on both scales (OmniSafe's undiscounted cost per episode
and the paper's discounted J_C) and, beside the adaptation rollouts, the deterministic evaluation
of the same policies. The numbers are also written to ``RUN/summary.json``.

``--plot`` draws the run's training curves (return and cost per step, with the cost limit) with
OmniSafe's ``Plotter``, exactly as ``omnisafe.Agent.plot`` does, into ``RUN/training_curves.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from omnisafe_metacpo import run_files
from omnisafe_metacpo.evaluation.rule import load_run_cfgs
from omnisafe_metacpo.evaluation.saved_run import (
    add_override_options,
    meta_test_saved_run,
    overrides_from,
)

PLOT_NAME = 'training_curves'
#: The console script of :func:`main`.
COMMAND = 'omnisafe-metacpo-summary'


def summarize(run_dir: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Meta-test the untrained and the final policy of ``run_dir`` on the same unseen tasks.

    Runs of stock algorithms are adapted as every run is in the comparison (each algorithm's
    own step, fresh critics: :mod:`omnisafe_metacpo.evaluation.rule`).

    Args:
        run_dir: A run directory.
        overrides: Values for ``meta_test_cfgs`` (num_tasks, adapt_steps, rollout_steps,
            cost_limit, eval_episodes).

    Returns:
        ``{'run_dir', 'algo', 'env_id', 'epochs': [first, last], 'num_tasks', 'adapt_steps',
        'cost_limit', 'untrained': {...}, 'final': {...}}`` with the ``MetaTest/...`` results.
    """
    config = run_files.load_config(run_dir)
    # Any run, stock ones included, is adapted by the comparison's rule (evaluation.rule):
    # its meta_test_cfgs, or MetaCPO.yaml's for runs that have none, then the overrides.
    test_cfgs = load_run_cfgs(run_dir, overrides).meta_test_cfgs.todict()
    epochs = run_files.saved_epochs(run_dir)
    first, last = epochs[0], epochs[-1]
    results = {
        name: meta_test_saved_run(run_dir, epoch, dict(test_cfgs))
        for name, epoch in (('untrained', first), ('final', last))
    }
    limit = test_cfgs.get('cost_limit')
    return {
        'run_dir': run_dir,
        'algo': config['algo'],
        'env_id': config['env_id'],
        'epochs': [first, last],
        'num_tasks': int(test_cfgs.get('num_tasks', 3)),
        'adapt_steps': int(test_cfgs['adapt_steps']),
        'cost_limit': float(config['algo_cfgs']['cost_limit'] if limit is None else limit),
        **results,
    }


def plot_command(run_dir: str) -> str:
    """The shell command that draws the run's training curves (``--plot``): the console script
    by name if it is on ``PATH``, else by its path (next to this interpreter, in the venv)."""
    script = os.path.join(os.path.dirname(sys.executable), COMMAND)
    found = shutil.which(COMMAND)
    if not os.path.exists(script) or (found and os.path.samefile(found, script)):
        script = COMMAND
    return shlex.join([script, run_dir, '--plot'])


def plot(run_dir: str) -> str:
    """Draw the training curves of ``run_dir`` as ``omnisafe.Agent.plot`` does; return the file.

    Args:
        run_dir: A run directory.
    """
    from omnisafe.utils.plotter import Plotter

    config = run_files.load_config(run_dir)
    cost_limit = config.get('algo_cfgs', {}).get('cost_limit')
    # A trailing separator makes the Plotter read exactly this directory (without it, it reads
    # every sibling whose name starts with the run's name).
    Plotter().make_plots([os.path.join(run_dir, '')], None, 'Steps', 'Rewards', False, cost_limit,
                         1, None, None, 'mean', save_dir=run_dir, save_name=PLOT_NAME)
    return os.path.join(run_dir, f'{PLOT_NAME}.png')


def render(summary: dict[str, Any], console: Console) -> None:
    """Print ``summary`` (from :func:`summarize`) in OmniSafe's style (rich).

    Costs on both scales: ``cost`` is OmniSafe's undiscounted cost per episode, ``J_C`` the
    paper's discounted one; rows ``adaptation`` are the rollouts the CPO steps learn from
    (stochastic), rows ``evaluation`` the deterministic evaluation of the same policies
    (``meta_test_cfgs.eval_episodes``), when there is one.
    """
    steps = summary['adapt_steps']
    console.print(f'[bold]{summary["algo"]} on {summary["env_id"]}[/bold], run directory:')
    console.print(f'  {summary["run_dir"]}', soft_wrap=True)
    caption = ('cost: undiscounted cost per episode (OmniSafe); J_C: discounted cost per episode '
               '(the paper)')
    if steps:
        caption += f'; after {steps}: after {steps} CPO adaptation steps on each task'
    table = Table(title=f'Meta-test on {summary["num_tasks"]} unseen test tasks, cost limit '
                        f'{summary["cost_limit"]:g}', caption=caption)
    table.add_column('policy', no_wrap=True)
    table.add_column('rollouts', no_wrap=True)
    for name in ('return', 'cost', 'J_C'):
        table.add_column(name, justify='right')
    if steps:
        for name in ('return', 'cost', 'J_C'):
            table.add_column(f'{name} after {steps}', justify='right')
    first, last = summary['epochs']
    for name, label in (('untrained', f'untrained (epoch {first})'),
                        ('final', f'final (epoch {last})')):
        result = summary[name]
        for prefix, mode in (('MetaTest', 'adaptation'), ('MetaTest/Eval', 'evaluation')):
            if f'{prefix}/EpRet/step_0' not in result:
                continue
            cells = [label, mode]
            for k in (0, steps) if steps else (0,):
                cells += [f'{result.get(f"{prefix}/{measure}/step_{k}", float("nan")):.1f}'
                          for measure in ('EpRet', 'EpCost', 'EpDiscCost')]
            table.add_row(*cells)
    console.print(table)
    console.print('Training curves (return and cost per step):')
    console.print(f'  {plot_command(summary["run_dir"])}', soft_wrap=True)


def parser() -> argparse.ArgumentParser:
    """The command line of ``omnisafe-metacpo-summary``."""
    result = argparse.ArgumentParser(
        prog=COMMAND,
        description='Summarise a finished run: its untrained and final policies meta-tested on '
                    'the same unseen test tasks (written to RUN/summary.json too), or with '
                    '--plot its training curves.')
    result.add_argument('path', help='a run directory, or a directory above runs (the newest '
                                     'run under it is summarised)')
    add_override_options(result)
    result.add_argument('--plot', action='store_true',
                        help='draw the training curves (RUN/training_curves.png) instead of '
                             'meta-testing')
    return result


def main(argv: list[str] | None = None) -> None:
    """Command line: summarise (or ``--plot``) the run at or under PATH."""
    args = parser().parse_args(argv)
    run_dir = run_files.find_run(args.path)
    console = Console()
    if args.plot:
        console.print(f'Training curves: {plot(run_dir)}', soft_wrap=True)
        return
    summary = summarize(run_dir, overrides_from(args))
    with open(os.path.join(run_dir, 'summary.json'), 'w', encoding='utf-8') as file:
        json.dump(summary, file, indent=2)
    render(summary, console)


if __name__ == '__main__':
    main()
