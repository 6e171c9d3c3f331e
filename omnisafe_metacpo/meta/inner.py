"""Inner adaptation of Meta-CPO: K differentiable CPO steps on one task (eq. 9, Alg. 1 l. 5-10).

Everything that turns rollouts of one task into adapted parameters reads top to bottom here:

1. surrogates on a rollout D_k collected with pi_{phi_k} (importance ratios against the sampling
   policy, data constant):
   L_R(phi) = mean_t[ratio_t * A^R_t],  L_C(phi) = T * mean_t[ratio_t * A^C_t]  (T: episode length),
   so L_C(phi) - L_C(phi_k) estimates J_C(phi) - J_C(phi_k) in cost per episode, the unit of
   b = J_C(phi_k) - h (OmniSafe's CPO leaves out the factor T and mixes the two scales). With
   ``algo_cfgs.cost_measure: discounted`` J_C is the paper's discounted cost per episode and
   L_C(phi) = W * sum_t w_t ratio_t A^C_t / sum_t w_t, with w_t = gamma^(t - episode start) and
   W = (1 - gamma^T) / (1 - gamma) the weight of an episode (:mod:`omnisafe_metacpo.cost_measures`);
2. g_k = dL_R/dphi and a_k = dL_C/dphi at phi_k, with ``create_graph`` during meta-training so that
   they stay functions of theta (the second-order terms of eq. 11);
3. the differentiable CPO step x_k = step(g_k, a_k, b_k, delta) (``cpo_step``);
4. a backtracking line search on D_k picks eta_k, held constant in the backward pass;
5. phi_{k+1} = phi_k + eta_k x_k.

The options that are not in the paper (a held-out half of D_k for the line search, steps in the
policy's head only, a KL bound) enter through :class:`~omnisafe_metacpo.meta.variants.StepVariants`,
which leaves each step as above when they are off (its default).

MetaTRPO uses the same code with the cost constraint dropped (the step is TRPO's).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from omnisafe_metacpo import cost_measures
from omnisafe_metacpo.cpo_step import CPOCase, CPOStepError, cpo_step
from omnisafe_metacpo.meta.line_search import LineSearchResult, backtracking_line_search
from omnisafe_metacpo.meta.records import StepRecord
from omnisafe_metacpo.meta.variants import StepVariants
from omnisafe_metacpo.policy import FunctionalPolicy
from omnisafe_metacpo.sampling.batch import Batch


class InnerLearner:
    """The local CPO learner of one task (eq. 9) with the settings of ``algo_cfgs``.

    Args:
        policy: The actor as a function of flat parameters.
        cfgs: ``algo_cfgs`` of MetaCPO / MetaTRPO.
        episode_length: T, which scales the cost surrogate to cost per episode.
        constrained: ``False`` drops the cost constraint (MetaTRPO).
        variants: The run's options beyond the paper; ``None``: those of ``cfgs``
            (:meth:`StepVariants.from_cfgs`).

    ``cfgs.cost_measure`` (``episode``: OmniSafe's undiscounted cost per episode, or
    ``discounted``: the paper's J_C with ``cfgs.cost_gamma``) is the scale of the constraint
    b + a'x <= 0: of b = J_C(phi_k) - h and of the cost surrogate whose gradient is a.
    """

    def __init__(
        self,
        policy: FunctionalPolicy,
        cfgs: Any,
        episode_length: int,
        constrained: bool = True,
        variants: StepVariants | None = None,
    ) -> None:
        self.policy = policy
        self.cfgs = cfgs
        self.episode_length = episode_length
        self.constrained = constrained
        self.variants = StepVariants.from_cfgs(cfgs) if variants is None else variants
        # runs saved before the key existed constrained OmniSafe's cost per episode
        self.cost_measure = cost_measures.check_measure(
            cfgs.get('cost_measure', cost_measures.BEFORE_THE_KEY))
        #: W, the weight of one episode under the discounted measure
        self.discounted_episode = cost_measures.episode_weight(cfgs.cost_gamma, episode_length)
        #: 1 on the coordinates the inner steps move, 0 elsewhere; None: all (the paper)
        self.mask = self.variants.head_mask(policy)

    # -- 1. surrogates ----------------------------------------------------------------------------
    def surrogates(self, phi: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_R, L_C) at ``phi`` on ``batch`` (importance-sampled, data constant)."""
        ratio = torch.exp(self.policy.log_prob(phi, batch.obs, batch.act) - batch.logp)
        loss_r = (ratio * batch.adv_r).mean()
        if self.cost_measure == 'discounted':
            weights = batch.disc_weights
            loss_c = self.discounted_episode * (weights * ratio * batch.adv_c).sum() / weights.sum()
        else:
            loss_c = self.episode_length * (ratio * batch.adv_c).mean()
        return loss_r, loss_c

    def cost_value(self, batch: Batch) -> float:
        """J_C of the policy that collected ``batch`` on the scale of ``cost_measure``: its cost
        rate times the episode length, or its discounted cost per episode."""
        if self.cost_measure == 'discounted':
            return batch.disc_cost
        return batch.cost_rate * self.episode_length

    # -- 2.-3. gradients and the differentiable step ----------------------------------------------
    def step_direction(
        self,
        g: torch.Tensor,
        a: torch.Tensor,
        b: float,
        delta: float,
        phi: torch.Tensor,
        obs: torch.Tensor,
    ) -> tuple[torch.Tensor, int]:
        """The CPO step (or TRPO's when unconstrained) and its case."""
        if not self.constrained:
            # No cost constraint: a = 0, b < 0 leaves the trust region: x = sqrt(2 delta/q) H^-1 g.
            a, b = torch.zeros_like(g), -1.0
        fvp = None
        if self.cfgs.metric == 'fisher':
            fvp = self.policy.fisher_vector_product(phi, obs, self.cfgs.cg_damping)
            fvp = self.variants.restrict_metric(fvp, self.mask, like=g)
        result = cpo_step(
            g,
            a,
            torch.as_tensor(b, dtype=g.dtype, device=g.device),
            torch.as_tensor(delta, dtype=g.dtype, device=g.device),
            backend=self.cfgs.dco_backend,
            metric=self.cfgs.metric,
            fvp=fvp,
        )
        return result.x, int(result.case)

    def inner_step(
        self,
        phi: torch.Tensor,
        batch: Batch,
        cost_limit: float,
        create_graph: bool,
        fraction: float | None = None,
    ) -> tuple[torch.Tensor, StepRecord]:
        """phi_{k+1} from phi_k and the rollout D_k it collected.

        Args:
            phi: phi_k (a function of theta during meta-training).
            batch: D_k, collected with pi_{phi_k}.
            cost_limit: h.
            create_graph: Keep g_k and a_k differentiable (meta-training).
            fraction: Use this eta_k instead of searching (the meta line search's replay).
        """
        delta = self.cfgs.inner_delta
        cost_value = self.cost_value(batch)
        b = cost_value - cost_limit
        fit, held = self.variants.split(batch)
        with torch.enable_grad():
            if not phi.requires_grad:
                phi = phi.detach().requires_grad_(True)
            loss_r, loss_c = self.surrogates(phi, fit)
            g = torch.autograd.grad(loss_r, phi, create_graph=create_graph, retain_graph=True)[0]
            a = torch.autograd.grad(loss_c, phi, create_graph=create_graph)[0]
            g, a = self.variants.restrict(g, self.mask), self.variants.restrict(a, self.mask)
            if not (torch.isfinite(g).all() and torch.isfinite(a).all()):
                return phi, StepRecord(batch, cost_value, 0.0, int(CPOCase.INFEASIBLE_RECOVERY), 0,
                                       fault='non_finite')
            try:
                x, case = self.step_direction(g, a, b, delta, phi, fit.obs)
            except CPOStepError:
                return phi, StepRecord(batch, cost_value, 0.0, int(CPOCase.INFEASIBLE_RECOVERY), 0,
                                       fault='solver')
        if not bool(torch.isfinite(x).all()):
            return phi, StepRecord(batch, cost_value, 0.0, case, 0, fault='non_finite')

        if fraction is not None:  # a replay (meta line search): no search, no diagnostics
            return phi + fraction * x, StepRecord(batch, cost_value, fraction, case, 0)
        fraction, backtracks = self._search(phi.detach(), x.detach(), held, case, b, delta)
        new_phi = phi + fraction * x
        with torch.no_grad():
            old, new = phi.detach(), new_phi.detach()
            kl = float(self.policy.kl(old, new, batch.obs))
            predicted = float(self.surrogates(new, held)[1] - self.surrogates(old, held)[1])
        return new_phi, StepRecord(batch, cost_value, fraction, case, backtracks, kl=kl,
                                   predicted_cost_change=predicted)

    # -- 4. backtracking on D_k (its held-out half with inner_holdout_block) ----------------------
    @torch.no_grad()
    def _search(
        self,
        phi: torch.Tensor,
        x: torch.Tensor,
        batch: Batch,
        case: int,
        b: float,
        delta: float,
    ) -> tuple[float, int]:
        loss_r0, loss_c0 = self.surrogates(phi, batch)

        def evaluate(fraction: float) -> tuple[float, float, float]:
            candidate = phi + fraction * x
            loss_r, loss_c = self.surrogates(candidate, batch)
            cost_increase = float(loss_c - loss_c0) if self.constrained else 0.0
            return (
                float(loss_r - loss_r0),
                cost_increase,
                float(self.trust_region_measure(phi, candidate, batch.obs, delta)),
            )

        result = self.line_search(x, evaluate, case, b, delta)
        return result.fraction, result.num_backtracks

    def line_search(
        self,
        x: torch.Tensor,
        evaluate: Callable[[float], tuple[float, float, float]],
        case: int,
        b: float,
        delta: float,
    ) -> LineSearchResult:
        """Backtracking on (reward, cost, trust region), shared by inner and meta steps.

        Unconstrained (MetaTRPO): b = -1 keeps the reward check and ``evaluate`` reports no cost
        increase. ``evaluate`` reports the trust-region distance in units of its bound
        (:meth:`trust_region_measure`), accepted up to 1 with a 1e-6 relative tolerance: with the
        Euclidean metric the full step lies exactly on the boundary, and rounding must not reject
        it.
        """
        return backtracking_line_search(
            x,
            evaluate,
            case,
            b=b if self.constrained else -1.0,
            max_kl=1 + 1e-6,
            decay=self.cfgs.backtrack_coeff,
            max_steps=self.cfgs.backtrack_steps,
        )

    def trust_region_measure(
        self,
        phi_old: torch.Tensor,
        phi_new: torch.Tensor,
        obs: torch.Tensor,
        delta: float,
        mean_over: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """How far ``phi_new`` is from ``phi_old``, in units of the trust region (<= 1: inside).

        Fisher metric: KL(pi_old || pi_new) / delta. Euclidean (the paper's): 0.5 ||dphi||^2 /
        delta, which the full step always meets and which says nothing about how far the action
        distribution moved (``kl_bound``, :meth:`StepVariants.trust_region`, adds the KL).

        ``mean_over`` turns the mean KL over ``obs`` into the mean over more states than this
        process holds (the meta step over distributed ranks); by default the KL is ``obs``'s.
        """
        def kl() -> torch.Tensor:
            value = self.policy.kl(phi_old, phi_new, obs)
            return value if mean_over is None else mean_over(value)

        if self.cfgs.metric == 'fisher':
            return kl() / delta
        return self.variants.trust_region(0.5 * (phi_new - phi_old).pow(2).sum() / delta, kl)

    # -- the K steps of one task ------------------------------------------------------------------
    def replay(
        self,
        theta: torch.Tensor,
        records: list[StepRecord],
        cost_limit: float,
    ) -> torch.Tensor:
        """phi_K for ``theta`` on the stored rollouts with the stored eta_k (no new samples)."""
        phi = theta
        for record in records:
            phi, _ = self.inner_step(phi, record.batch, cost_limit, create_graph=False,
                                     fraction=record.fraction)
            phi = phi.detach()
        return phi
