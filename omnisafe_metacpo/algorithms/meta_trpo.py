"""Meta-TRPO: the unconstrained meta-learning baseline of Meta-CPO (Cho & Sun, AAAI 2024)."""

from __future__ import annotations

from omnisafe.algorithms import registry

from omnisafe_metacpo.algorithms.meta_cpo import MetaCPO


@registry.register
class MetaTRPO(MetaCPO):
    """Meta-TRPO: MetaCPO's bi-level machinery with TRPO steps and no cost constraint.

    References:
        - Title: Constrained Meta-Reinforcement Learning for Adaptable Safety Guarantee with
          Differentiable Convex Programming (baseline "Meta-TRPO", Section 5)
        - Authors: Minjae Cho, Chuangchuang Sun.
        - URL: `Meta-CPO <https://arxiv.org/abs/2312.10230>`_

    Inner and meta steps maximise the reward surrogate in the trust region only (a = 0 in eq. 9 and
    12: x = sqrt(2 delta / g'H^-1 g) H^-1 g), and the line searches ignore cost. Costs are still
    measured and logged, so both algorithms are compared on the same terms.
    """

    constrained: bool = False
