"""Do the supported Pythons train alike? The same short run through the stock CLI in several venvs.

Each venv (one per Python, e.g. ``.venv``, ``.venv-py3.12``, ``.venv-py3.13`` from
``make test-python``) runs ``omnisafe train --algo MetaCPO`` with the same seed and budget on each
env, and the runs' ``progress.csv`` are compared column by column over every row: the largest
absolute difference from the first venv's, and which earlier venvs' it equals bit for bit. The venvs
differ in Python and in the locked numpy / mujoco (``requirements/lock-pyX.Y.txt``), so a
difference says which of those matters for the numbers (see ``docs/python_versions.md``).

    python benchmarks/cross_python.py .venv .venv-py3.12 .venv-py3.13 \\
        [--envs SafetyPointCircle1-v0 SafetyCarCircle1-v0] [--epochs 2] [--output FILE.md]
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd

STEPS_PER_EPOCH = 15000


def _versions(venv: str) -> str:
    """``Python X.Y.Z, numpy ..., mujoco ..., torch ...`` of a venv."""
    code = ('import sys, numpy, mujoco, torch; '
            'print(f"Python {sys.version.split()[0]}, numpy {numpy.__version__}, '
            'mujoco {mujoco.__version__}, torch {torch.__version__}")')
    return subprocess.run([os.path.join(venv, 'bin', 'python'), '-c', code], capture_output=True,
                          text=True, check=True).stdout.strip()


def train(venv: str, env_id: str, epochs: int, log_dir: str) -> tuple[pd.DataFrame, float]:
    """One short MetaCPO run through the venv's ``omnisafe`` CLI: its progress and wall time."""
    command = [os.path.join(venv, 'bin', 'omnisafe'), 'train', '--algo', 'MetaCPO',
               '--env-id', env_id, '--log-dir', log_dir,
               '--custom-cfgs', 'seed', '--custom-cfgs', '0',
               '--total-steps', str(epochs * STEPS_PER_EPOCH),
               '--custom-cfgs', 'algo_cfgs:steps_per_epoch', '--custom-cfgs', str(STEPS_PER_EPOCH),
               '--custom-cfgs', 'train_cfgs:torch_threads', '--custom-cfgs', '1',
               '--custom-cfgs', 'logger_cfgs:use_tensorboard', '--custom-cfgs', 'False']
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'})
    if done.returncode:
        raise RuntimeError(f'{" ".join(command)} exited with {done.returncode}:\n'
                           f'{(done.stdout + done.stderr)[-3000:]}')
    seconds = time.perf_counter() - start
    found = glob.glob(os.path.join(log_dir, '**', 'progress.csv'), recursive=True)
    if len(found) != 1:
        raise RuntimeError(f'expected one progress.csv under {log_dir}, found {found}')
    return pd.read_csv(found[0]), seconds


def compare(reference: pd.DataFrame, other: pd.DataFrame) -> tuple[bool, float, str]:
    """(bit for bit equal, largest absolute difference, the column where it is)."""
    # Time columns differ on every run; they are not results.
    columns = [c for c in reference.columns
               if c in other.columns and not c.startswith('Time/')
               and pd.api.types.is_numeric_dtype(reference[c])]
    if len(reference) != len(other):
        return False, float('inf'), f'{len(reference)} rows against {len(other)}'
    worst, where, equal = 0.0, '', True
    for column in columns:
        a = reference[column].to_numpy(dtype=float)
        b = other[column].to_numpy(dtype=float)
        same = np.array_equal(a, b, equal_nan=True)
        equal &= same
        if not same:
            diff = float(np.nanmax(np.abs(a - b)))
            if diff > worst or not where:
                worst, where = diff, column
    return equal, worst, where


def main(argv: list[str] | None = None) -> int:
    """Train in every venv, compare with the first, print (and write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('venvs', nargs='+', help='venv directories; the first is the reference')
    parser.add_argument('--envs', nargs='+',
                        default=['SafetyPointCircle1-v0', 'SafetyCarCircle1-v0'])
    parser.add_argument('--epochs', type=int, default=2,
                        help=f'meta-iterations of {STEPS_PER_EPOCH} env steps (default: 2)')
    parser.add_argument('--output', default=None, help='also write the Markdown to this file')
    args = parser.parse_args(argv)
    lines = [f'MetaCPO, seed 0, {args.epochs} meta-iterations of {STEPS_PER_EPOCH:,} env steps, '
             'the stock CLI in each venv; every numeric column of `progress.csv` (all rows, '
             '`Time/*` left out) against the first venv, and which earlier venvs it equals.', '',
             '| venv | stack | env | wall s | largest abs. difference from the first (column) '
             '| equal bit for bit to |', '|---|---|---|---|---|---|']
    with tempfile.TemporaryDirectory() as root:
        for env_id in args.envs:
            earlier: list[tuple[str, pd.DataFrame]] = []
            for i, venv in enumerate(args.venvs):
                progress, seconds = train(venv, env_id, args.epochs,
                                          os.path.join(root, f'{env_id}-{i}'))
                if earlier:
                    equal, worst, where = compare(earlier[0][1], progress)
                    diff = '0' if equal else f'{worst:.3g} ({where})'
                    same = [f'`{name}`' for name, other in earlier
                            if compare(other, progress)[0]]
                    same_text = ', '.join(same) or 'none'
                else:
                    diff, same_text = 'reference', '–'
                earlier.append((venv, progress))
                lines.append(f'| `{venv}` | {_versions(venv)} | {env_id} | {seconds:.0f} | '
                             f'{diff} | {same_text} |')
                print(lines[-1], flush=True)
    text = '\n'.join(lines) + '\n'
    if args.output:
        with open(args.output, 'w', encoding='utf-8') as file:
            file.write(text)
    sys.stdout.write('\n' + text)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
