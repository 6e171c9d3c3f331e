"""The meta step of Meta-CPO: eq. (12) with backtracking (Alg. 1, line 14).

theta <- theta + eta x with x = step(dF/dtheta, dG/dtheta, b_theta, delta_meta), the same
differentiable CPO step as the inner steps (no gradient needed here), b_theta = mean_i J_C(phi_i^K)
- h over the M tasks, and eta from a backtracking line search that judges each candidate theta by
re-running the inner adaptation of every task on its stored rollouts (:meth:`InnerLearner.replay`,
importance ratios) and comparing F and G (eq. 10) with theta's, as MAML-TRPO implementations do.
The trust region is on theta: Euclidean (the paper), or the KL of pi_theta on the tasks'
pre-adaptation states D_0 (Fisher metric).

:class:`MetaStep` knows no ranks or loggers: the caller hands it F and G of a candidate (over all
M tasks) and the function that averages a mean over the states it holds with every rank's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from omnisafe_metacpo.cpo_step import CPOStepError, cpo_step
from omnisafe_metacpo.meta.inner import InnerLearner
from omnisafe_metacpo.meta.variants import StepVariants


@dataclass(frozen=True)
class MetaStepResult:
    """What a meta step did. The defaults: no step taken (e.g. a non-finite meta-gradient).

    Attributes:
        case: The CPO case of the step (-1: none computed).
        fraction: eta, the fraction of the step taken (0: rejected).
        backtracks: Halvings of the line search.
        accepted: Whether theta moved.
        step_norm: ||eta x||.
        b: b_theta = J_C - h the step was computed with (-1 unconstrained; NaN: none).
        fault: ``'solver'`` (the cvxpylayers backend failed) or ``'non_finite'`` (a non-finite
            step), or ``None``.
        theta: The new theta when ``accepted``.
    """

    case: int = -1
    fraction: float = 0.0
    backtracks: int = 0
    accepted: bool = False
    step_norm: float = 0.0
    b: float = float('nan')
    fault: str | None = None
    theta: torch.Tensor | None = None

    def log_values(self) -> dict[str, float]:
        """The ``Meta/...`` values of the progress."""
        return {
            'Meta/b': self.b,
            'Meta/Case': self.case,
            'Meta/StepFraction': self.fraction,
            'Meta/Backtracks': self.backtracks,
            'Meta/Accepted': float(self.accepted),
            'Meta/StepNorm': self.step_norm,
        }


class MetaStep:
    """The meta CPO step with the settings of ``algo_cfgs``.

    Args:
        learner: The inner learner (its replay, line search and trust-region measure).
        cfgs: ``algo_cfgs`` (``meta_delta``, ``dco_backend``, ``metric``, ``cg_damping``).
        variants: The run's options beyond the paper (``meta_over_limit``).
        constrained: ``False``: TRPO's step, the cost ignored (MetaTRPO).
    """

    def __init__(self, learner: InnerLearner, cfgs: Any, variants: StepVariants,
                 constrained: bool = True) -> None:
        self._learner = learner
        self._cfgs = cfgs
        self._variants = variants
        self._constrained = constrained

    def __call__(  # pylint: disable=too-many-arguments
        self,
        theta: torch.Tensor,
        grad_f: torch.Tensor,
        grad_g: torch.Tensor,
        post_value: float,
        obs: torch.Tensor,
        post_losses: Callable[[torch.Tensor], tuple[float, float]],
        mean_over: Callable[[torch.Tensor], torch.Tensor],
    ) -> MetaStepResult:
        """Take the step from ``theta`` (nothing is written: the result holds the new theta).

        Args:
            theta: The meta-parameters.
            grad_f: dF/dtheta, the mean over all M tasks.
            grad_g: dG/dtheta, the mean over all M tasks.
            post_value: mean_i J_C(phi_i^K) over all M tasks, on the scale of ``cost_measure``.
            obs: The pre-adaptation states D_0 of the tasks this process holds (the KL metric).
            post_losses: F and G (means over all M tasks) of a candidate theta.
            mean_over: Turns a mean over ``obs`` into the mean over every process's states.
        """
        cfgs = self._cfgs
        delta = cfgs.meta_delta
        b_theta = post_value - cfgs.cost_limit
        if not self._constrained:
            grad_g, b_theta = torch.zeros_like(grad_g), -1.0
        fvp = None
        if cfgs.metric == 'fisher':  # (F + damping I) v, F the KL's Hessian on every task's D_0
            fvp = self._learner.policy.fisher_vector_product(theta, obs, cfgs.cg_damping,
                                                             mean_over=mean_over)
        try:
            step = cpo_step(grad_f, grad_g,
                            torch.as_tensor(b_theta, dtype=theta.dtype, device=theta.device),
                            torch.as_tensor(delta, dtype=theta.dtype, device=theta.device),
                            backend=cfgs.dco_backend, metric=cfgs.metric, fvp=fvp)
        except CPOStepError:  # a solver failure of the cvxpylayers backend
            return MetaStepResult(b=b_theta, fault='solver')
        x, case = step.x.detach(), int(step.case)
        if self._constrained:
            x, case = self._variants.meta_direction(x, case, b_theta, grad_g, fvp, delta)
        if not bool(torch.isfinite(x).all()):
            return MetaStepResult(case=case, b=b_theta, fault='non_finite')

        base_f, base_g = post_losses(theta)

        def evaluate(fraction: float) -> tuple[float, float, float]:
            candidate = theta + fraction * x
            loss_f, loss_g = post_losses(candidate)
            cost_increase = loss_g - base_g if self._constrained else 0.0
            with torch.no_grad():
                divergence = float(self._learner.trust_region_measure(
                    theta, candidate, obs, delta, mean_over=mean_over))
            return loss_f - base_f, cost_increase, divergence

        search = self._learner.line_search(x, evaluate, case, b_theta, delta)
        return MetaStepResult(
            case=case,
            fraction=search.fraction,
            backtracks=search.num_backtracks,
            accepted=search.accepted,
            step_norm=float(search.fraction * x.norm()),
            b=b_theta,
            theta=theta + search.fraction * x if search.accepted else None,
        )
