"""Options of the inner and meta steps that are not in the paper: :class:`StepVariants`.

``StepVariants()`` is Algorithm 1 of the paper; each field turns one experiment on. It is the one
reader of the four ``algo_cfgs`` keys below (:meth:`StepVariants.from_cfgs`: defaults, validation,
and the values runs saved before a key existed are resumed at, :meth:`StepVariants.neutral_keys`).
The inner learner and the meta step call its methods where an experiment changes the step, and
each method leaves the step as it is when its option is off.

* ``inner_holdout_block`` (:meth:`~StepVariants.split`): each inner rollout D_k is split into
  alternating blocks of that many steps; g_k and a_k come from one half, and the inner line search
  judges the step on the other (held out), so a step fitted to one rollout's noise is shrunk or
  rejected instead of being promised a cost drop that the next rollout does not show.
* ``inner_params: head`` (:meth:`~StepVariants.head_mask`): the inner steps move only the
  policy's head (``log_std`` and the last layer of the mean network; ANIL, Raghu et al., ICLR
  2020): g_k and a_k are projected on those coordinates (and the Fisher metric restricted to
  them), while the meta step still moves all of theta. It tests whether the noise of the inner
  steps' gradients comes from the number of coordinates they estimate.
* ``kl_bound`` (:meth:`~StepVariants.trust_region`): with the Euclidean metric, inner and meta
  steps are also shrunk until the mean KL between the old and the new policy is at most this
  (what OmniSafe's CPO checks with its ``target_kl``).
* ``meta_over_limit: recover`` (:meth:`~StepVariants.meta_direction`): while the training tasks'
  adapted cost is above h, the meta step is the recovery step of eq. (4), the cost gradient alone,
  even where the linearised problem is feasible (where CPO would also climb the return on the
  promise of a cost drop that the noisy, optimistic dG/dtheta makes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from omnisafe_metacpo.config import is_int, is_number, require
from omnisafe_metacpo.cpo_step import CPOCase
from omnisafe_metacpo.cpo_step.fisher import cg_solve
from omnisafe_metacpo.policy import FunctionalPolicy
from omnisafe_metacpo.sampling.batch import Batch

FVP = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class StepVariants:
    """The experiments of a run (``StepVariants()``: none, the paper's steps).

    Args:
        holdout_block: ``algo_cfgs.inner_holdout_block`` (None: gradients and line search on the
            whole rollout).
        inner_params: ``algo_cfgs.inner_params``: ``all`` or ``head``.
        kl_bound: ``algo_cfgs.kl_bound`` (None: no KL check with the Euclidean metric).
        meta_over_limit: ``algo_cfgs.meta_over_limit``: ``cpo`` or ``recover``.
    """

    holdout_block: int | None = None
    inner_params: str = 'all'
    kl_bound: float | None = None
    meta_over_limit: str = 'cpo'

    #: The ``algo_cfgs`` key of each field.
    KEYS: ClassVar[dict[str, str]] = {'holdout_block': 'inner_holdout_block',
                                      'inner_params': 'inner_params', 'kl_bound': 'kl_bound',
                                      'meta_over_limit': 'meta_over_limit'}
    INNER_PARAMS: ClassVar[tuple[str, ...]] = ('all', 'head')
    META_OVER_LIMIT: ClassVar[tuple[str, ...]] = ('cpo', 'recover')

    @classmethod
    def from_cfgs(cls, algo_cfgs: Any, rollout_steps: int | None = None) -> StepVariants:
        """The variants ``algo_cfgs`` sets, validated; a key it lacks is off.

        Configs without these keys: MetaTRPO has no ``meta_over_limit``, and runs saved before a
        key existed lack it.

        Args:
            algo_cfgs: ``algo_cfgs`` of a MetaCPO-like config.
            rollout_steps: The fewest steps of a rollout the inner steps will see (training or
                meta-test): ``inner_holdout_block`` must leave held-out steps in it.

        Raises:
            MetaConfigError: For a value outside its allowed range (naming the key).
        """
        defaults = cls()
        values = {name: algo_cfgs.get(key, getattr(defaults, name))
                  for name, key in cls.KEYS.items()}
        variants = cls(**values)
        variants._validate(rollout_steps)
        return variants

    @classmethod
    def neutral_keys(cls) -> dict[tuple[str, str], Any]:
        """``(section, key) -> value`` that does what the code did before each key existed."""
        defaults = cls()
        return {('algo_cfgs', key): getattr(defaults, name) for name, key in cls.KEYS.items()}

    def _validate(self, rollout_steps: int | None) -> None:
        keys = self.KEYS
        require(self.inner_params in self.INNER_PARAMS, f'algo_cfgs.{keys["inner_params"]}',
                self.inner_params, ' or '.join(self.INNER_PARAMS))
        require(self.meta_over_limit in self.META_OVER_LIMIT,
                f'algo_cfgs.{keys["meta_over_limit"]}', self.meta_over_limit,
                ' or '.join(self.META_OVER_LIMIT))
        require(self.kl_bound is None or (is_number(self.kl_bound) and self.kl_bound > 0),
                f'algo_cfgs.{keys["kl_bound"]}', self.kl_bound, 'null or a finite number > 0')
        block = self.holdout_block
        if rollout_steps is None:
            require(block is None or (is_int(block) and block >= 1),
                    f'algo_cfgs.{keys["holdout_block"]}', block, 'null or an integer >= 1')
        else:  # both halves of every rollout non-empty
            require(block is None or (is_int(block) and 1 <= block < rollout_steps),
                    f'algo_cfgs.{keys["holdout_block"]}', block,
                    f'null or an integer from 1 to {rollout_steps - 1} (fewer than the steps of a '
                    'training or meta-test rollout)')

    # -- inner steps ------------------------------------------------------------------------------
    def split(self, batch: Batch) -> tuple[Batch, Batch]:
        """(fit, held-out) halves of an inner rollout (:func:`split_rollout`)."""
        return split_rollout(batch, self.holdout_block)

    def head_mask(self, policy: FunctionalPolicy) -> torch.Tensor | None:
        """1 on the coordinates the inner steps move, 0 elsewhere; ``None``: all of them."""
        return policy.head_mask() if self.inner_params == 'head' else None

    @staticmethod
    def restrict(vector: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``vector`` projected on the coordinates of ``mask`` (``head_mask``)."""
        return vector if mask is None else vector * mask.to(vector)

    @staticmethod
    def restrict_metric(fvp: FVP, mask: torch.Tensor | None, like: torch.Tensor) -> FVP:
        """v -> M H M v + (I - M) v: the metric on the coordinates of ``mask``, identity elsewhere
        (block diagonal, so H^-1 of a vector that is 0 off the mask is 0 there too); ``mask``
        takes the dtype and device of ``like``."""
        if mask is None:
            return fvp
        mask = mask.to(like)
        return lambda vector: mask * fvp(mask * vector) + (1 - mask) * vector

    # -- inner and meta steps ---------------------------------------------------------------------
    def trust_region(self, measure: torch.Tensor,
                     kl: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The Euclidean trust-region ``measure`` (in units of its bound), or with ``kl_bound``
        the larger of it and KL / kl_bound (``kl`` computes the mean KL)."""
        if self.kl_bound is None:
            return measure
        return torch.maximum(measure, kl() / self.kl_bound)

    # -- meta step --------------------------------------------------------------------------------
    def meta_direction(self, x: torch.Tensor, case: int, b: float, grad_g: torch.Tensor,
                       fvp: FVP | None, delta: float) -> tuple[torch.Tensor, int]:
        """The constrained meta step's (x, case): CPO's, or with ``meta_over_limit: recover``
        and b > 0 the recovery step of eq. (4) (``fvp``: the metric, ``None``: Euclidean)."""
        if self.meta_over_limit != 'recover' or b <= 0:
            return x, case
        direction = grad_g.detach() if fvp is None else cg_solve(fvp, grad_g.detach())
        x = -torch.sqrt(2 * delta / (grad_g.detach() @ direction)) * direction
        return x, int(CPOCase.INFEASIBLE_RECOVERY)


def split_rollout(batch: Batch, block: int | None) -> tuple[Batch, Batch]:
    """(fit, held-out) halves of a rollout: alternating blocks of ``block`` steps;
    ``(batch, batch)`` when ``block`` is None.

    Blocks rather than alternate steps because neighbouring steps share their advantages (GAE
    spans ~1 / (1 - gamma lambda) ~ 17 steps): held-out steps next to fitted ones would not be
    held out. The rollout's cost rate (hence b) stays that of the whole rollout: it is measured,
    not fitted.
    """
    if block is None:
        return batch, batch
    if batch.num_steps <= block:
        raise ValueError(f'algo_cfgs.inner_holdout_block = {block} leaves no held-out steps in a '
                         f'rollout of {batch.num_steps}: use fewer than the rollout\'s steps')
    held = (torch.arange(batch.num_steps, device=batch.obs.device) // block) % 2 == 1
    fields = ['obs', 'act', 'logp', 'adv_r', 'adv_c', 'target_value_r', 'target_value_c']
    if batch.disc_weights is not None:
        fields.append('disc_weights')
    fit, out = (dataclasses.replace(batch, **{name: getattr(batch, name)[mask] for name in fields})
                for mask in (~held, held))
    return fit, out
