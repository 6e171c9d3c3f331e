"""The per-task summary rows that ranks gather (:mod:`omnisafe_metacpo.meta.records`)."""

from __future__ import annotations

import math

import torch

from omnisafe_metacpo.cpo_step import CPOCase
from omnisafe_metacpo.meta.records import (
    ADAPTATION_KEYS,
    StepSummary,
    TaskSummary,
    adaptation_log,
    count_steps,
    inner_diagnostics,
)


def _summary(post_value: float, faults: tuple[str | None, ...]) -> TaskSummary:
    steps = tuple(StepSummary(0.5, 2, int(CPOCase.FEASIBLE_ACTIVE), fault, 0.01 * k, -1.0, 10.0 + k)
                  for k, fault in enumerate(faults))
    return TaskSummary(1.0, 2.0, 500.0, 0.5, 4.0, 1000.0, 0.3, 0.6, post_value, steps)


def test_a_summary_survives_its_row_and_the_gathered_tensor() -> None:
    summaries = [_summary(12.0, (None, 'solver')), _summary(8.0, ('non_finite', None))]
    rows = TaskSummary.to_tensor(summaries)
    assert rows.dtype == torch.float64 and rows.shape == (2, 9 + 2 * 7)
    assert TaskSummary.from_tensor(rows) == summaries


def test_reductions_count_faults_and_leave_faulty_steps_out_of_the_diagnostics() -> None:
    summaries = [_summary(12.0, (None, 'solver')), _summary(8.0, ('non_finite', None))]
    stats = count_steps(summaries)
    assert (stats.non_finite, stats.solver_errors, len(stats.fractions)) == (1, 1, 4)
    diagnostics = inner_diagnostics(summaries)
    # step 0 of task 0 (cost 10 -> 11) and step 1 of task 1 (cost 11 -> post 8)
    assert diagnostics['MetaTrain/Inner/MeasuredCostChange'] == (1.0 + -3.0) / 2
    assert diagnostics['MetaTrain/Inner/KLMax'] == 0.01
    values = adaptation_log(summaries, stats)
    assert list(values) == list(ADAPTATION_KEYS)
    assert values['Metrics/EpLen'] == 500.0
    assert all(math.isnan(v) for v in inner_diagnostics([_summary(1.0, ('solver',))]).values())
