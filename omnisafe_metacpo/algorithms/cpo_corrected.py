"""CPOCorrected: OmniSafe 0.5.0's CPO with the dual solution of its step corrected."""

from __future__ import annotations

import math

import torch
from omnisafe.algorithms import registry
from omnisafe.algorithms.on_policy.second_order.cpo import CPO
from omnisafe.utils import distributed
from omnisafe.utils.tools import (
    get_flat_gradients_from,
    get_flat_params_from,
    set_param_values_to_model,
)

from omnisafe_metacpo import cost_measures
from omnisafe_metacpo.cpo_step import cg_solve, cpo_step
from omnisafe_metacpo.plugin import disc_cost_log
from omnisafe_metacpo.sampling.envs import unwrapped

#: ``algo_cfgs.cost_measure`` of CPOCorrected: stock CPO's mix of scales, or one of the measures.
CPO_COST_MEASURES = ('omnisafe', *cost_measures.COST_MEASURES)

#: What ``_update_actor`` logs about its step (stock CPO's keys, apart from the acceptance step).
_STEP_KEYS = ('Loss/Loss_pi', 'Misc/Alpha', 'Misc/FinalStepNorm', 'Misc/xHx', 'Misc/H_inv_g',
              'Misc/gradient_norm', 'Misc/cost_gradient_norm', 'Misc/Lambda_star', 'Misc/Nu_star',
              'Misc/OptimCase', 'Misc/A', 'Misc/B', 'Misc/q', 'Misc/r', 'Misc/s')


