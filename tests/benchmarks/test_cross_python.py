"""The cross-Python comparison's table logic, on hand-made progress files."""

from __future__ import annotations

import math

import pandas as pd

from benchmarks.cross_python import compare


def _progress(**columns: list[float]) -> pd.DataFrame:
    return pd.DataFrame(columns)


def test_equal_runs_are_equal_bit_for_bit_whatever_their_times() -> None:
    a = _progress(**{'Metrics/EpCost': [1.0, 2.0], 'Time/Total': [10.0, 20.0]})
    b = _progress(**{'Metrics/EpCost': [1.0, 2.0], 'Time/Total': [11.0, 23.0]})
    assert compare(a, b) == (True, 0.0, '')


def test_the_largest_difference_and_its_column_are_named() -> None:
    a = _progress(**{'Metrics/EpRet': [1.0, 2.0], 'Metrics/EpCost': [0.0, 5.0]})
    b = _progress(**{'Metrics/EpRet': [1.0, 2.0 + 1e-12], 'Metrics/EpCost': [0.0, 8.0]})
    equal, worst, where = compare(a, b)
    assert not equal and where == 'Metrics/EpCost' and worst == 3.0


def test_a_difference_in_the_last_bit_is_a_difference() -> None:
    a = _progress(x=[0.1 + 0.2])
    b = _progress(x=[0.3])
    equal, worst, where = compare(a, b)
    assert not equal and 0 < worst < 1e-15 and where == 'x'


def test_nan_in_both_counts_as_equal_and_unequal_lengths_are_reported() -> None:
    assert compare(_progress(x=[math.nan, 1.0]), _progress(x=[math.nan, 1.0]))[0]
    equal, worst, where = compare(_progress(x=[1.0]), _progress(x=[1.0, 2.0]))
    assert not equal and worst == math.inf and where == '1 rows against 2'
