"""MetaCPOPaper: Meta-CPO with the exact settings of the paper (a named preset of MetaCPO)."""

from __future__ import annotations

from omnisafe.algorithms import registry

from omnisafe_metacpo.algorithms.meta_cpo import MetaCPO


@registry.register
class MetaCPOPaper(MetaCPO):
    """Meta-CPO with the settings of Cho & Sun (AAAI 2024): MetaCPO with ``MetaCPOPaper.yaml``.

    References:
        - Title: Constrained Meta-Reinforcement Learning for Adaptable Safety Guarantee with
          Differentiable Convex Programming
        - Authors: Minjae Cho, Chuangchuang Sun.
        - URL: `Meta-CPO <https://arxiv.org/abs/2312.10230>`_

    The algorithm is MetaCPO's, unchanged; only defaults differ. ``MetaCPOPaper.yaml`` builds on
    ``MetaCPO.yaml`` (``base: MetaCPO``) and sets back what MetaCPO's defaults change against the
    paper (see that file), so ``omnisafe train --algo MetaCPOPaper`` reproduces the paper's
    settings wherever MetaCPO's defaults go, and every OmniSafe tool (CLI, ``omnisafe.Agent``,
    experiment grids) takes the preset by name.
    """
