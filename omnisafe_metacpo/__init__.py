"""Meta-CPO for OmniSafe (Cho & Sun, "Constrained Meta-Reinforcement Learning for Adaptable Safety
Guarantee with Differentiable Convex Programming", AAAI 2024).

The plug-in registers itself when ``omnisafe`` is first imported (the start-up hook of
``omnisafe_metacpo.pth``, see ``_omnisafe_metacpo_hook``): ``omnisafe train --algo MetaCPO ...``,
``omnisafe.Agent('MetaCPO', ...)`` and ``omnisafe benchmark`` need no import of this package.
Importing it imports OmniSafe first, so that its modules are always imported after OmniSafe is
complete (OmniSafe's import registers the plug-in, which imports these modules). In an
interpreter started without site (``python -S``), ``import _omnisafe_metacpo_hook`` first.
"""

from __future__ import annotations

import omnisafe  # noqa: F401  (first: see the module docstring)

__version__ = '0.1.0'


def check_installed() -> None:
    """Fail loudly unless the start-up hook is active and the plug-in is registered."""
    import sys

    from omnisafe.algorithms import ALGORITHMS
    from omnisafe.envs.core import support_envs

    if '_omnisafe_metacpo_hook' not in sys.modules:
        raise RuntimeError('omnisafe_metacpo.pth was not executed: is the package installed?')
    missing = [name for name in ('MetaCPO', 'MetaTRPO') if name not in ALGORITHMS['all']]
    missing += [env for env in ('MetaPointCircle-v0',) if env not in support_envs()]
    if missing:
        raise RuntimeError(f'plug-in not registered with OmniSafe: missing {missing}')