@registry.register
class CPOCorrected(CPO):
    r"""Constrained Policy Optimization whose step solves CPO's problem (OmniSafe's CPO otherwise).

    References:
        - Title: Constrained Policy Optimization
        - Authors: Joshua Achiam, David Held, Aviv Tamar, Pieter Abbeel.
        - URL: `CPO <https://arxiv.org/abs/1705.10528>`_

    Each policy update solves the problem of Achiam et al. (2017), eq. (10) (eq. 3 of Meta-CPO),

    .. math::

        x^\star = \arg\max_x \; g^\top x \quad \text{s.t.} \quad
        \tfrac12 x^\top H x \le \delta, \qquad b + a^\top x \le 0,

    and takes the recovery step :math:`x = -\sqrt{2\delta / a^\top H^{-1} a}\; H^{-1} a` when no
    point of the trust region satisfies the linearised constraint.

    **What is wrong with the stock step.** OmniSafe's ``CPO._update_actor`` sets
    ``r = grads.dot(p)`` :math:`= g^\top H^{-1} a`, ``grads`` being the ascent gradient ``g``, and
    hands it to ``CPO._step_direction``, whose dual formulas
    (``nu_star = clamp(lambda c - r, 0) / s``, the projection bounds ``r / c``, the ``- r c / s``
    term of ``f_a``) are Achiam et al.'s (appendix 10.2), written for a minimised loss with gradient
    ``-g``: they need :math:`r = -g^\top H^{-1} a`. So whenever the cost constraint can bind
    (OmniSafe's cases 1 and 2), the stock step is not the problem's solution: it violates the
    linearised constraint or gives up reward (``tests/omnisafe_metacpo/algorithms/
    test_cpo_corrected.py`` shows it on the same instances). The recovery step (case 0) and the
    TRPO step (cases 3, 4) do not involve ``r``: there both classes take the same step.
    ``_step_direction`` also clamps onto an empty interval when ``r / c < 0``; it is not called
    here at all.

    **What changes.** Only the step direction: :func:`omnisafe_metacpo.cpo_step.cpo_step` with the
    Fisher metric. ``H`` is OmniSafe's own ``_fvp`` (KL Hessian-vector product plus ``cg_damping``
    times the identity), ``H^-1 g`` and ``H^-1 a`` are conjugate-gradient solves on it
    (:func:`~omnisafe_metacpo.cpo_step.cg_solve`, ``algo_cfgs.cg_iters`` iterations at most), and
    the dual is solved in closed form, case by case (tested against a conic solver).

    **What is kept, on purpose**, so that CPO and CPOCorrected differ in the dual solution only:

    * ``g``: gradient of OmniSafe's reward surrogate (minus ``_loss_pi``: mean of ratio * adv_r);
    * ``a``: gradient of OmniSafe's cost surrogate ``_loss_pi_cost``, the *mean* over steps of
      ratio * adv_c (cost advantages standardised by default), not scaled by the episode length;
    * ``b`` (OmniSafe's ``c``, ``ep_costs``): the logger's window mean of ``Metrics/EpCost`` (the
      last 50 episodes, the window OmniSafe's ``PolicyGradient`` registers the key with; across
      tasks on a task distribution; ``logger_cfgs.window_lens`` is not read for it) minus
      ``algo_cfgs.cost_limit``. ``b`` is in cost per episode while ``a'x`` is in the surrogate's
      units: the linearised constraint mixes units exactly as OmniSafe's CPO does. (MetaCPO instead
      scales its cost surrogate by the episode length and takes ``b`` from the task's own rollout;
      this class deliberately keeps the stock definitions.)
    * the case numbers of ``_determine_case`` (``r`` enters them only squared) that the line search
      ``_cpo_search_step`` uses for its acceptance rules, the line search itself, buffers, critics,
      configs (``configs/CPOCorrected.yaml`` is OmniSafe's ``CPO.yaml``) and every logged key
      (``Misc/r`` is still ``g'H^-1 a``; ``Misc/Lambda_star``, ``Misc/Nu_star`` are the corrected
      multipliers, same meaning: ``g = lambda H x + nu a``).

    **The scale of the constraint** (``algo_cfgs.cost_measure``, not in OmniSafe): ``omnisafe``
    (the default) keeps stock CPO's units as described above. ``episode`` scales the cost
    surrogate by the episode length T, so that a'x predicts the change of ``Metrics/EpCost``, the
    unit of b. ``discounted`` takes b from the window mean of ``Metrics/EpDiscCost`` (the paper's
    J_C, :mod:`omnisafe_metacpo.plugin.disc_cost_log`) and weights the surrogate's steps by
    gamma^(t - episode start), scaled to the weight of an episode
    (:mod:`omnisafe_metacpo.cost_measures`). The surrogate is the one the line search checks too.

    The stock ``CPO`` stays registered and unchanged: it is the algorithm as OmniSafe 0.5.0 ships
    it, defect included.
    """

    def _init_env(self) -> None:
        super()._init_env()
        measure = self._cfgs.algo_cfgs.get('cost_measure', 'omnisafe')
        if measure not in CPO_COST_MEASURES:
            raise ValueError(f'algo_cfgs.cost_measure = {measure!r}: allowed values are '
                             f'{", ".join(CPO_COST_MEASURES)}')
        if measure == 'discounted':
            if self._cfgs.train_cfgs.vector_env_nums != 1:
                raise ValueError(f'train_cfgs.vector_env_nums = '
                                 f'{self._cfgs.train_cfgs.vector_env_nums}: must be 1 with '
                                 f'algo_cfgs.cost_measure = discounted')
            if getattr(self._env, '_metacpo_gamma', None) is None:
                raise ValueError(f'algo_cfgs.cost_measure = discounted needs an env id with a '
                                 f'task distribution (the plug-in\'s envs), not {self._env_id!r}')
            disc_cost_log.record_steps(self._env)
        self._cost_measure = measure
        self._cost_weights: torch.Tensor | None = None
        env = unwrapped(self._env._env)  # pylint: disable=protected-access
        self._episode_length = int(env.max_episode_steps or 1000)
        self._episode_weight = cost_measures.episode_weight(
            float(self._cfgs.algo_cfgs.cost_gamma), self._episode_length)

    def _update(self) -> None:
        if self._cost_measure == 'discounted':
            # gamma^(t - episode start) of the epoch's steps, in the order the buffer returns them
            positions = disc_cost_log.take_steps(self._env).reshape(-1).to(torch.float64)
            self._cost_weights = (self._cfgs.algo_cfgs.cost_gamma ** positions).to(torch.float32)
        super()._update()

    def _loss_pi_cost(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        logp: torch.Tensor,
        adv_c: torch.Tensor,
    ) -> torch.Tensor:
        """The cost surrogate on the scale of ``algo_cfgs.cost_measure`` (stock CPO's for
        ``omnisafe``: the mean over steps of ratio * adv_c)."""
        if self._cost_measure == 'omnisafe':
            return super()._loss_pi_cost(obs, act, logp, adv_c)
        self._actor_critic.actor(obs)
        ratio = torch.exp(self._actor_critic.actor.log_prob(act) - logp)
        if self._cost_measure == 'episode':
            return self._episode_length * (ratio * adv_c).mean()
        weights = self._cost_weights
        return self._episode_weight * (weights * ratio * adv_c).sum() / weights.sum()

    def _cost_value(self) -> float:
        """J_C for b: the window mean of the measure's progress column."""
        key = disc_cost_log.KEY if self._cost_measure == 'discounted' else 'Metrics/EpCost'
        return self._logger.get_stats(key)[0]

    # pylint: disable-next=too-many-arguments,too-many-locals
    def _update_actor(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        logp: torch.Tensor,
        adv_r: torch.Tensor,
        adv_c: torch.Tensor,
    ) -> None:
        """Update the policy: ``CPO._update_actor`` with the corrected step direction.

        The same sequence as the stock method (gradients, case, line search, logging), with
        ``_step_direction`` replaced by :func:`~omnisafe_metacpo.cpo_step.cpo_step`; see the class
        docstring for what is kept and why.

        Args:
            obs: The observations sampled from the buffer.
            act: The actions.
            logp: The log-probabilities of the actions under the policy that collected them.
            adv_r: The reward advantages.
            adv_c: The cost advantages.
        """
        # g, a and b exactly as the stock CPO._update_actor computes them (that method cannot be
        # reused piecewise: it has no hook between its r and its _step_direction call).
        self._fvp_obs = obs[:: self._cfgs.algo_cfgs.fvp_sample_freq]
        theta_old = get_flat_params_from(self._actor_critic.actor)
        self._actor_critic.actor.zero_grad()
        loss_reward = self._loss_pi(obs, act, logp, adv_r)
        loss_reward_before = distributed.dist_avg(loss_reward)
        p_dist = self._actor_critic.actor(obs)
        loss_reward.backward()
        distributed.avg_grads(self._actor_critic.actor)
        grads = -get_flat_gradients_from(self._actor_critic.actor)  # g: ascent direction

        self._actor_critic.zero_grad()
        loss_cost = self._loss_pi_cost(obs, act, logp, adv_c)
        loss_cost_before = distributed.dist_avg(loss_cost)
        loss_cost.backward()
        distributed.avg_grads(self._actor_critic.actor)
        b_grads = get_flat_gradients_from(self._actor_critic.actor)  # a
        ep_costs = self._cost_value() - self._cfgs.algo_cfgs.cost_limit
        if not math.isfinite(ep_costs):
            # No episode has finished yet (OmniSafe's window of Metrics/EpCost is empty): the
            # constraint cannot be evaluated. Stock CPO would go on with c = NaN; here the policy
            # keeps its parameters this epoch, and the step's diagnostics are logged as NaN.
            self._logger.store({key: float('nan') for key in _STEP_KEYS})
            self._logger.store({'Misc/AcceptanceStep': 0})
            return

        target_kl = self._cfgs.algo_cfgs.target_kl
        cg_iters = self._cfgs.algo_cfgs.cg_iters
        # H^-1 g and H^-1 a, solved once and shared by the step and OmniSafe's diagnostics, so an
        # update costs as many Fisher-vector products as the stock one.
        x = cg_solve(self._fvp, grads, iters=cg_iters)
        p = cg_solve(self._fvp, b_grads, iters=cg_iters)
        xHx = x.dot(self._fvp(x))
        alpha = torch.sqrt(2 * target_kl / (xHx + 1e-8))
        q, r, s = xHx, grads.dot(p), b_grads.dot(p)
        optim_case, A, B = self._determine_case(
            b_grads=b_grads,
            ep_costs=ep_costs,
            q=q,
            r=r,
            s=s,
        )

        # The correction: the problem's solution instead of _step_direction(..., r=+g'H^-1 a).
        step = cpo_step(
            grads,
            b_grads,
            torch.as_tensor(ep_costs, dtype=grads.dtype),
            torch.tensor(target_kl, dtype=grads.dtype),
            metric='fisher',
            h_inv=(x, p),
        )
        step_direction, lambda_star, nu_star = step.x, step.lam, step.nu

        step_direction, accept_step = self._cpo_search_step(
            step_direction=step_direction,
            grads=grads,
            p_dist=p_dist,
            obs=obs,
            act=act,
            logp=logp,
            adv_r=adv_r,
            adv_c=adv_c,
            loss_reward_before=loss_reward_before,
            loss_cost_before=loss_cost_before,
            total_steps=20,
            violation_c=ep_costs,
            optim_case=optim_case,
        )

        theta_new = theta_old + step_direction
        set_param_values_to_model(self._actor_critic.actor, theta_new)

        with torch.no_grad():
            loss_reward = self._loss_pi(obs, act, logp, adv_r)
            loss_cost = self._loss_pi_cost(obs, act, logp, adv_c)
            loss = loss_reward + loss_cost

        self._logger.store(
            {
                'Loss/Loss_pi': loss.item(),
                'Misc/AcceptanceStep': accept_step,
                'Misc/Alpha': alpha.item(),
                'Misc/FinalStepNorm': step_direction.norm().mean().item(),
                'Misc/xHx': xHx.mean().item(),
                'Misc/H_inv_g': x.norm().item(),
                'Misc/gradient_norm': torch.norm(grads).mean().item(),
                'Misc/cost_gradient_norm': torch.norm(b_grads).mean().item(),
                'Misc/Lambda_star': lambda_star.item(),
                'Misc/Nu_star': nu_star.item(),
                'Misc/OptimCase': int(optim_case),
                'Misc/A': A.item(),
                'Misc/B': B.item(),
                'Misc/q': q.item(),
                'Misc/r': r.item(),
                'Misc/s': s.item(),
            },
        )
