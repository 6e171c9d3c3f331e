"""Results of variants whose runs are not in the runs directory, carried from the last report.

A budget's runs live outside the repository and can be lost (a new machine, a cleaned disk)
after their numbers were published in ``benchmarks/results/figure5_<budget>/``. A report written
without them would drop those variants, and the verdict would call them ``not run``. So the rows of
the previous ``meta_test.csv`` and ``training.csv`` of every (env, variant) with no finished run
now are kept as they were, and the report says which ones it carried. A variant with at least one
finished run is always recomputed from its runs, never carried: to measure a carried variant
again, train it (``make bench`` trains only what is missing).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pandas as pd


def previous(path: str, columns: list[str]) -> pd.DataFrame:
    """The previous report's table at ``path`` (empty if there is none, or of other columns)."""
    if not os.path.exists(path):
        return pd.DataFrame(columns=columns)
    # round_trip: the default parser can change the last digit, and a carried row must not move
    frame = pd.read_csv(path, float_precision='round_trip')
    if list(frame.columns) != columns:  # an older layout: recompute rather than mix layouts
        return pd.DataFrame(columns=columns)
    return frame


def absent(entries: pd.DataFrame) -> set[tuple[str, str]]:
    """(env id, variant) pairs of the plan (:func:`~benchmarks.figure5.verdict.plan`) not run."""
    rows = entries[entries['runs_finished'] == 0]
    return set(zip(rows['env_id'], rows['variant'], strict=True))


def carry(current: pd.DataFrame, old: pd.DataFrame,
          missing: set[tuple[str, str]]) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """``current`` with the rows of ``old`` whose (env id, variant) is in ``missing``.

    Returns the combined table (``current``'s columns) and the pairs carried, in ``old``'s order.
    """
    keys = list(zip(old['env_id'], old['variant'], strict=True))
    mask = [key in missing for key in keys]
    kept = old[mask]
    carried = list(dict.fromkeys(key for key, keep in zip(keys, mask, strict=True) if keep))
    if kept.empty:
        return current, []
    frames = [frame for frame in (current, kept[current.columns]) if not frame.empty]
    return pd.concat(frames, ignore_index=True), carried


def mark_finished(entries: pd.DataFrame, table: pd.DataFrame,
                  carried: list[tuple[str, str]]) -> pd.DataFrame:
    """The plan with each carried variant's finished runs set to the seeds of its carried rows."""
    out = entries.copy()
    for env_id, variant in carried:
        rows = table[(table['env_id'] == env_id) & (table['variant'] == variant)]
        where = (out['env_id'] == env_id) & (out['variant'] == variant)
        out.loc[where, 'runs_finished'] = int(rows['seeds'].max()) if len(rows) else 0
    return out


def note(carried: list[tuple[str, str]], label: Callable[[str], str]) -> str:
    """The Markdown line naming the carried variants ('' when none)."""
    if not carried:
        return ''
    names = '; '.join(f'{env_id}: {label(variant)}' for env_id, variant in carried)
    return ('**Carried over from the previous report** (their runs are not in the runs directory '
            f'this report was written from, so their rows were not recomputed): {names}.')
