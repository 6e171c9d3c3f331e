"""What an adaptation leaves behind: per inner step, per task, and over a meta-iteration.

:class:`StepRecord` is one inner step (kept with its rollout for the meta line search's replay);
:class:`TaskResult` one task's K steps and its post-adaptation rollout D_K. :class:`TaskSummary`
is what the meta step and the logs need of a task, as one row of floats (:meth:`TaskSummary.to_row`)
that ranks gather in task order and read back by name (:meth:`TaskSummary.from_row`);
:func:`count_steps`, :func:`inner_diagnostics` and :func:`adaptation_log` reduce the rows of all
M tasks to the progress values of a meta-iteration (:data:`ADAPTATION_KEYS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from omnisafe_metacpo.cpo_step import CPOCase
from omnisafe_metacpo.sampling.batch import Batch

#: Inner-step faults, coded by their index in a summary row.
FAULTS: tuple[str | None, ...] = (None, 'non_finite', 'solver')


@dataclass
class StepRecord:
    """What one inner step used and decided (kept for the meta line search's replay)."""

    batch: Batch
    cost_value: float
    fraction: float
    case: int
    backtracks: int
    fault: str | None = None
    #: KL(pi_phi_k || pi_phi_k+1) on D_k's states: how far the step moved the action distribution
    #: (with the Euclidean metric nothing in the step itself bounds it). NaN when not measured.
    kl: float = float('nan')
    #: L_C(phi_k+1) - L_C(phi_k) on D_k (on its held-out half with ``inner_holdout_block``): the
    #: cost change the importance-sampled surrogate predicts, to compare with the change measured
    #: on the next rollout. NaN when not measured.
    predicted_cost_change: float = float('nan')


@dataclass
class AdaptationStats:
    """Counters of one or more adaptations, for the logger."""

    cases: dict[str, int] = field(default_factory=lambda: {case.name: 0 for case in CPOCase})
    fractions: list[float] = field(default_factory=list)
    backtracks: list[int] = field(default_factory=list)
    rejected: int = 0
    non_finite: int = 0
    solver_errors: int = 0

    def count(self, fraction: float, case: int, backtracks: int, fault: str | None) -> None:
        """Count one inner step from its outcome (a step rejected by a fault has no case)."""
        if fault is None:
            self.cases[CPOCase(case).name] += 1
        self.fractions.append(fraction)
        self.backtracks.append(backtracks)
        self.rejected += int(fraction == 0.0)
        self.non_finite += int(fault == 'non_finite')
        self.solver_errors += int(fault == 'solver')


@dataclass
class TaskResult:
    """One task of a meta-iteration: its inner steps and its post-adaptation rollout D_K."""

    records: list[StepRecord]
    post: Batch
    phi_final: torch.Tensor


class StepSummary(NamedTuple):
    """One inner step of a :class:`TaskSummary`."""

    fraction: float
    backtracks: float
    case: float
    #: one of :data:`FAULTS`
    fault: str | None
    kl: float
    predicted_cost_change: float
    #: J_C(phi_k) on the scale of ``algo_cfgs.cost_measure`` (b_k + h)
    cost: float

    def to_row(self) -> list[float]:
        """The step's columns of a summary row (the fault as its index in :data:`FAULTS`)."""
        return [self.fraction, self.backtracks, self.case, FAULTS.index(self.fault), self.kl,
                self.predicted_cost_change, self.cost]


class TaskSummary(NamedTuple):
    """What the meta step and the logs need of one adapted task.

    ``*_cost``: OmniSafe's undiscounted cost per episode; ``*_disc_cost``: the paper's discounted
    J_C; ``post_value``: J_C(phi_K) on the scale of ``algo_cfgs.cost_measure`` (b of the meta
    step is the mean of these minus h). ``pre``: the rollout of phi_0 = theta.
    """

    post_return: float
    post_cost: float
    post_length: float
    pre_return: float
    pre_cost: float
    samples: float
    post_disc_cost: float
    pre_disc_cost: float
    post_value: float
    steps: tuple[StepSummary, ...]

    @classmethod
    def of(cls, result: TaskResult, episode_length: int, post_value: float) -> TaskSummary:
        """The summary of ``result``.

        Args:
            result: The task's inner steps and post-adaptation rollout.
            episode_length: T (returns and costs per episode from per-step rates).
            post_value: J_C of the post-adaptation rollout on the constraint's scale.
        """
        pre = result.records[0].batch if result.records else result.post
        post = result.post
        return cls(
            post_return=post.reward_rate * episode_length,
            post_cost=post.cost_rate * episode_length,
            post_length=float(np.mean(post.ep_lengths)) if post.ep_lengths
            else float(post.num_steps),
            pre_return=pre.reward_rate * episode_length,
            pre_cost=pre.cost_rate * episode_length,
            samples=float(sum(r.batch.num_steps for r in result.records) + post.num_steps),
            post_disc_cost=post.disc_cost,
            pre_disc_cost=pre.disc_cost,
            post_value=post_value,
            steps=tuple(StepSummary(r.fraction, r.backtracks, r.case, r.fault, r.kl,
                                    r.predicted_cost_change, r.cost_value)
                        for r in result.records),
        )

    def to_row(self) -> list[float]:
        """One row of floats: the task's fields, then :meth:`StepSummary.to_row` per step."""
        row = list(self[:-1])
        for step in self.steps:
            row += step.to_row()
        return row

    @classmethod
    def from_row(cls, row: list[float]) -> TaskSummary:
        """The summary of a row written by :meth:`to_row`."""
        fixed = len(cls._fields) - 1
        width = len(StepSummary._fields)
        steps = []
        for start in range(fixed, len(row), width):
            values = list(row[start:start + width])
            values[3] = FAULTS[int(values[3])]
            steps.append(StepSummary(*values))
        return cls(*row[:fixed], steps=tuple(steps))

    @staticmethod
    def to_tensor(summaries: list[TaskSummary]) -> torch.Tensor:
        """The rows of ``summaries`` as one float64 tensor (what ranks gather)."""
        return torch.tensor([summary.to_row() for summary in summaries], dtype=torch.float64)

    @classmethod
    def from_tensor(cls, rows: torch.Tensor) -> list[TaskSummary]:
        """The summaries of the rows of ``rows`` (tasks in order)."""
        return [cls.from_row(row) for row in rows.tolist()]


def count_steps(summaries: list[TaskSummary]) -> AdaptationStats:
    """The inner steps of all tasks counted in the order one process records them (k, task)."""
    stats = AdaptationStats()
    for k in range(len(summaries[0].steps) if summaries else 0):
        for summary in summaries:
            step = summary.steps[k]
            stats.count(step.fraction, int(step.case), int(step.backtracks), step.fault)
    return stats


#: The keys of :func:`inner_diagnostics`.
INNER_DIAGNOSTICS = ('MetaTrain/Inner/KL', 'MetaTrain/Inner/KLMax',
                     'MetaTrain/Inner/PredictedCostChange', 'MetaTrain/Inner/MeasuredCostChange',
                     'MetaTrain/Inner/CostChangeError')


def inner_diagnostics(summaries: list[TaskSummary]) -> dict[str, float]:
    """How far the inner steps moved the policy, and whether the surrogates foresaw the cost.

    Per inner step k of every task: the KL between pi_phi_k and pi_phi_k+1 on D_k's states, the
    cost change the surrogate predicted on D_k (L_C(phi_k+1) - L_C(phi_k)) and the change
    measured by the next rollout (J_C(D_k+1) - J_C(D_k), cost per episode on the scale of
    ``algo_cfgs.cost_measure``). Steps rejected by a fault are left out.
    """
    kls, predicted, measured = [], [], []
    for summary in summaries:  # tasks in order
        costs = [step.cost for step in summary.steps] + [summary.post_value]
        for k, step in enumerate(summary.steps):
            if step.fault is None:
                kls.append(step.kl)
                predicted.append(step.predicted_cost_change)
                measured.append(costs[k + 1] - costs[k])
    if not kls:
        return dict.fromkeys(INNER_DIAGNOSTICS, float('nan'))
    return dict(zip(INNER_DIAGNOSTICS, (
        float(np.mean(kls)),
        float(np.max(kls)),
        float(np.mean(predicted)),
        float(np.mean(measured)),
        float(np.mean(np.abs(np.subtract(predicted, measured)))),
    ), strict=True))


#: The progress keys of :func:`adaptation_log`, in the order of the progress columns.
ADAPTATION_KEYS: tuple[str, ...] = (
    'Metrics/EpRet', 'Metrics/EpCost', 'Metrics/EpDiscCost', 'Metrics/EpLen',
    'MetaTrain/PreAdapt/EpRet', 'MetaTrain/PreAdapt/EpCost', 'MetaTrain/PreAdapt/EpDiscCost',
    *(f'MetaTrain/Inner/Case/{case.name}' for case in CPOCase),
    'MetaTrain/Inner/StepFraction', 'MetaTrain/Inner/Backtracks', 'MetaTrain/Inner/Rejected',
    *INNER_DIAGNOSTICS,
)


def adaptation_log(summaries: list[TaskSummary], stats: AdaptationStats) -> dict[str, float]:
    """The progress values of the M tasks' adaptation (:data:`ADAPTATION_KEYS`).

    ``Metrics/...`` are the post-adaptation rollouts': what Meta-CPO optimises (F and G of
    eq. 10); ``MetaTrain/PreAdapt/...`` those of theta itself.
    """
    def mean(name: str) -> float:
        return float(np.mean([getattr(summary, name) for summary in summaries]))

    return {
        'Metrics/EpRet': mean('post_return'),
        'Metrics/EpCost': mean('post_cost'),
        'Metrics/EpDiscCost': mean('post_disc_cost'),
        'Metrics/EpLen': mean('post_length'),
        'MetaTrain/PreAdapt/EpRet': mean('pre_return'),
        'MetaTrain/PreAdapt/EpCost': mean('pre_cost'),
        'MetaTrain/PreAdapt/EpDiscCost': mean('pre_disc_cost'),
        **{f'MetaTrain/Inner/Case/{name}': count for name, count in stats.cases.items()},
        'MetaTrain/Inner/StepFraction': float(np.mean(stats.fractions or [0.0])),
        'MetaTrain/Inner/Backtracks': float(np.mean(stats.backtracks or [0])),
        'MetaTrain/Inner/Rejected': stats.rejected,
        **inner_diagnostics(summaries),
    }
